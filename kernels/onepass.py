"""The one-pass alignment stage for many segments in one compiled call that holds no GIL.

From each segment's captured attention (float16 scores and their softmax normalizers) to its
word times: softmax weights of the chosen heads -> alignment matrix (`matrix._alignment`) ->
optional anchoring to the decoded span -> DTW with the onset costs of word starts
(`dtw._fill`) -> the frame each token row is entered -> word times -> lag shift ->
openai-whisper's heuristics -> snapping to pauses and energy dips (`boundaries`).

Words are aligned in a thread beside the GPU decoding loop, and the loop's host thread needs
the GIL after every step. Done one segment at a time in Python, this stage held the GIL for
~0.6 ms per segment over some twenty small numpy calls; here the Python around it is one call
per batch of segments. `lightning_align.align` keeps the per-segment formulation (for
`return_attention` and the reference method) and tests hold the two to the same words.
Times are seconds, frames the encoder's 20 ms frames, levels dB.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .boundaries import snap_to_dips, snap_words, speech_spans
from .dtw import _backtrace, _fill
from .matrix import _alignment, _contrast, _half_to_float32

__all__ = ["onepass_words", "onepass_words_parallel", "onset_costs", "percentile64",
           "softmax_weights"]

FRAMES_PER_S = 50.0  # encoder frames
ONSET_HOP_S = 0.02  # onset costs: one per encoder frame
LEVEL_HOP_S = 0.01  # the envelope's 20 ms frames every 10 ms (`refine.Envelope.db`)
FINE_HOP_S = 0.005  # its 10 ms frames every 5 ms (`refine.Envelope.fine_db`)
SAMPLE_RATE = 16000
FINE_HOP_SAMPLES = 80


@njit(cache=True, nogil=True)
def _weights_into(scores16, log_norm, heads, power, out):
    """out[h, r, f] = exp(scores[r, heads[h], f] - log_norm[r, heads[h]]) ** power in float32,
    from float16 bits `scores16` (rows, all heads, frames) and float32 `log_norm` (rows, all
    heads); the power is taken inside the exponent, so it costs one product (and power = 1 is
    the softmax weight bit for bit)."""
    for h in range(len(heads)):
        hh = heads[h]
        for r in range(scores16.shape[0]):
            norm = log_norm[r, hh]
            src = scores16[r, hh]
            dst = out[h, r]
            for f in range(scores16.shape[2]):
                dst[f] = np.exp((_half_to_float32(src[f]) - norm) * power)


def softmax_weights(scores: np.ndarray, log_norm: np.ndarray, heads: np.ndarray,
                    power: float = 1.0) -> np.ndarray:
    """Softmax attention weights (heads, rows, frames) float32 from captured float16 `scores`
    (rows, all heads, frames) and float32 `log_norm` (rows, all heads), of the heads at
    positions `heads`, raised to `power` (> 0; 1: the weights themselves): the same float32
    values `onepass_words` aligns on."""
    if not (np.isfinite(power) and power > 0):
        raise ValueError(f"softmax_weights: power={power!r}; give a finite number > 0")
    s = np.ascontiguousarray(scores, np.float16).view(np.uint16)
    heads = np.asarray(heads, np.int64)
    out = np.empty((len(heads), s.shape[0], s.shape[2]), np.float32)
    _weights_into(s, np.ascontiguousarray(log_norm, np.float32), heads, np.float32(power), out)
    return out


@njit(cache=True, nogil=True)
def percentile64(x, q):
    """numpy's default (linear) percentile of a 1-D float64 array (`refine.percentile`); float64
    arithmetic, where `boundaries._percentile32` keeps float32's for float32 levels."""
    s = np.sort(x)
    n = len(s)
    v = q / 100.0 * (n - 1)
    lo = int(np.floor(v))
    hi = min(lo + 1, n - 1)
    a, b, g = s[lo], s[hi], v - lo
    return b - (b - a) * (1.0 - g) if g >= 0.5 else a + (b - a) * g


