"""Dynamic time warping of tokens against frames, bit-compatible with openai-whisper's CPU path.

openai-whisper (`timing.dtw_cpu` + `backtrace`) accumulates costs in a float32 table, prefers
diagonal (0) over up (1) over left (2) with strict comparisons, and falls back to "left" on any
tie. Reproducing its path exactly means keeping those rounding points and that tie rule; the
kernel below evaluates the same recurrence row by row (cache-friendly) with a branch-free step,
so the only serial dependency per cell is one min and one add.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, parallel_chunksize, prange

from .median import _hi, _lo  # branch-free min/max: compile to minss/maxss

__all__ = ["dtw", "dtw_batch"]


@njit(cache=True, nogil=True)
def _fill(x, n, m, trace, enter, enter_cost):
    """Fill trace[1:n+1, 1:m+1] for cost x[:n, :m]; returns False if x[:n, :m] is not finite.
    Entering row i (from row i - 1) at frame j also costs `enter_cost[j]` where `enter[i]` is
    1; with `enter` all 0 every sum is the plain one, bit for bit (x + 0.0 == x)."""
    inf = np.float32(np.inf)
    ninf = np.float32(-np.inf)
    prev = np.empty(m + 1, np.float32)
    cur = np.empty(m + 1, np.float32)
    prev[:] = inf
    prev[0] = 0
    finite = True
    for i in range(1, n + 1):
        xi = x[i - 1]
        tr = trace[i]
        gate = np.float32(enter[i - 1])
        cur[0] = inf
        left = inf
        for j in range(1, m + 1):
            pay = gate * enter_cost[j - 1]
            diag = prev[j - 1] + pay
            up = prev[j] + pay
            best = _lo(diag, up)
            diag_wins = best != up
            # openai picks "left" when diag == up even if left is larger: make that pair lose
            # every comparison by lifting it to +inf (max with -inf leaves other values as is).
            best = _hi(best, inf if diag == up else ninf)
            c = _lo(best, left)
            # c == left exactly when left won or tied; openai sends both cases to "left".
            took = c != left
            tr[j] = np.int8(2) - np.int8(took) * (np.int8(1) + np.int8(diag_wins))
            v = xi[j - 1]
            finite &= (v - v) == 0
            # float32 inputs add in float32, float64 ones in float64 then round to the float32
            # table, as openai does; for float32 inputs both give the same bits (double
            # rounding is innocuous for + when 53 >= 2 * 24 + 2).
            left = np.float32(v + c)
            cur[j] = left
        prev, cur = cur, prev
    return finite


@njit(cache=True, nogil=True)
def _backtrace(trace, n, m, ti, tj):
    """Walk from (n, m) to (0, 0); writes the path into ti/tj[start : n + m], returns start."""
    i = n
    j = m
    k = n + m
    while i > 0 or j > 0:
        k -= 1
        ti[k] = i - 1
        tj[k] = j - 1
        # openai overwrites trace row 0 with "left" and column 0 with "up" before walking.
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            t = trace[i, j]
            if t == 0:
                i -= 1
                j -= 1
            elif t == 1:
                i -= 1
            else:
                j -= 1
    return k


@njit(cache=True, nogil=True)
def _dtw_one(x, enter, enter_cost):
    n, m = x.shape
    trace = np.empty((n + 1, m + 1), np.int8)
    finite = _fill(x, n, m, trace, enter, enter_cost)
    ti = np.empty(n + m, np.int64)
    tj = np.empty(n + m, np.int64)
    start = _backtrace(trace, n, m, ti, tj)
    return ti[start:], tj[start:], finite


@njit(cache=True, nogil=True, parallel=True)
def _dtw_many(flat, shapes, cost_start, path_start, ti, tj, starts, finite, enter, enter_cost,
              row_start, frame_start):
    for b in prange(shapes.shape[0]):
        n = shapes[b, 0]
        m = shapes[b, 1]
        x = flat[cost_start[b] : cost_start[b] + n * m].reshape((n, m))
        trace = np.empty((n + 1, m + 1), np.int8)
        finite[b] = _fill(x, n, m, trace, enter[row_start[b] : row_start[b] + n],
                          enter_cost[frame_start[b] : frame_start[b] + m])
        p0 = path_start[b]
        starts[b] = _backtrace(trace, n, m, ti[p0 : p0 + n + m], tj[p0 : p0 + n + m])


def _as_cost(cost: np.ndarray, what: str) -> np.ndarray:
    cost = np.asarray(cost)
    if cost.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (tokens x frames) matrix, got shape {cost.shape}")
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {cost.shape}); DTW needs >= 1 token and frame")
    if not (np.issubdtype(cost.dtype, np.floating) or np.issubdtype(cost.dtype, np.integer)):
        raise ValueError(f"{what} must be a real-valued array, got dtype {cost.dtype}")
    # float32 stays float32 (same bits as openai's float64 path, see _fill); anything else is
    # widened to float64 exactly as openai's `x.double()`.
    dtype = np.float32 if cost.dtype == np.float32 else np.float64
    return np.ascontiguousarray(cost, dtype=dtype)


def _as_entry(entry, x: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(enter (N,) uint8, enter_cost (M,) in x's dtype) from an optional (rows, frame costs)."""
    n, m = x.shape
    if entry is None:
        return np.zeros(n, np.uint8), np.zeros(m, x.dtype)
    rows, frame_cost = np.asarray(entry[0], bool), np.asarray(entry[1], x.dtype)
    if rows.shape != (n,) or frame_cost.shape != (m,):
        raise ValueError(f"{what}: entry rows must have shape ({n},) and frame costs ({m},), got "
                         f"{rows.shape} and {frame_cost.shape}")
    if not np.isfinite(frame_cost).all():
        raise ValueError(f"{what}: entry frame costs contain NaN or inf")
    return rows.astype(np.uint8), np.ascontiguousarray(frame_cost)


