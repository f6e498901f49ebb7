"""Word boundaries moved by the signal: pauses from frame levels, snapping to pause edges and to
energy dips. Pure functions of arrays (seconds and dB), compiled once and free of the GIL.

These run for every segment whose words are aligned, in the aligner thread beside the GPU
decoding loop; written as numpy calls they were ~60 % of the host time per segment (many small
calls, a percentile, Python loops over words). `lightning_align.refine` says what they are for
and chooses their parameters; tests hold them to the numpy formulation they replace.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["snap_to_dips", "snap_words", "speech_spans"]


@njit(cache=True, nogil=True)
def _percentile32(x, q):
    """numpy's default (linear) percentile of a float32 array, as float32."""
    s = np.sort(x)
    n = len(s)
    v = q / 100.0 * (n - 1)
    lo = int(np.floor(v))
    hi = min(lo + 1, n - 1)
    g = np.float32(v - lo)
    d = s[hi] - s[lo]
    if g >= 0.5:
        return np.float32(s[hi] - d * (np.float32(1.0) - g))
    return np.float32(s[lo] + d * g)


@njit(cache=True, nogil=True)
def speech_spans(db, origin_s, hop_s, floor_percentile, speech_db, below_peak_db, min_pause_s):
    """Speech intervals from frame levels.

    db: float32 levels (dB) of frames centred every `hop_s` s from `origin_s` s.
    A frame is speech when it is `speech_db` over the `floor_percentile` of the levels and no
    more than `below_peak_db` under the loudest; runs of speech separated by less than
    `min_pause_s` s are joined. Returns an (n, 2) float64 array of [start, end) seconds, each
    edge half a hop outside its frame centre, clipped to the frames' span.
    """
    n = len(db)
    if n < 2:
        return np.zeros((0, 2))
    floor = _percentile32(db, floor_percentile)
    peak = db.max()
    threshold = np.float32(max(np.float64(floor + np.float32(speech_db)),
                               np.float64(peak) - below_peak_db))
    out = np.empty((n // 2 + 1, 2))
    count = 0
    k = 0
    while k < n:
        if db[k] <= threshold:
            k += 1
            continue
        on = k
        while k < n and db[k] > threshold:
            k += 1
        if count > 0 and (on - out[count - 1, 1]) * hop_s < min_pause_s:
            out[count - 1, 1] = k
        else:
            out[count, 0] = on
            out[count, 1] = k
            count += 1
    end = origin_s + n * hop_s
    spans = np.empty((count, 2))
    for i in range(count):
        for j in range(2):
            spans[i, j] = min(max(origin_s + out[i, j] * hop_s - hop_s / 2, origin_s), end)
    return spans


@njit(cache=True, nogil=True)
def _consistent(starts, ends, min_word_s):
    """In place: words in order, none overlapping the next, each at least `min_word_s` long."""
    for i in range(len(starts)):
        if i > 0 and starts[i] < ends[i - 1]:
            starts[i] = ends[i - 1]
        if ends[i] < starts[i] + min_word_s:
            ends[i] = starts[i] + min_word_s


# A word placed wholly inside a silence this long (s) is misplaced, whatever its attention says
# (issue 10 counts words inside silences longer than 1 s); `snap_words` moves it to the speech.
LONG_PAUSE_S = 1.0


@njit(cache=True, nogil=True)
def _nearest_pause(spans, t_left, t_right, reach_s):
    """Index k of the pause (spans[k, 1], spans[k + 1, 0]) closest to [t_left, t_right] within
    `reach_s`, or -1; the first of equally close pauses."""
    best = -1
    best_gap = np.inf
    for k in range(len(spans) - 1):
        gap = max(0.0, max(spans[k, 1] - t_right, t_left - spans[k + 1, 0]))
        if gap < best_gap:
            best, best_gap = k, gap
    return best if best_gap <= reach_s else -1


@njit(cache=True, nogil=True)
def _speech_in(spans, t0, t1):
    """Seconds of speech (`spans`) inside [t0, t1]."""
    total = 0.0
    for k in range(len(spans)):
        total += max(0.0, min(t1, spans[k, 1]) - max(t0, spans[k, 0]))
    return total


@njit(cache=True, nogil=True)
def _long_pause_holding(spans, t0, t1):
    """Index k of the pause (spans[k, 1], spans[k + 1, 0]) of at least `LONG_PAUSE_S` that holds
    [t0, t1] wholly, or -1."""
    for k in range(len(spans) - 1):
        off, on = spans[k, 1], spans[k + 1, 0]
        if off <= t0 and t1 <= on and on - off >= LONG_PAUSE_S:
            return k
    return -1


@njit(cache=True, nogil=True)
def _runs_out_of_long_pauses(starts, ends, spans, min_word_s):
    """In place: each run of words lying wholly in one pause of at least `LONG_PAUSE_S` between
    two stretches of speech moves to the pause's nearer edge, each word `min_word_s` long: back
    to where the speech before it stops (the word before giving way), or on to where it resumes
    (the word after giving way), if that word keeps `min_word_s`. A run that starts the segment
    only moves on, one that ends it only back (the speech on the other side is another
    segment's), and a segment wholly in the pause stays. Such words have no speech of their own
    where the attention put them: text the recognizer heard in a neighbour's sound, or nothing
    (a hallucination); the nearer speech is the best guess, a pause is never right."""
    n = len(starts)
    i = 0
    while i < n:
        k = _long_pause_holding(spans, starts[i], ends[i])
        if k < 0:
            i += 1
            continue
        j = i
        while j + 1 < n and _long_pause_holding(spans, starts[j + 1], ends[j + 1]) == k:
            j += 1
        off, on = spans[k, 1], spans[k + 1, 0]
        length = (j - i + 1) * min_word_s
        t = np.nan
        if starts[i] - off <= on - ends[j]:
            if i > 0 and off - length >= starts[i - 1] + min_word_s:
                t = off - length
                ends[i - 1] = min(ends[i - 1], t)
        elif j < n - 1 and on + length <= ends[j + 1] - min_word_s:
            t = on
            starts[j + 1] = max(starts[j + 1], on + length)
        if not np.isnan(t):
            for q in range(i, j + 1):
                starts[q] = t + (q - i) * min_word_s
                ends[q] = starts[q] + min_word_s
        i = j + 1


@njit(cache=True, nogil=True)
def snap_words(starts, ends, spans, reach_s, min_word_s, max_speech_moved):
    """Move one segment's word boundaries (seconds, words in order) to the edges of nearby pauses.

    spans: (n, 2) speech intervals (`speech_spans`). A boundary between two words that lies in
    a pause or within `reach_s` of one becomes the pause's edges (the earlier word ends where the
    speech stops, the next starts where it resumes), unless that would cut into either word's
    first / last `min_word_s`, or hand more than `max_speech_moved` of either word's speech
    (the spans inside its span) to the other; the first start and the last end move to the
    nearest onset / offset within reach, or out of the pause they lie in. A first or last word
    that lies wholly in a pause of at least `LONG_PAUSE_S` (the attention placed it in
    silence), in the half of it next to the speech after it / before it, becomes `min_word_s`
    long at that onset / offset, the word next to it giving way; so do runs of words wholly in
    such a pause between two stretches of speech, to its nearer edge
    (`_runs_out_of_long_pauses`). Returns new (starts, ends).
    """
    starts = starts.astype(np.float64)
    ends = ends.astype(np.float64)
    n = len(starts)
    m = len(spans)
    if n == 0 or m == 0:
        return starts, ends
    for i in range(n - 1):
        k = _nearest_pause(spans, min(ends[i], starts[i + 1]), max(ends[i], starts[i + 1]), reach_s)
        if k < 0:
            continue
        off, on = spans[k, 1], spans[k + 1, 0]
        if off > starts[i] + min_word_s and on < ends[i + 1] - min_word_s:
            # a pause within reach but past most of a word's own speech is a quiet stretch
            # inside that word (a stop closure, a weak fricative in noise), not its edge
            lost_i = _speech_in(spans, off, ends[i])
            lost_j = _speech_in(spans, starts[i + 1], on)
            if (lost_i > max_speech_moved * _speech_in(spans, starts[i], ends[i]) + 1e-9
                    or lost_j > max_speech_moved * _speech_in(spans, starts[i + 1], ends[i + 1]) + 1e-9):
                continue
            ends[i] = off
            starts[i + 1] = on
    _runs_out_of_long_pauses(starts, ends, spans, min_word_s)
    # first start: out of a pause, or back to an onset just before it
    j = -1
    for k in range(m):
        if spans[k, 0] <= starts[0] < spans[k, 1]:
            j = k
            break
    if j >= 0:
        if starts[0] - spans[j, 0] <= reach_s:
            starts[0] = spans[j, 0]
    else:
        for k in range(m):
            if spans[k, 0] > starts[0]:
                on = spans[k, 0]
                off = spans[k - 1, 1] if k > 0 else -np.inf
                if on < ends[0] - min_word_s:
                    starts[0] = on
                elif (ends[0] <= on and on - off >= LONG_PAUSE_S and on - ends[0] <= starts[0] - off
                      and (n == 1 or on + min_word_s <= ends[1] - min_word_s)):
                    # the whole word lies in a long pause, nearer its end: on to the onset
                    starts[0] = on
                    ends[0] = on + min_word_s
                    if n > 1:
                        starts[1] = max(starts[1], ends[0])
                break
    # last end: out of a pause, or on to an offset just after it
    j = -1
    for k in range(m - 1, -1, -1):
        if spans[k, 0] < ends[n - 1] <= spans[k, 1]:
            j = k
            break
    if j >= 0:
        if spans[j, 1] - ends[n - 1] <= reach_s:
            ends[n - 1] = spans[j, 1]
    else:
        for k in range(m - 1, -1, -1):
            if spans[k, 1] < ends[n - 1]:
                off = spans[k, 1]
                on = spans[k + 1, 0] if k + 1 < m else np.inf
                if off > starts[n - 1] + min_word_s:
                    ends[n - 1] = off
                elif (starts[n - 1] >= off and on - off >= LONG_PAUSE_S
                      and starts[n - 1] - off <= on - ends[n - 1]
                      and (n == 1 or off - min_word_s >= starts[n - 2] + min_word_s)):
                    # the whole word lies in a long pause, nearer its start: back to the offset
                    ends[n - 1] = off
                    starts[n - 1] = off - min_word_s
                    if n > 1:
                        ends[n - 2] = min(ends[n - 2], starts[n - 1])
                break
    _consistent(starts, ends, min_word_s)
    return starts, ends


@njit(cache=True, nogil=True)
def snap_to_dips(starts, ends, fixed, db, origin_s, hop_s, reach_s, min_word_s, tolerance_db,
                 half_window_s):
    """Move each boundary between touching words that no pause decided (`fixed[i]` False for
    word i's end / word i+1's start) to the quietest frame within `reach_s`.

    db: float32 levels of frames centred every `hop_s` s from `origin_s` s. The dip is the
    minimum and the neighbouring frames within `tolerance_db` of it; when it spans several
    frames the earlier word ends `half_window_s` before the first and the next starts that much
    after the last (the edges of the quiet stretch). Neither word shrinks below `min_word_s`.
    Returns new (starts, ends).
    """
    starts = starts.astype(np.float64)
    ends = ends.astype(np.float64)
    n = len(starts)
    if n < 2 or len(db) < 3:
        return starts, ends
    for i in range(n - 1):
        if fixed[i]:
            continue
        t = starts[i + 1]
        lo_t = max(t - reach_s, starts[i] + min_word_s)
        hi_t = min(t + reach_s, ends[i + 1] - min_word_s)
        lo = max(0, int(np.ceil((lo_t - origin_s) / hop_s - 1e-9)))
        hi = min(len(db), int(np.floor((hi_t - origin_s) / hop_s + 1e-9)) + 1)
        if hi - lo < 1:
            continue
        k = lo
        for f in range(lo + 1, hi):
            if db[f] < db[k]:
                k = f
        left = k
        right = k
        limit = db[k] + np.float32(tolerance_db)
        while left > lo and db[left - 1] <= limit:
            left -= 1
        while right < hi - 1 and db[right + 1] <= limit:
            right += 1
        half = half_window_s if right > left else 0.0
        a = origin_s + left * hop_s - half
        b = origin_s + right * hop_s + half
        ends[i] = max(a, starts[i] + min_word_s)
        starts[i + 1] = min(max(b, ends[i]), ends[i + 1] - min_word_s)
    _consistent(starts, ends, min_word_s)
    return starts, ends
