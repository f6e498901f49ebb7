"""Accept segments from other Whisper tools, and hand results back in the WhisperX format.

What `align` accepts (all times in seconds):

- our own `Transcript` / `Segment` dicts (aligned from the attention cache);
- openai-whisper, mlx-whisper and WhisperX result dicts (`{"segments": [...]}`) or their
  segment lists: dicts with `start`, `end`, `text` and, when the tool gives them, `tokens`
  (Whisper token ids, used as they are);
- faster-whisper's `Segment` objects, its segment generator, or the whole
  `(segments, info)` pair that `WhisperModel.transcribe` returns;
- any namedtuple, dataclass or plain object with `start`, `end`, `text` attributes;
- a human transcript: `[{"start": 0.0, "end": 4.2, "text": "Hello there."}, ...]`.

Dicts are filled in place; objects are converted into new dicts, which `align` returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from .errors import AlignmentError

__all__ = ["as_segment_dicts", "to_whisperx", "words_of"]


def as_segment_dicts(segments: Any) -> list:
    """Segments as dicts `align` can work on.

    A list of dicts is returned as is (so `align` fills it in place); a result dict
    (`{"segments": [...]}`, openai-whisper / mlx-whisper / WhisperX) gives its segment list;
    faster-whisper's `(segments, info)` pair gives its segments; other segment objects
    (faster-whisper's `Segment`, namedtuples, dataclasses) become new dicts with the same
    fields, `words` dropped (they are recomputed) and fields that are None left out.
    """
    if isinstance(segments, Mapping):
        if "segments" not in segments:
            raise AlignmentError("a dict was passed as segments, but it has no 'segments' key; "
                                 "pass result['segments'] or a list of segment dicts.")
        segments = segments["segments"]
    if _is_faster_whisper_pair(segments):
        segments = segments[0]
    if isinstance(segments, list) and all(isinstance(s, dict) for s in segments):
        return segments
    return [s if isinstance(s, dict) else _to_dict(s, i) for i, s in enumerate(_iterate(segments))]


def _is_faster_whisper_pair(value: Any) -> bool:
    """faster-whisper's `transcribe` returns (segment generator, TranscriptionInfo)."""
    return (isinstance(value, tuple) and len(value) == 2
            and hasattr(value[1], "duration") and hasattr(value[1], "language_probability"))


def _iterate(segments: Any) -> Iterable:
    if isinstance(segments, (str, bytes)):
        raise AlignmentError("segments must be a list of segment dicts or objects, not a string.")
    try:
        return list(segments)
    except TypeError:
        raise AlignmentError(f"segments of type {type(segments).__name__} are not a sequence of "
                             "segments.") from None


def _to_dict(segment: Any, index: int) -> dict:
    if dataclasses.is_dataclass(segment) and not isinstance(segment, type):
        data = {f.name: getattr(segment, f.name) for f in dataclasses.fields(segment)}
    elif hasattr(segment, "_asdict"):
        data = dict(segment._asdict())
    elif hasattr(segment, "__dict__") and hasattr(segment, "text"):
        data = {k: v for k, v in vars(segment).items() if not k.startswith("_")}
    else:
        raise AlignmentError(f"segment {index}: cannot read a {type(segment).__name__}; give "
                             "segments 'start', 'end' and 'text' (and 'tokens' if they have them), "
                             "as dicts or as objects with those attributes.")
    data.pop("words", None)
    return {k: v for k, v in data.items() if v is not None}


def words_of(segments: Sequence[Mapping] | Mapping) -> list[dict]:
    """All words of the segments (or of a result dict) in order: WhisperX's `word_segments`."""
    if isinstance(segments, Mapping):
        segments = segments.get("segments") or ()
    return [w for s in segments for w in s.get("words") or ()]


def to_whisperx(result: Mapping | Sequence[Mapping]) -> dict:
    """A new dict in the layout `whisperx.align` returns, from a result or a segment list.

    `{"segments": [{..., "words": [{"word", "start", "end", "score"}]}], "word_segments": [...]}`
    (plus `language` when the result has one). As in WhisperX, words carry no surrounding
    spaces and their probability is called `score`; times stay in seconds. Segment keys other
    than `words` are copied as they are; the input is not changed.
    """
    if isinstance(result, Mapping):
        if "segments" not in result:
            raise AlignmentError("to_whisperx needs a result with a 'segments' key or a list of "
                                 "segment dicts.")
        segments, language = result["segments"], result.get("language")
    else:
        segments, language = result, None
    out_segments = []
    for seg in segments:
        if not isinstance(seg, Mapping):
            raise AlignmentError(f"to_whisperx: a segment is a {type(seg).__name__}, not a dict; "
                                 "align the segments first (align returns dicts).")
        copy = {k: v for k, v in seg.items() if k != "words"}
        copy["words"] = [_whisperx_word(w) for w in seg.get("words") or ()]
        out_segments.append(copy)
    out: dict[str, Any] = {"segments": out_segments, "word_segments": words_of(out_segments)}
    if language is not None:
        out["language"] = language
    return out


def _whisperx_word(word: Mapping) -> dict:
    out = {"word": str(word.get("word", "")).strip()}
    # WhisperX leaves out the times of words it could not align; keep that shape.
    for key in ("start", "end"):
        if word.get(key) is not None:
            out[key] = float(word[key])
    score = word.get("score", word.get("probability"))
    if score is not None:
        out["score"] = float(score)
    return out