def dtw(cost: np.ndarray, entry: tuple[np.ndarray, np.ndarray] | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through a (tokens x frames) cost matrix, as openai-whisper.

    cost: (N tokens, M frames) real array; openai-whisper passes the negated alignment matrix.
    entry: optional (rows (N,) bool, frame_costs (M,)): the path pays frame_costs[j] when it
    enters a marked row at frame j (e.g. where a word may start); without it, or with zero
    costs, the result is openai's.
    Returns (text_indices, time_indices): int64 arrays of equal length L, with
    max(N, M) <= L <= N + M - 1, giving the path's token index (0..N-1) and frame index
    (0..M-1) at every step from (0, 0) to (N-1, M-1); each step advances the token, the frame,
    or both by one. Identical output to openai-whisper's `dtw_cpu` (tie-breaking included).
    Raises ValueError for a non-2-D or empty matrix, or NaN/inf entries.
    """
    x = _as_cost(cost, "dtw cost")
    ti, tj, finite = _dtw_one(x, *_as_entry(entry, x, "dtw"))
    if not finite:
        raise ValueError("dtw cost contains NaN or inf")
    return ti, tj


def dtw_batch(costs: list[np.ndarray], entries: list | None = None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """`dtw` on many (tokens x frames) cost matrices of different shapes, in parallel threads.

    The matrices are packed end to end into one flat array (no padding) and processed with
    numba's prange, one matrix per task; numba's thread count (NUMBA_NUM_THREADS,
    numba.set_num_threads) bounds the threads, and with one thread they simply run in turn.
    Each result equals `dtw(costs[k], entries[k])` (`entries`: None, or one entry or None per
    matrix). Returns a list of (text_indices, time_indices) int64 pairs, one per matrix, in
    order.
    Raises ValueError (naming the matrix's index) under the same conditions as `dtw`.
    """
    mats = [_as_cost(c, f"dtw_batch costs[{k}]") for k, c in enumerate(costs)]
    if not mats:
        return []
    if entries is not None and len(entries) != len(mats):
        raise ValueError(f"dtw_batch: {len(entries)} entries for {len(mats)} cost matrices")
    ent = [_as_entry(None if entries is None else entries[k], x, f"dtw_batch entries[{k}]")
           for k, x in enumerate(mats)]
    if len(mats) == 1 or numba.get_num_threads() == 1:
        # Nothing to run in parallel: skip packing (a copy of every matrix).
        out = []
        for k, x in enumerate(mats):
            ti, tj, finite = _dtw_one(x, *ent[k])
            if not finite:
                raise ValueError(f"dtw_batch costs[{k}] contains NaN or inf")
            out.append((ti, tj))
        return out
    dtype = np.float32 if all(a.dtype == np.float32 for a in mats) else np.float64
    shapes = np.array([a.shape for a in mats], dtype=np.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    cost_start = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    path_len = shapes[:, 0] + shapes[:, 1]
    path_start = np.concatenate(([0], np.cumsum(path_len)[:-1]))
    # A typed List would avoid this copy but costs ~0.8 s of compilation per process.
    flat = np.concatenate([a.ravel() for a in mats]).astype(dtype, copy=False)
    ti = np.empty(int(path_len.sum()), np.int64)
    tj = np.empty_like(ti)
    starts = np.empty(len(mats), np.int64)
    finite = np.empty(len(mats), np.bool_)
    # Chunk size 1: matrices differ in size, so a free thread takes the next one instead of
    # the index range being split evenly up front.
    row_start = np.concatenate(([0], np.cumsum(shapes[:, 0])[:-1]))
    frame_start = np.concatenate(([0], np.cumsum(shapes[:, 1])[:-1]))
    enter = np.concatenate([e for e, _ in ent])
    enter_cost = np.concatenate([c for _, c in ent]).astype(dtype, copy=False)
    with parallel_chunksize(1):
        _dtw_many(flat, shapes, cost_start, path_start, ti, tj, starts, finite, enter, enter_cost,
                  row_start, frame_start)
    if not finite.all():
        raise ValueError(f"dtw_batch costs[{int(np.argmin(finite))}] contains NaN or inf")
    out = []
    for k in range(len(mats)):
        a, b = path_start[k] + starts[k], path_start[k] + path_len[k]
        out.append((ti[a:b].copy(), tj[a:b].copy()))
    return out