@njit(cache=True, nogil=True)
def onset_costs(db, frame0_s, n_frames, scale, floor_percentile, out):
    """`refine.onset_costs` from the envelope's 10 ms levels `db` (float32 dB), into
    out[:n_frames] (float64)."""
    if len(db) == 0 or n_frames == 0:
        out[:] = 0.0
        return
    level = np.empty(n_frames)
    for j in range(n_frames):
        k = int(np.rint((frame0_s + j * ONSET_HOP_S) / LEVEL_HOP_S))
        level[j] = np.float64(db[min(max(k, 0), len(db) - 1)])
    floor = percentile64(level, floor_percentile)
    span = max(level.max() - floor, 1e-6)
    for j in range(n_frames):
        out[j] = scale * min(max((level[j] - floor) / span, 0.0), 1.0)


@njit(cache=True, nogil=True)
def _shift(starts, ends, start_s, end_s):
    """`words.shift_words` on arrays, in place."""
    n = len(starts)
    for i in range(n):
        starts[i] = max(0.0, starts[i] + start_s)
        ends[i] = max(starts[i], ends[i] + end_s)
    for i in range(n - 1):
        if ends[i] > starts[i + 1]:
            ends[i] = max(starts[i], (ends[i] + starts[i + 1]) / 2)
            starts[i + 1] = ends[i]
            ends[i + 1] = max(ends[i + 1], starts[i + 1])


@njit(cache=True, nogil=True)
def _heuristics(starts, ends, sentence_end, keep, seg_start, seg_end, last_speech):
    """`words.apply_heuristics` on arrays: times in place; -> (indices of the words kept after
    punctuation merging (`keep`), segment start, segment end)."""
    n = len(starts)
    durations = np.empty(n)
    m = 0
    for i in range(n):
        d = ends[i] - starts[i]
        if d != 0:
            durations[m] = d
            m += 1
    median = 0.0
    if m > 0:
        d = np.sort(durations[:m])
        half = m // 2
        median = min(0.7, d[half] if m % 2 else (d[half - 1] + d[half]) / 2)
    longest = median * 2
    if m > 0:
        for i in range(1, n):
            if ends[i] - starts[i] > longest:
                if sentence_end[i]:
                    ends[i] = starts[i] + longest
                elif sentence_end[i - 1]:
                    starts[i] = ends[i] - longest
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return kept, seg_start, seg_end
    f = kept[0]
    if ends[f] - last_speech > median * 4 and (
            ends[f] - starts[f] > longest
            or (len(kept) > 1 and ends[kept[1]] - starts[f] > longest * 2)):
        if len(kept) > 1:
            g = kept[1]
            if ends[g] - starts[g] > longest:
                boundary = max(ends[g] / 2, ends[g] - longest)
                ends[f] = boundary
                starts[g] = boundary
        starts[f] = max(0.0, ends[f] - longest)
    if seg_start < ends[f] and seg_start - 0.5 > starts[f]:
        starts[f] = max(0.0, min(ends[f] - median, seg_start))
    else:
        seg_start = starts[f]
    last = kept[-1]
    if seg_end > starts[last] and seg_end + 0.5 < ends[last]:
        ends[last] = max(starts[last] + median, seg_end)
    else:
        seg_end = ends[last]
    return kept, seg_start, seg_end


@njit(cache=True, nogil=True)
def _ceil_frame(t, hop):
    return int(np.ceil(t / hop - 1e-9))


