"""Numba kernels of lightning-align.

Pure functions of numpy arrays. Nothing is compiled at import: each kernel is compiled on its
first call (and cached on disk by numba), so importing this package stays cheap.
"""

from .dtw import dtw, dtw_batch
from .matrix import alignment_matrix
from .median import median_filter

__all__ = ["alignment_matrix", "dtw", "dtw_batch", "median_filter"]
