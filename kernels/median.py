"""Median filter along the last axis, with openai-whisper's reflect padding.

openai-whisper smooths the (heads x tokens x frames) alignment weights with a width-7 median
over frames before DTW. Sorting every window (what torch's `unfold().sort()` does) costs far more
than the DTW itself on a CPU, so this computes the median with branch-free selection networks:
each compare-exchange is a `min` and a `max`, which LLVM turns into packed SIMD instructions
when the loop runs over frames. Widths 3, 5 and 7 have hand-written networks kept in registers;
other odd widths apply a generated network to whole rows of shifted copies.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

__all__ = ["median_filter"]


@njit(cache=True, nogil=True)
def _lo(a, b):
    # `a if a < b else b` is the exact pattern LLVM maps to minss/minps (no NaN fix-up code).
    # A NaN input makes the public function raise, so what this does with NaN never matters.
    return a if a < b else b


@njit(cache=True, nogil=True)
def _hi(a, b):
    return b if a < b else a


@njit(cache=True, nogil=True)
def _med3_row(buf, out, n):
    for j in range(n):
        a = buf[j]
        b = buf[j + 1]
        c = buf[j + 2]
        out[j] = _hi(_lo(a, b), _lo(_hi(a, b), c))


@njit(cache=True, nogil=True)
def _med5_row(buf, out, n):
    # Devillard's 7-exchange median-of-5 network; unused halves are removed by LLVM.
    for j in range(n):
        p0 = buf[j]
        p1 = buf[j + 1]
        p2 = buf[j + 2]
        p3 = buf[j + 3]
        p4 = buf[j + 4]
        p0, p1 = _lo(p0, p1), _hi(p0, p1)
        p3, p4 = _lo(p3, p4), _hi(p3, p4)
        p0, p3 = _lo(p0, p3), _hi(p0, p3)
        p1, p4 = _lo(p1, p4), _hi(p1, p4)
        p1, p2 = _lo(p1, p2), _hi(p1, p2)
        p2, p3 = _lo(p2, p3), _hi(p2, p3)
        p1, p2 = _lo(p1, p2), _hi(p1, p2)
        out[j] = p2


@njit(cache=True, nogil=True)
def _med7_row(buf, out, n):
    # Devillard's 13-exchange median-of-7 network (20 min/max after dead-code removal). Cheaper
    # schemes that share work between neighbouring windows need stride-2 access, whose
    # (de)interleaving cost more than they saved when measured.
    for j in range(n):
        p0 = buf[j]
        p1 = buf[j + 1]
        p2 = buf[j + 2]
        p3 = buf[j + 3]
        p4 = buf[j + 4]
        p5 = buf[j + 5]
        p6 = buf[j + 6]
        p0, p5 = _lo(p0, p5), _hi(p0, p5)
        p0, p3 = _lo(p0, p3), _hi(p0, p3)
        p1, p6 = _lo(p1, p6), _hi(p1, p6)
        p2, p4 = _lo(p2, p4), _hi(p2, p4)
        p0, p1 = _lo(p0, p1), _hi(p0, p1)
        p3, p5 = _lo(p3, p5), _hi(p3, p5)
        p2, p6 = _lo(p2, p6), _hi(p2, p6)
        p2, p3 = _lo(p2, p3), _hi(p2, p3)
        p3, p6 = _lo(p3, p6), _hi(p3, p6)
        p4, p5 = _lo(p4, p5), _hi(p4, p5)
        p1, p4 = _lo(p1, p4), _hi(p1, p4)
        p1, p3 = _lo(p1, p3), _hi(p1, p3)
        p3, p4 = _lo(p3, p4), _hi(p3, p4)
        out[j] = p3


@njit(cache=True, nogil=True)
def _medgen_row(buf, out, n, width, net_lo, net_hi, net_mode, lanes):
    # lanes[k, j] = buf[j + k]: window element k of output j, so every compare-exchange of the
    # network is one vectorizable pass over frames.
    for k in range(width):
        lane = lanes[k]
        for j in range(n):
            lane[j] = buf[j + k]
    for c in range(net_mode.shape[0]):
        a = lanes[net_lo[c]]
        b = lanes[net_hi[c]]
        mode = net_mode[c]
        if mode == 0:
            for j in range(n):
                u = a[j]
                v = b[j]
                a[j] = _lo(u, v)
                b[j] = _hi(u, v)
        elif mode == 1:
            for j in range(n):
                a[j] = _lo(a[j], b[j])
        else:
            for j in range(n):
                b[j] = _hi(a[j], b[j])
    mid = lanes[width // 2]
    for j in range(n):
        out[j] = mid[j]


@njit(cache=True, nogil=True)
def _median_row(buf, out, n, width, net_lo, net_hi, net_mode, lanes):
    """out[j] = median(buf[j : j + width]) for j < n (frames); buf holds n + width - 1 values."""
    if width == 7:
        _med7_row(buf, out, n)
    elif width == 5:
        _med5_row(buf, out, n)
    elif width == 3:
        _med3_row(buf, out, n)
    else:
        _medgen_row(buf, out, n, width, net_lo, net_hi, net_mode, lanes)


@njit(cache=True, nogil=True)
def _reflect_edges(buf, n, pad):
    # np.pad(mode="reflect") / torch F.pad(mode="reflect"): mirror without repeating the edge.
    # One reflection suffices because callers guarantee n > pad.
    for k in range(1, pad + 1):
        buf[pad - k] = buf[pad + k]
        buf[pad + n - 1 + k] = buf[pad + n - 1 - k]


@njit(cache=True, nogil=True)
def _median_rows(x, out, width, net_lo, net_hi, net_mode):
    """Median-filter every row of the 2-D array x into out; returns True if x holds a NaN."""
    rows, n = x.shape
    pad = width // 2
    buf = np.empty(n + 2 * pad, x.dtype)
    # Index through a view: `buf[pad + j]` with a runtime pad makes numba emit a negative-index
    # wraparound check per element, which blocks vectorization (measured 7x slower copy).
    core = buf[pad : pad + n]
    lanes = np.empty((width, n), x.dtype)
    has_nan = False
    for r in range(rows):
        src = x[r]
        for j in range(n):
            v = src[j]
            core[j] = v
            has_nan |= v != v
        _reflect_edges(buf, n, pad)
        _median_row(buf, out[r], n, width, net_lo, net_hi, net_mode, lanes)
    return has_nan


@lru_cache(maxsize=None)
def _median_network(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A comparator network that leaves the median of `width` values at position width // 2.

    Batcher's odd-even merge sort for the next power of two, with comparators that touch the
    (virtual, +inf) padding positions dropped, then pruned backwards to the exchanges the middle
    position depends on. Returns (lo, hi, mode) int64 arrays: exchange c puts min into lo[c] and
    max into hi[c]; mode 0 computes both, 1 only the min, 2 only the max.
    """
    size = 1
    while size < width:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    pairs = [(a, b) for a, b in pairs if b < width]
    needed = {width // 2}
    kept: list[tuple[int, int, int]] = []
    for a, b in reversed(pairs):
        need_lo, need_hi = a in needed, b in needed
        if not (need_lo or need_hi):
            continue
        kept.append((a, b, 0 if need_lo and need_hi else (1 if need_lo else 2)))
        needed.update((a, b))
    kept.reverse()
    arr = np.array(kept, dtype=np.int64).reshape(-1, 3)
    return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()


def _check_width(width: int) -> int:
    if isinstance(width, (bool, np.bool_)) or not isinstance(width, (int, np.integer)):
        raise ValueError(f"median filter width must be an int, got {type(width).__name__}")
    width = int(width)
    if width < 1 or width % 2 == 0:
        raise ValueError(
            f"median filter width must be a positive odd number of frames, got {width}"
        )
    return width


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median of each length-`width` window along the last axis (frames), like openai-whisper.

    Edges use reflect padding (np.pad mode="reflect", torch F.pad mode="reflect"), so the result
    equals `scipy.ndimage.median_filter(np.pad(x, pad, "reflect"), size=(1, ..., 1, width))`
    with the padding cut off again. As in openai-whisper, `x` comes back unchanged (as a copy)
    when width is 1 or the last axis is not longer than width // 2 frames.

    x: float32 or float64 array of any shape with ndim >= 1 (float16 is accepted and computed in
    float32; the median is exact either way). width: odd window length in frames.
    Returns a new array of x's shape and dtype.
    Raises ValueError for an even or non-positive width, an empty or 0-d array, a non-float
    dtype, or NaN anywhere in x (+-inf is fine).
    """
    x = np.asarray(x)
    width = _check_width(width)
    if x.ndim == 0:
        raise ValueError("median_filter needs an array with at least one axis (frames)")
    if x.size == 0:
        raise ValueError(f"median_filter got an empty array of shape {x.shape}")
    if x.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"median_filter needs a float16/32/64 array, got dtype {x.dtype}")
    n = x.shape[-1]
    if width == 1 or n <= width // 2:
        if np.isnan(x).any():
            raise ValueError("median_filter input contains NaN")
        return x.copy()
    work = np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float16 else x.dtype)
    rows = work.reshape(-1, n)
    out = np.empty_like(rows)
    lo, hi, mode = _median_network(width)
    if _median_rows(rows, out, width, lo, hi, mode):
        raise ValueError("median_filter input contains NaN")
    return out.reshape(x.shape).astype(x.dtype, copy=False)
