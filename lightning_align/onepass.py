"""The one-pass method for segments with captured attention, batched: one GIL-free kernel call
(`kernels.onepass.onepass_words`) per recording instead of some twenty numpy calls per segment.

`align.align` sends here the segments of a transcript it aligns with the default method (the
aligner thread beside the decoding loop does, after every pass); the per-segment code in
`align` remains for `return_attention`, the reference method and plain dicts, and the two give
the same words (tests/test_align.py holds them to it).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numba
import numpy as np

from .capture import CapturedAttention
from .errors import AlignmentError
from .kernels.median import _median_network
from .kernels.onepass import onepass_words, onepass_words_parallel
from .refine import Envelope, RefineOptions, envelope_of
from .words import SENTENCE_END_MARKS, merged_texts, split_words


@dataclass(eq=False)
class Plan:
    """One segment to align: its captured attention and what the per-segment path would read
    from its source (times in seconds)."""

    index: int  # the segment's index, for messages
    entry: CapturedAttention
    tokenizer: object
    frame0_s: float  # time of the entry's frame 0
    heads: tuple[int, ...]  # positions among the captured heads
    head_weights: tuple[float, ...] | None  # None: the plain mean
    bounds: tuple[float, float]  # decoded start, end
    last_speech_s: float
    lag: tuple[float, float] | None  # (start, end) shift, or None
    anchor: tuple[float, float] | None  # frames outside (lo, hi) are unattractive, or None
    samples: np.ndarray | None


Result = tuple[list[dict], float, float]  # words, segment start, segment end

THREADS_ENV = "LIGHTNING_ALIGN_THREADS"
MAX_THREADS = 8
# numba's workqueue threading layer (used where neither TBB nor OpenMP loads) aborts the
# process when two threads launch parallel kernels at once: one launch at a time, and a
# caller that finds the lock taken aligns serially instead of waiting.
_parallel_launch = threading.Lock()


def align_threads() -> int:
    """Threads one kernel call spreads a recording's segments over: $LIGHTNING_ALIGN_THREADS, else half
    the cores, at most `MAX_THREADS` (the other half stays with the decoding loop and MLX,
    which the aligner thread runs beside). 1 aligns serially, as on a 2-core machine."""
    raw = os.environ.get(THREADS_ENV)
    if raw is None or not raw.strip():
        return max(1, min(MAX_THREADS, (os.cpu_count() or 1) // 2))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise AlignmentError(f"{THREADS_ENV}={raw!r}: give a whole number of threads >= 1, or unset "
                             "it for half the cores.")
    return n


def align_plans(plans: list[Plan], width: int, heuristics: bool, onset_cost: float, refine: bool,
                dips: bool, ropts: RefineOptions, token_contrast: float = 0.0,
                attention_power: float = 1.0) -> list[Result]:
    """Words (WhisperX dicts, seconds rounded to 1 ms) and the segment's (start, end) after the
    heuristics and refinement, per plan, in order (the options as in `align.AlignOptions`).
    Plans are grouped by recording and heads; each group is one kernel call."""
    groups: dict[tuple, list[int]] = {}
    for k, p in enumerate(plans):
        key = (id(p.samples), p.heads, p.head_weights, p.entry.scores.shape[1])
        groups.setdefault(key, []).append(k)
    out: list[Result | None] = [None] * len(plans)
    for members in groups.values():
        part = [plans[k] for k in members]
        for k, result in zip(members, _align_group(part, width, heuristics, onset_cost, refine,
                                                    dips, ropts, token_contrast,
                                                    attention_power)):
            out[k] = result
    return out  # type: ignore[return-value]


def _align_group(plans: list[Plan], width: int, heuristics: bool, onset_cost: float,
                 refine: bool, dips: bool, ropts: RefineOptions,
                 token_contrast: float, attention_power: float) -> list[Result]:
    first = plans[0]
    n_heads = first.entry.scores.shape[1]
    heads = np.asarray(first.heads, np.int64)
    hw = (np.ones(len(heads), np.float32) if first.head_weights is None
          else np.asarray(first.head_weights, np.float32))
    s = len(plans)
    shapes = np.empty((s, 2), np.int64)
    frame0 = np.empty(s)
    anchor = np.zeros((s, 3))
    bounds = np.empty((s, 2))
    last_speech = np.empty(s)
    lags = np.zeros((s, 3))
    text_rows, text_at, logprobs = [], [0], []
    word_bounds, word_at, sentence_end, keep, shown = [], [0], [], [], []
    for i, p in enumerate(plans):
        e = p.entry
        shapes[i] = e.scores.shape[0], e.scores.shape[2]
        frame0[i] = p.frame0_s
        if p.anchor is not None:
            anchor[i] = p.anchor[0], p.anchor[1], 1.0
        bounds[i] = p.bounds
        last_speech[i] = p.last_speech_s
        if p.lag is not None:
            lags[i] = p.lag[0], p.lag[1], 1.0
        eot = p.tokenizer.eot
        rows = [r for r, t in enumerate(e.tokens) if 0 <= t < eot]
        text = [e.tokens[r] for r in rows]
        after = rows[-1] + 1 if rows else 0
        text_rows += rows + [min(after, len(e.tokens) - 1)]
        text_at.append(len(text_rows))
        logprobs.append(e.token_logprobs[rows])
        words, tokens = split_words(p.tokenizer, text) if text else ([], [])
        word_bounds += np.cumsum([0] + [len(t) for t in tokens]).tolist()
        word_at.append(word_at[-1] + len(words))
        sentence_end += [w in SENTENCE_END_MARKS for w in words]
        if heuristics:
            words = merged_texts(words)
            keep += [bool(w) for w in words]
        else:
            keep += [True] * len(words)
        shown.append(words)
    entries = [p.entry for p in plans]
    scores16 = np.concatenate([np.ascontiguousarray(e.scores).view(np.uint16).ravel()
                               for e in entries])
    log_norm = np.concatenate([np.ascontiguousarray(e.log_norm, np.float32).ravel()
                               for e in entries])
    score_at = np.concatenate([[0], np.cumsum([e.scores.size for e in entries])]).astype(np.int64)
    norm_at = np.concatenate([[0], np.cumsum([e.log_norm.size for e in entries])]).astype(np.int64)
    probs = np.exp(np.concatenate(logprobs)) if logprobs else np.zeros(0, np.float32)
    env: Envelope | None = envelope_of(first.samples) if first.samples is not None else None
    n_words = word_at[-1]
    word_start, word_end, word_prob = np.empty(n_words), np.empty(n_words), np.empty(n_words)
    seg_bounds = np.empty((s, 2))
    status = np.empty(s, np.int64)
    lo, hi, mode = _median_network(width)
    params = np.array([ropts.speech_db, ropts.below_peak_db, ropts.floor_percentile,
                       ropts.min_pause_s, ropts.reach_s, ropts.min_word_s, ropts.context_s,
                       ropts.dip_reach_s, ropts.dip_tolerance_db,
                       ropts.dip_window_s / 2 if ropts.dip_edges else 0.0, ropts.max_speech_moved])
    empty = np.zeros(0, np.float32)
    _run_kernel(
        s, scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, hw, np.float32(hw.sum()),
        np.float32(attention_power), width, lo, hi, mode, frame0, anchor, np.asarray(text_rows, np.int64),
        np.asarray(text_at, np.int64), probs.astype(np.float32, copy=False),
        np.asarray(word_bounds, np.int64), np.asarray(word_at, np.int64),
        np.asarray(sentence_end, np.bool_), np.asarray(keep, np.bool_), bounds, last_speech,
        lags, heuristics, float(onset_cost), float(token_contrast), env is not None,
        env.db if env is not None else empty, env.fine_db if env is not None else empty,
        env.n_samples if env is not None else 0, refine, dips, params,
        word_start, word_end, word_prob, seg_bounds, status)
    results: list[Result] = []
    # Python floats once for all words: indexing numpy arrays per value costs more than this
    starts, ends, probabilities = word_start.tolist(), word_end.tolist(), word_prob.tolist()
    for i, (p, code, (start, end)) in enumerate(zip(plans, status.tolist(), seg_bounds.tolist())):
        if code == 2:
            raise AlignmentError(f"segment {p.index}: its captured attention holds NaN or inf "
                                 "(a decoder run in float16 that overflowed?); align it again "
                                 "with method='reference' or transcribe in float32.")
        if code == 1:
            results.append(([], p.bounds[0], p.bounds[1]))
            continue
        words = [{"word": w, "start": round(starts[k], 3), "end": round(max(ends[k], starts[k]), 3),
                  "probability": round(probabilities[k], 4)}
                 for k, w in enumerate(shown[i], word_at[i]) if keep[k]]
        results.append((words, start, end))
    return results


def _run_kernel(n_segments: int, *args) -> None:
    """`onepass_words(*args)`, over `align_threads()` threads when there is more than one
    segment to share out (`onepass_words_parallel`: the same words)."""
    threads = align_threads() if n_segments > 1 else 1
    if threads > 1 and _parallel_launch.acquire(blocking=False):
        try:
            # thread-local in numba: the decoding loop's own kernels are not affected
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            # segments differ in size: a free thread takes the next one
            with numba.parallel_chunksize(1):
                onepass_words_parallel(*args)
        finally:
            _parallel_launch.release()
        return
    onepass_words(*args)
