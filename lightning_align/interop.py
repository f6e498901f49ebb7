"""Accept segments from other Whisper tools, and hand results back in the WhisperX format."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence


def as_segment_dicts(segments: Any) -> list:
    """Segments as dicts `align` can work on.

    A list of dicts is returned as is (so `align` fills it in place); a result dict
    (`{"segments": [...]}`, openai-whisper / mlx-whisper / WhisperX) gives its segment list;
    other segment objects (faster-whisper's `Segment`, namedtuples, dataclasses) become new
    dicts with the same fields, `words` dropped (they are recomputed).
    """
    if isinstance(segments, dict):
        if "segments" not in segments:
            from .errors import AlignmentError

            raise AlignmentError("a dict was passed as segments, but it has no 'segments' key; "
                                 "pass result['segments'] or a list of segment dicts.")
        segments = segments["segments"]
    if isinstance(segments, list) and all(isinstance(s, dict) for s in segments):
        return segments
    return [s if isinstance(s, dict) else _to_dict(s) for s in _iterate(segments)]


def _iterate(segments: Any) -> Iterable:
    if isinstance(segments, (str, bytes)):
        from .errors import AlignmentError

        raise AlignmentError("segments must be a list of segment dicts or objects, not a string.")
    try:
        return list(segments)
    except TypeError:
        from .errors import AlignmentError

        raise AlignmentError(f"segments of type {type(segments).__name__} are not a sequence of "
                             "segments.") from None


def _to_dict(segment: Any) -> dict:
    if dataclasses.is_dataclass(segment):
        data = dataclasses.asdict(segment)
    elif hasattr(segment, "_asdict"):
        data = dict(segment._asdict())
    elif hasattr(segment, "__dict__"):
        data = dict(vars(segment))
    else:
        from .errors import AlignmentError

        raise AlignmentError(f"cannot read a segment of type {type(segment).__name__}: give it "
                             "'start', 'end' and 'text' (and 'tokens' if it has them).")
    data.pop("words", None)
    return {k: v for k, v in data.items() if v is not None}


def words_of(segments: Sequence[dict]) -> list[dict]:
    """All words of the segments in order (WhisperX's `word_segments`)."""
    return [w for s in segments for w in s.get("words", [])]
