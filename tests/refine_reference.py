"""The numpy formulation of the signal refinement that `kernels.boundaries` compiles: the
oracle its tests compare against (this is the code that shipped, and was measured in
docs/accuracy.md, before the kernels)."""

from __future__ import annotations

import numpy as np

from lightning_align.kernels.boundaries import LONG_PAUSE_S
from lightning_align.refine import HOP_S, RefineOptions, dip_levels, frame_levels


def speech_spans(samples: np.ndarray, t0_s: float, t1_s: float,
                 options: RefineOptions = RefineOptions()) -> np.ndarray:
    """`lightning_align.refine.speech_spans` as numpy code."""
    origin, db = frame_levels(samples, t0_s, t1_s)
    if len(db) < 2:
        return np.zeros((0, 2))
    floor = float(np.percentile(db, options.floor_percentile))
    threshold = max(floor + options.speech_db, float(db.max()) - options.below_peak_db)
    speech = db > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    spans = edges.reshape(-1, 2).astype(np.float64)
    if len(spans) == 0:
        return np.zeros((0, 2))
    keep = [spans[0].copy()]
    for on, off in spans[1:]:
        if (on - keep[-1][1]) * HOP_S < options.min_pause_s:
            keep[-1][1] = off
        else:
            keep.append(np.array([on, off]))
    # a frame's level reflects its centre: speech starts/ends half a hop around the edges
    end = origin + len(db) * HOP_S
    return np.clip(origin + np.array(keep) * HOP_S - HOP_S / 2, origin, end)


def snap_words(starts: np.ndarray, ends: np.ndarray, spans: np.ndarray,
               options: RefineOptions = RefineOptions()) -> tuple[np.ndarray, np.ndarray]:
    """`lightning_align.refine.snap_words` as numpy code."""
    starts = np.array(starts, np.float64)
    ends = np.array(ends, np.float64)
    n = len(starts)
    if n == 0 or len(spans) == 0:
        return starts, ends
    onsets, offsets = spans[:, 0], spans[:, 1]
    pauses = np.stack([offsets[:-1], onsets[1:]], axis=1) if len(spans) > 1 else np.zeros((0, 2))
    reach = options.reach_s

    def nearest_pause(t_left: float, t_right: float) -> int:
        """Index of the pause closest to [t_left, t_right] within reach, else -1."""
        if len(pauses) == 0:
            return -1
        gap = np.maximum(0.0, np.maximum(pauses[:, 0] - t_right, t_left - pauses[:, 1]))
        k = int(np.argmin(gap))
        return k if gap[k] <= reach else -1

    def speech_in(t0: float, t1: float) -> float:
        return float(np.maximum(0.0, np.minimum(t1, offsets) - np.maximum(t0, onsets)).sum())

    for i in range(n - 1):
        k = nearest_pause(min(ends[i], starts[i + 1]), max(ends[i], starts[i + 1]))
        if k < 0:
            continue
        off, on = pauses[k]
        # only when the pause lies between the two words' cores, never across a whole word,
        # and hands neither word's speech to the other beyond `max_speech_moved` of it
        if off > starts[i] + options.min_word_s and on < ends[i + 1] - options.min_word_s:
            share = options.max_speech_moved
            if (speech_in(off, ends[i]) > share * speech_in(starts[i], ends[i]) + 1e-9
                    or speech_in(starts[i + 1], on) > share * speech_in(starts[i + 1], ends[i + 1]) + 1e-9):
                continue
            ends[i], starts[i + 1] = off, on

    def long_pause_holding(t0: float, t1: float) -> int:
        held = (pauses[:, 0] <= t0) & (t1 <= pauses[:, 1]) & (pauses[:, 1] - pauses[:, 0] >= LONG_PAUSE_S)
        return int(np.flatnonzero(held)[0]) if held.any() else -1

    mw = options.min_word_s
    i = 0
    while i < n:  # runs of words wholly in a long pause: to its nearer edge
        k = long_pause_holding(starts[i], ends[i])
        if k < 0:
            i += 1
            continue
        j = i
        while j + 1 < n and long_pause_holding(starts[j + 1], ends[j + 1]) == k:
            j += 1
        off, on = pauses[k]
        run = np.arange(j - i + 1) * mw
        if starts[i] - off <= on - ends[j]:
            if i > 0 and off - len(run) * mw >= starts[i - 1] + mw:
                t = off - len(run) * mw
                ends[i - 1] = min(ends[i - 1], t)
                starts[i:j + 1], ends[i:j + 1] = t + run, t + run + mw
        elif j < n - 1 and on + len(run) * mw <= ends[j + 1] - mw:
            starts[j + 1] = max(starts[j + 1], on + len(run) * mw)
            starts[i:j + 1], ends[i:j + 1] = on + run, on + run + mw
        i = j + 1
    # first start: out of a pause, or back to an onset just before it
    inside = (onsets <= starts[0]) & (starts[0] < offsets)
    if inside.any():
        j = int(np.flatnonzero(inside)[0])
        if starts[0] - onsets[j] <= reach:
            starts[0] = onsets[j]
    else:
        later = np.flatnonzero(onsets > starts[0])
        if len(later):
            k = int(later[0])
            on, off = onsets[k], offsets[k - 1] if k > 0 else -np.inf
            if on < ends[0] - options.min_word_s:
                starts[0] = on
            elif (ends[0] <= on and on - off >= LONG_PAUSE_S and on - ends[0] <= starts[0] - off
                  and (n == 1 or on + options.min_word_s <= ends[1] - options.min_word_s)):
                starts[0], ends[0] = on, on + options.min_word_s
                if n > 1:
                    starts[1] = max(starts[1], ends[0])
    inside = (onsets < ends[-1]) & (ends[-1] <= offsets)
    if inside.any():
        j = int(np.flatnonzero(inside)[-1])
        if offsets[j] - ends[-1] <= reach:
            ends[-1] = offsets[j]
    else:
        earlier = np.flatnonzero(offsets < ends[-1])
        if len(earlier):
            k = int(earlier[-1])
            off, on = offsets[k], onsets[k + 1] if k + 1 < len(onsets) else np.inf
            if off > starts[-1] + options.min_word_s:
                ends[-1] = off
            elif (starts[-1] >= off and on - off >= LONG_PAUSE_S and starts[-1] - off <= on - ends[-1]
                  and (n == 1 or off - options.min_word_s >= starts[-2] + options.min_word_s)):
                starts[-1], ends[-1] = off - options.min_word_s, off
                if n > 1:
                    ends[-2] = min(ends[-2], starts[-1])
    return _consistent(starts, ends, options.min_word_s)


