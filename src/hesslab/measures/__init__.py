"""Derived quantities of spectra and eigenvectors."""

from hesslab.measures.distances import as_measure, sankar_density_distance, spectrum_w1
from hesslab.measures.eigvec import (
    displacement,
    gradient_alignment,
    ipr,
    ipr_null,
    layer_ipr,
    subspace_displacement,
    subspace_overlap,
)
from hesslab.measures.spectrum import OutlierCount, count_outliers, effective_rank

__all__ = [
    "OutlierCount",
    "as_measure",
    "count_outliers",
    "displacement",
    "effective_rank",
    "gradient_alignment",
    "ipr",
    "ipr_null",
    "layer_ipr",
    "sankar_density_distance",
    "spectrum_w1",
    "subspace_displacement",
    "subspace_overlap",
]
