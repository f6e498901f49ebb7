"""Write alignment results as JSON, SRT, WebVTT, TSV or plain text.

A result is an openai-whisper / WhisperX style dict::

    {"text": str, "language": str,
     "segments": [{"start": s, "end": s, "text": str, ...,
                   "words": [{"word": " Hello", "start": s, "end": s, "probability": p}]}]}

All times in a result are seconds; the files carry milliseconds (SRT/VTT timestamps, TSV integers).
The subtitle layout follows openai-whisper's ``SubtitlesWriter.iterate_result``; on top of it the
writers guarantee well-formed files: cues never overlap, no cue ends before it starts, no cue is
empty, and no cue text contains the ``-->`` arrow that would end a cue early.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import LightningAlignError
from .files import write_atomic

FORMATS: tuple[str, ...] = ("json", "srt", "vtt", "tsv", "txt")

# openai-whisper's threshold: a silence longer than this starts a new cue when words flow across
# segments, so one cue never stays on screen through a long pause.
LONG_PAUSE_S = 3.0

__all__ = [
    "FORMATS",
    "LONG_PAUSE_S",
    "OutputError",
    "WriterOptions",
    "format_timestamp",
    "to_json",
    "to_srt",
    "to_tsv",
    "to_txt",
    "to_vtt",
    "write_result",
]


class OutputError(LightningAlignError, ValueError):
    """An output format, destination or writer option cannot be used."""


@dataclass(frozen=True)
class WriterOptions:
    """How results are laid out in the output files.

    Attributes:
        highlight_words: SRT/VTT: one cue per word, the spoken word underlined (``<u>``) in its
            line, karaoke style. Needs word timings; without them cues are per segment.
        max_line_width: SRT/VTT: most characters in a subtitle line (a single longer word gets a
            line of its own). Needs word timings to re-flow; without them segment text is wrapped.
        max_line_count: SRT/VTT: most lines in one cue (word timings needed). When given together
            with ``max_line_width``, words flow across segment boundaries and a new cue starts
            after this many lines or a pause longer than ``LONG_PAUSE_S`` seconds.
        max_words_per_line: SRT/VTT: most words in a line. Without ``max_line_count`` every line
            is a cue of its own, which is what openai-whisper's option of that name produces.
        word_level: JSON only: also write a flat top-level ``"word_segments"`` list of all
            words (WhisperX's layout). The default JSON already holds everything the result has,
            words included.
    """

    highlight_words: bool = False
    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None
    word_level: bool = False

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            # bool is an int subclass; True as a width is surely a mistake.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise OutputError(
                    f"WriterOptions.{name} must be None or an integer >= 1, got {value!r}"
                )


# --------------------------------------------------------------------------------------------
# timestamps


def _to_ms(seconds: Any, default: int) -> int:
    """Seconds (number or None) -> integer milliseconds >= 0; missing or NaN -> ``default``."""
    if seconds is None:
        return default
    value = float(seconds)
    if not math.isfinite(value):
        return default
    return max(0, round(value * 1000))


def _format_ms(ms: int, decimal_marker: str) -> str:
    # Hours are not wrapped at 24 or 99: a 100-hour recording gets "100:00:00,000".
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1_000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal_marker}{millis:03d}"


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """Format ``seconds`` (>= 0) as ``HH:MM:SS,mmm``, rounded to the millisecond.

    Use ``decimal_marker="."`` for WebVTT. Hours always have at least two digits and may exceed 99.
    """
    if not (math.isfinite(seconds) and seconds >= 0):
        raise OutputError(f"timestamp must be a finite number of seconds >= 0, got {seconds!r}")
    return _format_ms(round(seconds * 1000), decimal_marker)


# --------------------------------------------------------------------------------------------
# subtitle layout


@dataclass(frozen=True)
class _Word:
    start: int  # ms
    end: int  # ms, >= start
    text: str  # no surrounding whitespace, never empty
    sep: str  # " " or "": what goes before it when it does not start a line


@dataclass
class _Cue:
    lines: list[list[_Word]]
    timed: bool  # the words carry their own timings (otherwise they share the segment's)


def _segment_words(segment: Mapping[str, Any]) -> list[_Word]:
    """The segment's timed words, cleaned: whitespace-only words dropped, missing times filled."""
    raw_words = [w for w in segment.get("words") or () if str(w.get("word") or "").strip()]
    # Whisper's words carry their leading space; WhisperX's do not. If no word has one but the
    # segment text has spaces, the words are space separated (else, e.g. Japanese, joined).
    if any(str(w["word"])[:1].isspace() for w in raw_words):
        spaced = None
    else:
        spaced = " " in str(segment.get("text") or "").strip()
    cursor = _to_ms(segment.get("start"), 0)
    words = []
    for raw in raw_words:
        text = str(raw["word"])
        # A word without timings (WhisperX leaves some unaligned) sits where the previous ended.
        start = _to_ms(raw.get("start"), cursor)
        end = max(start, _to_ms(raw.get("end"), start))
        sep = " " if (text[:1].isspace() if spaced is None else spaced) else ""
        words.append(_Word(start, end, " ".join(text.split()), sep))
        cursor = end
    return words


def _line_width(line: list[_Word]) -> int:
    """Characters the line shows (code points; the separator before its first word is dropped)."""
    return sum(len(w.sep) + len(w.text) for w in line) - len(line[0].sep)


def _fits(line: list[_Word], word: _Word, options: WriterOptions) -> bool:
    width, per_line = options.max_line_width, options.max_words_per_line
    if per_line is not None and len(line) >= per_line:
        return False
    return width is None or _line_width(line) + len(word.sep) + len(word.text) <= width


def _wrap(words: list[_Word], options: WriterOptions) -> list[list[_Word]]:
    lines: list[list[_Word]] = []
    for word in words:
        if lines and _fits(lines[-1], word, options):
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def _layout(result: Mapping[str, Any], options: WriterOptions) -> list[_Cue]:
    """Group the result's words into cues of lines (openai-whisper's ``iterate_result`` rules)."""
    line_count = options.max_line_count
    if line_count is None and options.max_words_per_line is not None:
        line_count = 1
    # As in openai-whisper, only width and count together let cues cross segment boundaries.
    flow = options.max_line_width is not None and options.max_line_count is not None
    long_pause_ms = round(LONG_PAUSE_S * 1000)

    cues: list[_Cue] = []
    lines: list[list[_Word]] = []
    prev_end = 0

    def close() -> None:
        nonlocal lines
        if lines:
            cues.append(_Cue(lines, timed=True))
            lines = []

    for segment in result.get("segments") or ():
        words = _segment_words(segment)
        if not words:
            # No word timings: one cue for the segment, its text wrapped but never split in time.
            close()
            start = _to_ms(segment.get("start"), 0)
            end = max(start, _to_ms(segment.get("end"), start))
            tokens = [_Word(start, end, t, " ") for t in str(segment.get("text") or "").split()]
            if tokens:
                cues.append(_Cue(_wrap(tokens, options), timed=False))
            continue
        if not flow:
            close()
        for word in words:
            if lines and flow and word.start - prev_end > long_pause_ms:
                close()
            if lines and _fits(lines[-1], word, options):
                lines[-1].append(word)
            elif lines and (line_count is None or len(lines) < line_count):
                lines.append([word])
            else:
                close()
                lines = [[word]]
            prev_end = word.end
    close()
    return cues


def _render(lines: list[list[_Word]], escape: Callable[[str], str], underline: int = -1) -> str:
    """Cue text: one text line per line, the ``underline``-th word of the cue wrapped in <u>."""
    out = []
    index = 0
    for line in lines:
        parts = []
        for j, word in enumerate(line):
            text = escape(word.text)
            if index == underline:
                text = f"<u>{text}</u>"
            parts.append((word.sep if j else "") + text)
            index += 1
        out.append("".join(parts))
    return "\n".join(out)


def _cues(
    result: Mapping[str, Any], options: WriterOptions, escape: Callable[[str], str]
) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of every cue, in order, non-overlapping and non-empty."""
    raw: list[tuple[int, int, str]] = []
    for cue in _layout(result, options):
        words = [w for line in cue.lines for w in line]
        start, end = min(w.start for w in words), max(w.end for w in words)
        if not (options.highlight_words and cue.timed):
            raw.append((start, end, _render(cue.lines, escape)))
            continue
        plain = _render(cue.lines, escape)
        cursor = start
        for i, word in enumerate(words):
            if word.start > cursor:  # a gap between words: show the line, nothing underlined
                raw.append((cursor, word.start, plain))
            raw.append((word.start, word.end, _render(cue.lines, escape, underline=i)))
            cursor = max(cursor, word.end)

    cues = []
    prev_end = 0
    for start, end, text in raw:
        # "-->" would end the cue text early in both formats ("--->" too, hence the regex).
        text = re.sub(r"-{2,}>", "->", text).strip()
        if not text:
            continue
        # Word timings may overlap; players then show two cues at once, so clip instead.
        start = max(start, prev_end)
        end = max(end, start)
        cues.append((start, end, text))
        prev_end = end
    return cues


def _no_escape(text: str) -> str:
    return text


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: a literal "&" or "<" must be written as an entity.
    return html.escape(text, quote=False)


# --------------------------------------------------------------------------------------------
# formats


def to_srt(result: Mapping[str, Any], options: WriterOptions | None = None) -> str:
    """SubRip text: cues numbered from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line between."""
    options = options or WriterOptions()
    blocks = [
        f"{i}\n{_format_ms(start, ',')} --> {_format_ms(end, ',')}\n{text}"
        for i, (start, end, text) in enumerate(_cues(result, options, _no_escape), start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def to_vtt(result: Mapping[str, Any], options: WriterOptions | None = None) -> str:
    """WebVTT text: ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues (unnumbered)."""
    options = options or WriterOptions()
    blocks = [
        f"{_format_ms(start, '.')} --> {_format_ms(end, '.')}\n{text}"
        for start, end, text in _cues(result, options, _vtt_escape)
    ]
    return "\n\n".join(["WEBVTT", *blocks]) + "\n"


def to_tsv(result: Mapping[str, Any], options: WriterOptions | None = None) -> str:
    """Tab-separated ``start``, ``end`` (integer milliseconds) and ``text``, one row per segment.

    Integer milliseconds avoid locale-dependent decimal separators. Tabs and newlines in the text
    become spaces so that every segment stays one row.
    """
    rows = ["start\tend\ttext"]
    for segment in result.get("segments") or ():
        start = _to_ms(segment.get("start"), 0)
        end = _to_ms(segment.get("end"), start)
        text = " ".join(str(segment.get("text") or "").split())
        rows.append(f"{start}\t{end}\t{text}")
    return "\n".join(rows) + "\n"


def to_txt(result: Mapping[str, Any], options: WriterOptions | None = None) -> str:
    """Plain text: each non-empty segment's stripped text on a line of its own."""
    lines = [str(s.get("text") or "").strip() for s in result.get("segments") or ()]
    return "".join(line + "\n" for line in lines if line)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays (e.g. float32 probabilities) have .tolist(); json knows neither.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(result: Mapping[str, Any], options: WriterOptions | None = None) -> str:
    """The whole result as one line of JSON (non-ASCII kept as is, numbers unrounded)."""
    options = options or WriterOptions()
    data = dict(result)
    if options.word_level and "word_segments" not in data:
        segments = data.get("segments") or ()
        data["word_segments"] = [w for s in segments for w in s.get("words") or ()]
    return json.dumps(data, ensure_ascii=False, default=_json_default) + "\n"


_WRITERS: dict[str, Callable[[Mapping[str, Any], WriterOptions | None], str]] = {
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
    "tsv": to_tsv,
    "txt": to_txt,
}


def _check_formats(formats: Iterable[str] | str) -> list[str]:
    if isinstance(formats, str):  # "srt" must not be read as "s", "r", "t"
        formats = FORMATS if formats.lower() == "all" else (formats,)
    wanted: list[str] = []
    for fmt in formats:
        key = str(fmt).lower().lstrip(".")
        if key not in _WRITERS:
            raise OutputError(
                f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)} (or 'all')"
            )
        if key not in wanted:
            wanted.append(key)
    return wanted


