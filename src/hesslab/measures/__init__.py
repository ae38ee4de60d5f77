"""Derived quantities of spectra and eigenvectors."""

from hesslab.measures.distances import (
    as_measure,
    sankar_density_distance,
    spectrum_js,
    spectrum_w1,
)
from hesslab.measures.eigvec import (
    displacement,
    gradient_alignment,
    ipr,
    ipr_null,
    layer_ipr,
    subspace_displacement,
    subspace_overlap,
)
from hesslab.measures.sharpness import (
    InvariantEstimate,
    LayerSharpness,
    SharpnessResult,
    epsilon_sharpness,
    layer_normalized_sharpness,
    scale_invariant_operator,
    scale_invariant_trace,
)
from hesslab.measures.spectrum import OutlierCount, count_outliers, effective_rank

__all__ = [
    "InvariantEstimate",
    "LayerSharpness",
    "OutlierCount",
    "SharpnessResult",
    "as_measure",
    "count_outliers",
    "displacement",
    "effective_rank",
    "epsilon_sharpness",
    "gradient_alignment",
    "ipr",
    "ipr_null",
    "layer_ipr",
    "layer_normalized_sharpness",
    "sankar_density_distance",
    "scale_invariant_operator",
    "scale_invariant_trace",
    "spectrum_js",
    "spectrum_w1",
    "subspace_displacement",
    "subspace_overlap",
]