def _consistent(starts: np.ndarray, ends: np.ndarray, min_word_s: float):
    """Words in order, none overlapping the next, each at least `min_word_s` long."""
    n = len(starts)
    for i in range(n):
        if i > 0 and starts[i] < ends[i - 1]:
            starts[i] = ends[i - 1]
        if ends[i] < starts[i] + min_word_s:
            ends[i] = starts[i] + min_word_s
    return starts, ends


def snap_to_dips(starts: np.ndarray, ends: np.ndarray, fixed: np.ndarray, samples: np.ndarray,
                 options: RefineOptions = RefineOptions()) -> tuple[np.ndarray, np.ndarray]:
    """`lightning_align.refine.snap_to_dips` as numpy code."""
    starts = np.array(starts, np.float64)
    ends = np.array(ends, np.float64)
    n = len(starts)
    if n < 2:
        return starts, ends
    reach, hop = options.dip_reach_s, options.dip_hop_s
    origin, db = dip_levels(starts, ends, samples, options)  # the levels are not under test
    if len(db) < 3:
        return starts, ends
    half = options.dip_window_s / 2 if options.dip_edges else 0.0
    for i in range(n - 1):
        if fixed[i]:
            continue
        t = float(starts[i + 1])
        lo_t = max(t - reach, float(starts[i]) + options.min_word_s)
        hi_t = min(t + reach, float(ends[i + 1]) - options.min_word_s)
        lo = max(0, int(np.ceil((lo_t - origin) / hop - 1e-9)))
        hi = min(len(db), int(np.floor((hi_t - origin) / hop + 1e-9)) + 1)
        if hi - lo < 1:
            continue
        k = lo + int(np.argmin(db[lo:hi]))
        left = right = k
        limit = db[k] + options.dip_tolerance_db
        while left > lo and db[left - 1] <= limit:
            left -= 1
        while right < hi - 1 and db[right + 1] <= limit:
            right += 1
        a = origin + left * hop - (half if right > left else 0.0)
        b = origin + right * hop + (half if right > left else 0.0)
        ends[i] = max(a, float(starts[i]) + options.min_word_s)
        starts[i + 1] = min(max(b, ends[i]), float(ends[i + 1]) - options.min_word_s)
    return _consistent(starts, ends, options.min_word_s)