def write_result(
    result: Mapping[str, Any],
    dest: str | os.PathLike[str],
    formats: Iterable[str] | str = FORMATS,
    options: WriterOptions | None = None,
    *,
    name: str | None = None,
) -> list[Path]:
    """Write ``result`` in each of ``formats`` and return the paths written, in format order.

    Args:
        result: a transcription/alignment result dict (times in seconds).
        dest: a path stem such as ``out/talk`` (files ``out/talk.srt``, ...; the stem is used as
            given, so pass it without an extension), or a directory when ``name`` is given.
        formats: names from ``FORMATS`` (case-insensitive), or ``"all"``.
        options: layout options; the defaults write one cue per segment.
        name: file stem inside the directory ``dest``.

    Every file is written to a temp file in its directory and renamed over the target, so an
    interrupted write never leaves a partial file. Missing directories are created. All formats
    are rendered before the first file is written, so a bad format or result writes nothing.

    Raises:
        OutputError: unknown format, or ``dest`` is a directory and no ``name`` was given.
    """
    wanted = _check_formats(formats)
    texts = {fmt: _WRITERS[fmt](result, options) for fmt in wanted}

    dest_str = os.fspath(dest)
    if name is not None:
        stem = Path(dest_str) / name
    elif dest_str.endswith(("/", os.sep)) or Path(dest_str).is_dir():
        raise OutputError(
            f"{dest_str!r} is a directory; pass name='...' for the file stem, or pass a path stem "
            "such as 'out/talk'"
        )
    else:
        stem = Path(dest_str)

    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, text in texts.items():
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_atomic(path, text.encode("utf-8"))
        paths.append(path)
    return paths
