"""Derived quantities of spectra and eigenvectors."""

from hesslab.measures.spectrum import OutlierCount, count_outliers, effective_rank

__all__ = ["OutlierCount", "count_outliers", "effective_rank"]
