"""Numba kernels of lightning-align.

Pure functions of numpy arrays. Nothing is compiled at import: each kernel is compiled on its
first call (and cached on disk by numba), so importing this package stays cheap. Every kernel
releases the GIL (`nogil=True`): words are aligned in a thread beside the decoding loop, and
neither should wait for the other's compiled code.
"""

from .dtw import dtw, dtw_batch
from .matrix import alignment_matrix
from .median import median_filter

__all__ = ["alignment_matrix", "dtw", "dtw_batch", "median_filter"]
