"""From token boundaries to WhisperX-format words: splitting, punctuation, timing heuristics."""

from __future__ import annotations

import string
import threading
import weakref
from dataclasses import dataclass

import numpy as np

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"


@dataclass
class WordTiming:
    """One word: its text (with Whisper's leading space), tokens, seconds, and probability."""

    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
# Each tokenizer's token texts, by the tokenizer's id (Whisper's tokenizer is not hashable);
# the weak reference tells a new tokenizer at a reused id from the old one.
_pieces: dict[int, tuple[weakref.ref, dict[int, str]]] = {}
_pieces_lock = threading.Lock()


def _token_texts(tokenizer) -> dict[int, str]:
    with _pieces_lock:
        held = _pieces.get(id(tokenizer))
        if held is None or held[0]() is not tokenizer:
            for key in [k for k, (ref, _) in _pieces.items() if ref() is None]:
                del _pieces[key]
            held = _pieces[id(tokenizer)] = (weakref.ref(tokenizer), {})
        return held[1]


def split_words(tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """`tokenizer.split_to_word_tokens(tokens)`, from each token's text decoded once per
    tokenizer: (words, their tokens). The tokenizer decodes every prefix of the segment to find
    where characters end (~0.1 ms a segment); when every token is whole characters on its own,
    as in English, that search is the identity and words are grouped directly, by the same
    rule (a word starts at a space, a punctuation mark, or a special token)."""
    if getattr(tokenizer, "language", None) in UNSPACED_LANGUAGES:
        return tokenizer.split_to_word_tokens(list(tokens))
    known = _token_texts(tokenizer)
    pieces = []
    for t in tokens:
        piece = known.get(t)
        if piece is None:
            piece = known[t] = tokenizer.decode_with_timestamps([t])
        if "\ufffd" in piece:  # part of a character: the tokenizer's own search is needed
            return tokenizer.split_to_word_tokens(list(tokens))
        pieces.append(piece)
    words: list[str] = []
    word_tokens: list[list[int]] = []
    eot = tokenizer.eot
    for t, piece in zip(tokens, pieces):
        if not words or t >= eot or piece.startswith(" ") or piece.strip() in string.punctuation:
            words.append(piece)
            word_tokens.append([t])
        else:
            words[-1] += piece
            word_tokens[-1].append(t)
    return words, word_tokens


def word_timings(tokenizer, text_tokens: list[int], token_probs: np.ndarray,
                 token_starts: np.ndarray, token_end: float,
                 split: tuple[list[str], list[list[int]]] | None = None) -> list[WordTiming]:
    """Group tokens into words and time them.

    `token_starts[k]` is the time (s) at which text token k begins, `token_end` the time the last
    token ends; a word spans from its first token's start to the next word's start. `split`:
    `tokenizer.split_to_word_tokens(text_tokens)` when the caller already has it.
    """
    if not text_tokens:
        return []
    words, word_tokens = split if split is not None else split_words(tokenizer, list(text_tokens))
    boundaries = np.cumsum([0] + [len(t) for t in word_tokens])
    starts = np.append(np.asarray(token_starts, np.float64), token_end).tolist()
    # per-word mean probability from one cumulative sum, not one np.mean per word
    csum = np.concatenate([[0.0], np.cumsum(token_probs, dtype=np.float64)]).tolist()
    bounds = boundaries.tolist()
    out = []
    for i, (word, tokens) in enumerate(zip(words, word_tokens)):
        a, b = bounds[i], bounds[i + 1]
        out.append(WordTiming(word, list(tokens), starts[a], starts[b],
                              (csum[b] - csum[a]) / (b - a) if b > a else 0.0))
    return out


def merge_punctuations(words: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS,
                       appended: str = APPEND_PUNCTUATIONS) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous one,
    in place; a merged-away entry keeps an empty `word` and is dropped by the caller."""
    i = len(words) - 2
    j = len(words) - 1
    while i >= 0:
        previous, following = words[i], words[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(words):
        previous, following = words[i], words[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word = previous.word + following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


class _Text:
    __slots__ = ("word", "tokens")

    def __init__(self, word: str):
        self.word, self.tokens = word, []


def merged_texts(words: list[str]) -> list[str]:
    """The words' texts after `merge_punctuations` ("" where merged away), without timings."""
    items = [_Text(w) for w in words]
    merge_punctuations(items)  # type: ignore[arg-type]
    return [item.word for item in items]


def apply_heuristics(words: list[WordTiming], segment_start: float, segment_end: float,
                     last_speech: float) -> tuple[list[WordTiming], float, float]:
    """openai-whisper's corrections for words stretched over pauses, on one segment's words.

    Long words at sentence boundaries are cut to twice the median word duration; the first
    words after a pause likewise; a first/last word reaching > 0.5 s past the decoded segment
    boundary is pulled back to it. Returns (words, segment start, segment end) in seconds.
    """
    # sorted in Python: np.median's overhead is most of this function on a 10-word segment
    durations = sorted(d for d in (w.end - w.start for w in words) if d != 0)
    mid = len(durations) // 2
    median = (min(0.7, durations[mid] if len(durations) % 2 else
                  (durations[mid - 1] + durations[mid]) / 2) if durations else 0.0)
    longest = median * 2
    if durations:
        for i in range(1, len(words)):
            if words[i].end - words[i].start > longest:
                if words[i].word in SENTENCE_END_MARKS:
                    words[i].end = words[i].start + longest
                elif words[i - 1].word in SENTENCE_END_MARKS:
                    words[i].start = words[i].end - longest
    merge_punctuations(words)
    words = [w for w in words if w.word]
    if not words:
        return words, segment_start, segment_end
    first = words[0]
    if first.end - last_speech > median * 4 and (
            first.end - first.start > longest
            or (len(words) > 1 and words[1].end - first.start > longest * 2)):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            boundary = max(words[1].end / 2, words[1].end - longest)
            first.end = words[1].start = boundary
        first.start = max(0.0, first.end - longest)
    if segment_start < first.end and segment_start - 0.5 > first.start:
        first.start = max(0.0, min(first.end - median, segment_start))
    else:
        segment_start = first.start
    last = words[-1]
    if segment_end > last.start and segment_end + 0.5 < last.end:
        last.end = max(last.start + median, segment_end)
    else:
        segment_end = last.end
    return words, segment_start, segment_end


def shift_words(words: list[WordTiming], start_s: float, end_s: float) -> None:
    """Move every start by `start_s` and every end by `end_s` seconds (a lag correction), in
    place, keeping words in order, non-negative and not overlapping the next word."""
    for w in words:
        w.start = max(0.0, w.start + start_s)
        w.end = max(w.start, w.end + end_s)
    for a, b in zip(words, words[1:]):
        if a.end > b.start:  # the two shifts crossed at a shared boundary: meet halfway
            a.end = b.start = max(a.start, (a.end + b.start) / 2)
            b.end = max(b.end, b.start)


def to_dicts(words: list[WordTiming]) -> list[dict]:
    """WhisperX word dicts; times in seconds, rounded to 1 ms."""
    return [{"word": w.word, "start": round(w.start, 3), "end": round(max(w.end, w.start), 3),
             "probability": round(w.probability, 4)} for w in words]