@njit(cache=True, nogil=True)
def _refine(starts0, ends0, db, fine_db, n_samples, refine, dips, speech_db, below_peak_db,
            floor_percentile, min_pause_s, reach_s, min_word_s, context_s, dip_reach_s,
            dip_tolerance_db, dip_half_s, max_speech_moved):
    """`align._refine` on one segment's kept words: -> new (starts, ends)."""
    duration = n_samples / SAMPLE_RATE
    starts, ends = starts0, ends0
    n = len(starts0)
    if refine:
        t0 = max(0.0, starts0[0] - context_s)
        t1 = min(duration, ends0[n - 1] + context_s)
        k0 = min(len(db), max(0, _ceil_frame(t0, LEVEL_HOP_S)))
        k1 = min(len(db), max(k0, _ceil_frame(t1, LEVEL_HOP_S)))
        spans = speech_spans(db[k0:k1], k0 * LEVEL_HOP_S, LEVEL_HOP_S, floor_percentile,
                             speech_db, below_peak_db, min_pause_s)
        starts, ends = snap_words(starts0, ends0, spans, reach_s, min_word_s, max_speech_moved)
    if dips and n >= 2:
        fixed = np.empty(n - 1, np.bool_)
        for i in range(n - 1):
            fixed[i] = (abs(ends[i] - ends0[i]) > 1e-9 or abs(starts[i + 1] - starts0[i + 1]) > 1e-9
                        or abs(ends[i] - starts[i + 1]) > 1e-9)
        t0 = max(0.0, starts[0] - dip_reach_s - FINE_HOP_S)
        t1 = ends[n - 1] + dip_reach_s + FINE_HOP_S
        k0 = max(0, _ceil_frame(t0, FINE_HOP_S))
        k1 = max(k0, min(_ceil_frame(t1, FINE_HOP_S), n_samples // FINE_HOP_SAMPLES + 1))
        starts, ends = snap_to_dips(starts, ends, fixed, fine_db[k0:k1], k0 * FINE_HOP_S, FINE_HOP_S,
                                    dip_reach_s, min_word_s, dip_tolerance_db, dip_half_s)
    out_s = np.empty(n)
    out_e = np.empty(n)
    for i in range(n):
        out_e[i] = min(ends[i], duration)
        out_s[i] = min(starts[i], out_e[i])
    return out_s, out_e


@njit(cache=True, nogil=True)
def _matrix(scores16, log_norm, heads, power, head_w, total, width, net_lo, net_hi, net_mode,
            out):
    """One segment's softmax weights of `heads`, raised to `power` -> its alignment matrix in
    `out` (rows, frames); False if the attention holds NaN or inf."""
    w = np.empty((len(heads), scores16.shape[0], scores16.shape[2]), np.float32)
    _weights_into(scores16, log_norm, heads, power, w)
    return _alignment(w, width, net_lo, net_hi, net_mode, head_w, total, out)


@njit(cache=True, nogil=True)
def _anchor(matrix, frame0_s, lo_s, hi_s):
    """`align._anchored` in place: frames outside [lo_s, hi_s] get the matrix's minimum less 1,
    unless that is none or all of them."""
    frames = matrix.shape[1]
    outside = np.empty(frames, np.bool_)
    n_out = 0
    for f in range(frames):
        t = frame0_s + f / FRAMES_PER_S
        outside[f] = t < lo_s or t > hi_s
        n_out += outside[f]
    if 0 < n_out < frames:
        low = matrix.min() - 1.0
        for f in range(frames):
            if outside[f]:
                matrix[:, f] = low


@njit(cache=True, nogil=True)
def _entered(matrix, enter, enter_cost, first):
    """DTW on the negated matrix (`dtw.dtw` with an entry); first[r] = the frame at which the
    path enters row r. False if the matrix holds NaN or inf."""
    rows, frames = matrix.shape
    x = np.empty((rows, frames))
    for r in range(rows):
        for f in range(frames):
            x[r, f] = -np.float64(matrix[r, f])
    trace = np.empty((rows + 1, frames + 1), np.int8)
    if not _fill(x, rows, frames, trace, enter, enter_cost):
        return False
    ti = np.empty(rows + frames, np.int64)
    tj = np.empty(rows + frames, np.int64)
    k = _backtrace(trace, rows, frames, ti, tj)
    first[:] = -1
    for p in range(k, rows + frames):
        if first[ti[p]] < 0:
            first[ti[p]] = tj[p]
    return True


@njit(cache=True, nogil=True)
def onepass_words(scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, head_w, total,
                  power, width, net_lo, net_hi, net_mode, frame0, anchor, text_rows, text_at, probs,
                  word_bounds, word_at, sentence_end, keep, bounds, last_speech, lags, heuristics,
                  onset_scale, contrast, has_signal, db, fine_db, n_samples, refine, dips, params,
                  word_start, word_end, word_prob, seg_bounds, status):
    """Align segments s = 0..S-1 of one recording (arrays packed end to end, `*_at[s]` where
    segment s's part begins; `*_at` have S + 1 entries).

    scores16: float16 bits (uint16) of each segment's (rows, n_heads, frames) scores, minus the
        row max, flat; shapes[s] = (rows, frames); log_norm: (rows, n_heads) float32 per segment.
    heads: positions (among the n_heads captured) to align with, head_w their float32 weights,
        total their float32 sum; power: the float32 power the weights are raised to before
        the matrix (1: openai-whisper's); width, net_*: the median filter
        (`median._median_network`).
    frame0[s]: time of the segment's frame 0 (s); anchor[s] = (lo, hi, on): where `on` is 1,
        frames outside [lo, hi] seconds are made unattractive (`align._anchored`).
    text_rows[text_at[s]:text_at[s+1]]: the matrix row predicting each text token, then the
        row after the last; probs[text_at[s] - s:...]: each text token's probability.
    word_bounds[word_at[s] + s: ... + n_words + 1]: cumulative token counts of the words;
        sentence_end / keep[word_at[s]:word_at[s+1]]: the word is a sentence-ending mark / is
        kept after punctuation merging.
    bounds[s] = decoded (start, end); last_speech[s]: end of speech before it; lags[s] =
        (start shift, end shift, 1 to apply).
    onset_scale: the onset cost (0: off); contrast: `matrix.token_contrast` over each segment's
        text rows (0: off); has_signal: the recording's samples are known (else
        no onset costs and no refinement); db / fine_db: its 10 ms / 5 ms levels
        (`refine.Envelope`); n_samples: its length.
    params: refine options (speech_db, below_peak_db, floor_percentile, min_pause_s, reach_s,
        min_word_s, context_s, dip_reach_s, dip_tolerance_db, dip half window, max_speech_moved).
    Writes word_start / word_end / word_prob (per word; times meaningful where kept; the
    probability is the mean of the word's tokens'), seg_bounds[s] (start, end after the
    heuristics and refinement) and status[s]: 0 aligned, 1 no text, 2 NaN or inf in the
    attention.
    """
    for s in range(len(shapes)):
        _one_segment(s, scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, head_w,
                     total, power, width, net_lo, net_hi, net_mode, frame0, anchor, text_rows,
                     text_at, probs, word_bounds, word_at, sentence_end, keep, bounds, last_speech,
                     lags, heuristics, onset_scale, contrast, has_signal, db, fine_db, n_samples,
                     refine, dips, params, word_start, word_end, word_prob, seg_bounds, status)


@njit(cache=True, nogil=True, parallel=True)
def onepass_words_parallel(scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, head_w,
                           total, power, width, net_lo, net_hi, net_mode, frame0, anchor, text_rows,
                           text_at, probs, word_bounds, word_at, sentence_end, keep, bounds,
                           last_speech, lags, heuristics, onset_scale, contrast, has_signal, db,
                           fine_db, n_samples, refine, dips, params, word_start, word_end,
                           word_prob, seg_bounds, status):
    """`onepass_words` with its segments spread over numba's threads (`numba.set_num_threads`
    in the calling thread sets how many): the same words, bit for bit, since each segment is
    aligned on its own and writes only its own slices."""
    for s in prange(len(shapes)):
        _one_segment(s, scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, head_w,
                     total, power, width, net_lo, net_hi, net_mode, frame0, anchor, text_rows,
                     text_at, probs, word_bounds, word_at, sentence_end, keep, bounds, last_speech,
                     lags, heuristics, onset_scale, contrast, has_signal, db, fine_db, n_samples,
                     refine, dips, params, word_start, word_end, word_prob, seg_bounds, status)


@njit(cache=True, nogil=True)
def _one_segment(s, scores16, score_at, log_norm, norm_at, shapes, n_heads, heads, head_w, total,
                 power, width, net_lo, net_hi, net_mode, frame0, anchor, text_rows, text_at, probs,
                 word_bounds, word_at, sentence_end, keep, bounds, last_speech, lags, heuristics,
                 onset_scale, contrast, has_signal, db, fine_db, n_samples, refine, dips, params,
                 word_start, word_end, word_prob, seg_bounds, status):
    """Align segment `s` of `onepass_words`'s arguments into its slices of the outputs."""
    rows, frames = shapes[s, 0], shapes[s, 1]
    t_lo, t_hi = text_at[s], text_at[s + 1]
    n_text = t_hi - t_lo - 1
    w_lo, w_hi = word_at[s], word_at[s + 1]
    n_words = w_hi - w_lo
    if n_text <= 0 or n_words == 0:
        status[s] = 1
        return
    sc = scores16[score_at[s] : score_at[s] + rows * n_heads * frames].reshape(
        (rows, n_heads, frames))
    ln = log_norm[norm_at[s] : norm_at[s] + rows * n_heads].reshape((rows, n_heads))
    matrix = np.empty((rows, frames), np.float32)
    if not _matrix(sc, ln, heads, power, head_w, total, width, net_lo, net_hi, net_mode, matrix):
        status[s] = 2
        return
    if anchor[s, 2] != 0:
        _anchor(matrix, frame0[s], anchor[s, 0], anchor[s, 1])
    if contrast > 0:
        _contrast(matrix.copy(), text_rows[t_lo : t_hi - 1], np.float32(contrast), matrix)
    # words other than the first pay the onset cost to start
    enter = np.zeros(rows, np.uint8)
    enter_cost = np.zeros(frames)
    b0 = word_at[s] + s
    if onset_scale > 0 and has_signal:
        for i in range(1, n_words):
            enter[text_rows[t_lo + word_bounds[b0 + i]]] = 1
        onset_costs(db, frame0[s], frames, onset_scale, params[2], enter_cost)
    first = np.empty(rows, np.int64)
    if not _entered(matrix, enter, enter_cost, first):
        status[s] = 2
        return
    # word times from the frames the path enters each word's first token row at
    starts = np.empty(n_words)
    ends = np.empty(n_words)
    csum = np.empty(n_text + 1)  # float64 running sum of the float32 probabilities
    csum[0] = 0.0
    for i in range(n_text):
        csum[i + 1] = csum[i] + np.float64(probs[t_lo - s + i])
    for i in range(n_words):
        a, b = word_bounds[b0 + i], word_bounds[b0 + i + 1]
        starts[i] = frame0[s] + first[text_rows[t_lo + a]] / FRAMES_PER_S
        ends[i] = frame0[s] + first[text_rows[t_lo + b]] / FRAMES_PER_S
        word_prob[w_lo + i] = (csum[b] - csum[a]) / (b - a) if b > a else 0.0
    if lags[s, 2] != 0:
        _shift(starts, ends, lags[s, 0], lags[s, 1])
    seg_start, seg_end = bounds[s, 0], bounds[s, 1]
    if heuristics:
        kept, seg_start, seg_end = _heuristics(
            starts, ends, sentence_end[w_lo:w_hi], keep[w_lo:w_hi], seg_start, seg_end,
            last_speech[s])
    else:
        kept = np.arange(n_words)
    if len(kept) > 0 and (refine or dips) and has_signal:
        new_s, new_e = _refine(starts[kept], ends[kept], db, fine_db, n_samples, refine, dips,
                               params[0], params[1], params[2], params[3], params[4],
                               params[5], params[6], params[7], params[8], params[9], params[10])
        for j in range(len(kept)):
            starts[kept[j]] = new_s[j]
            ends[kept[j]] = new_e[j]
        seg_start, seg_end = new_s[0], new_e[len(kept) - 1]
    word_start[w_lo:w_hi] = starts
    word_end[w_lo:w_hi] = ends
    seg_bounds[s, 0] = seg_start
    seg_bounds[s, 1] = seg_end
    status[s] = 0
