"""Word-boundary metrics: match hypothesis words to reference words, then score their times.

Words are matched by text (an edit-distance alignment of normalized words, as a word error
rate aligns them), never by time, so a dropped or an inserted word is counted as such instead
of being paired with a neighbour. Starts and ends are scored separately; all times in seconds
in, milliseconds out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

WITHIN_MS = (20, 50, 100, 200)
F1_MS = (20, 50)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREVIATIONS = {"dr": "doctor", "mr": "mister", "mrs": "missus", "st": "saint"}


@dataclass(frozen=True)
class TimedWord:
    """A word and its span in seconds; `scored` False for the inner boundaries of a number
    written in digits and spelled out for matching (see `as_timed`)."""

    word: str
    start: float
    end: float
    score_start: bool = True
    score_end: bool = True


def normalize(word: str) -> str:
    """Lower case, letters and digits only ("Don't," -> "dont"); "Dr." -> "doctor"."""
    w = re.sub(r"[^0-9a-z]", "", word.lower())
    return _ABBREVIATIONS.get(w, w)


def spell_number(n: int) -> list[str]:
    """English words of 0 <= n < 10000 as a speaker reads them (1984 -> nineteen eighty four)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + (spell_number(n % 10) if n % 10 else [])
    if n < 1000:
        rest = n % 100
        return spell_number(n // 100) + ["hundred"] + (["and"] + spell_number(rest) if rest else [])
    if 1100 <= n < 2000 or 2010 <= n < 2100:  # years
        hi, lo = divmod(n, 100)
        return spell_number(hi) + (["hundred"] if lo == 0 else spell_number(lo))
    rest = n % 1000
    return spell_number(n // 1000) + ["thousand"] + (spell_number(rest) if rest else [])


def _expand(word: str) -> list[str]:
    w = normalize(word)
    if w.isdigit() and len(w) <= 4:
        return spell_number(int(w))
    return [w] if w else []


def as_timed(words: Iterable) -> list[TimedWord]:
    """TimedWord list from dicts ({"word","start","end"}), objects with those attributes, or
    (word, start, end) tuples; words that normalize to nothing (punctuation) are dropped. A
    number in digits ("42") becomes its spoken words ("forty", "two") sharing its span, with only
    the first start and the last end scored."""
    out = []
    for w in words:
        if isinstance(w, dict):
            word, start, end = w["word"], w["start"], w["end"]
        elif isinstance(w, tuple):
            word, start, end = w
        else:
            word, start, end = w.word, w.start, w.end
        parts = _expand(str(word))
        for k, part in enumerate(parts):
            out.append(TimedWord(part, float(start), float(end), k == 0, k == len(parts) - 1))
    return out


@dataclass(frozen=True)
class Match:
    """Pairs (reference index, hypothesis index) of words with equal normalized text."""

    pairs: tuple[tuple[int, int], ...]
    n_ref: int
    n_hyp: int

    @property
    def dropped(self) -> int:
        """Reference words with no hypothesis word."""
        return self.n_ref - len(self.pairs)

    @property
    def inserted(self) -> int:
        """Hypothesis words with no reference word."""
        return self.n_hyp - len(self.pairs)


def match_words(reference: Sequence[TimedWord], hypothesis: Sequence[TimedWord]) -> Match:
    """Align the two word sequences by text as a word error rate does (fewest substitutions,
    insertions and deletions; among equally short alignments, the one with the most equal
    words); only equal words are paired.

    Not difflib's longest matching blocks: where the recognition goes wrong for a stretch, those
    pair a common word ("the") with its namesake several words and seconds away, and that pair's
    error (seconds) is the recognition's, not the timing's.
    """
    a = [normalize(w.word) for w in reference]
    b = [normalize(w.word) for w in hypothesis]
    n, m = len(a), len(b)
    # One integer per cell: edits weigh more than all matches together, so the minimum has the
    # fewest edits first and then the most matches.
    edit = n + m + 1
    cost = [[(i + j) * edit if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        row, up, ai = cost[i], cost[i - 1], a[i - 1]
        for j in range(1, m + 1):
            row[j] = min(up[j - 1] + (-1 if ai == b[j - 1] else edit), up[j] + edit, row[j - 1] + edit)
    pairs = []
    i, j = n, m
    while i and j:
        same = a[i - 1] == b[j - 1]
        if cost[i][j] == cost[i - 1][j - 1] + (-1 if same else edit):
            if same:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + edit:
            i -= 1
        else:
            j -= 1
    return Match(tuple(reversed(pairs)), n, m)


@dataclass(frozen=True)
class BoundaryScores:
    """Errors of one boundary kind (starts or ends) over matched words; times in ms.

    `within[t]` is the share of matched words within t ms; `mean_signed_ms` > 0 means the
    hypothesis is late. `precision[t]`/`recall[t]`/`f1[t]`: a hypothesis boundary is a hit
    when its word matched and lies within t ms; precision divides hits by hypothesis words,
    recall by reference words, so dropped and inserted words both cost.
    """

    n: int
    mae_ms: float
    median_ms: float
    mean_signed_ms: float
    within: dict
    precision: dict
    recall: dict
    f1: dict


@dataclass(frozen=True)
class Scores:
    """Scores of one system on a set of clips."""

    n_ref: int
    n_hyp: int
    matched: int
    dropped: int
    inserted: int
    starts: BoundaryScores
    ends: BoundaryScores
    bad_spans: int  # words with end <= start or start > end


def _boundary(errors_s: np.ndarray, n_ref: int, n_hyp: int) -> BoundaryScores:
    err = np.asarray(errors_s, np.float64) * 1000.0
    a = np.abs(err)
    n = len(err)
    within = {t: float(np.mean(a <= t + 1e-6)) if n else 0.0 for t in WITHIN_MS}
    precision, recall, f1 = {}, {}, {}
    for t in F1_MS:
        hits = int(np.count_nonzero(a <= t + 1e-6))
        p = hits / n_hyp if n_hyp else 0.0
        r = hits / n_ref if n_ref else 0.0
        precision[t], recall[t] = p, r
        f1[t] = 2 * p * r / (p + r) if p + r else 0.0
    return BoundaryScores(n, float(a.mean()) if n else float("nan"),
                          float(np.median(a)) if n else float("nan"),
                          float(err.mean()) if n else float("nan"), within, precision, recall, f1)


def score(pairs_of_lists: Iterable[tuple[Sequence, Sequence]]) -> Scores:
    """Score (reference words, hypothesis words) pairs, one per clip, pooled over clips.

    Each list holds dicts, objects or tuples accepted by `as_timed`.
    """
    ds, de = [], []
    n_ref = n_hyp = matched = bad = 0
    for ref_words, hyp_words in pairs_of_lists:
        ref, hyp = as_timed(ref_words), as_timed(hyp_words)
        m = match_words(ref, hyp)
        n_ref += m.n_ref
        n_hyp += m.n_hyp
        matched += len(m.pairs)
        bad += sum(1 for w in hyp if not w.end > w.start)
        for i, j in m.pairs:
            if hyp[j].score_start:
                ds.append(hyp[j].start - ref[i].start)
            if hyp[j].score_end:
                de.append(hyp[j].end - ref[i].end)
    return Scores(n_ref, n_hyp, matched, n_ref - matched, n_hyp - matched,
                  _boundary(np.array(ds), n_ref, n_hyp), _boundary(np.array(de), n_ref, n_hyp), bad)


def brief(s: Scores) -> str:
    """Start MAE (ms) and share within 50 ms, then the same for ends: one line of an
    experiment's table."""
    return (f"{s.starts.mae_ms:5.1f} {s.starts.within[50] * 100:4.1f}% | "
            f"{s.ends.mae_ms:5.1f} {s.ends.within[50] * 100:4.1f}%")


def words_in_silences(hyp_words: Sequence, reference: Sequence, min_gap_s: float = 1.0,
                      margin_s: float = 0.02) -> int:
    """Hypothesis words lying entirely inside a reference silence longer than `min_gap_s` (a
    gap between consecutive reference words, or before the first), `margin_s` of slack."""
    ref = as_timed(reference)
    gaps = [(0.0, ref[0].start)] if ref else []
    gaps += [(a.end, b.start) for a, b in zip(ref, ref[1:])]
    gaps = [(a, b) for a, b in gaps if b - a > min_gap_s]
    count = 0
    for w in as_timed(hyp_words):
        if any(w.start >= a - margin_s and w.end <= b + margin_s for a, b in gaps):
            count += 1
    return count
