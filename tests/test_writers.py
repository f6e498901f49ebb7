"""Output writers: the files parse strictly, cues never overlap, layout options are respected."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_align.errors import LightningAlignError
from lightning_align.writers import (
    FORMATS,
    OutputError,
    WriterOptions,
    format_timestamp,
    to_json,
    to_srt,
    to_tsv,
    to_txt,
    to_vtt,
    write_result,
)

# ---------------------------------------------------------------------------------------------
# helpers: hand-built results and a strict SRT/VTT parser

TS = r"(\d{2,}):([0-5]\d):([0-5]\d)[,.](\d{3})"


def word(text: str, start: float, end: float) -> dict:
    return {"word": text, "start": start, "end": end, "probability": 0.9}


def segment(i: int, start: float, end: float, text: str, words: list[dict] | None = None) -> dict:
    seg = {
        "id": i, "seek": 0, "start": start, "end": end, "text": text, "tokens": [1, 2],
        "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01, "temperature": 0.0,
    }
    if words is not None:
        seg["words"] = words
    return seg


def result(*segments: dict) -> dict:
    return {"text": "".join(s["text"] for s in segments), "language": "en", "segments": list(segments)}


def words_from(text: str, start: float, step: float = 0.5, dur: float = 0.4) -> list[dict]:
    """Whisper-style words (leading space) for `text`, one every `step` s from `start`."""
    return [word(" " + w, start + i * step, start + i * step + dur) for i, w in enumerate(text.split())]


@dataclass
class Cue:
    start: int  # ms
    end: int  # ms
    lines: list[str]


def _ms(match: re.Match, offset: int) -> int:
    h, m, s, ms = (int(match.group(offset + k)) for k in range(4))
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def _parse_blocks(body: str, marker: str, numbered: bool) -> list[Cue]:
    if body == "":
        return []
    assert body.endswith("\n") and not body.endswith("\n\n"), repr(body[-10:])
    cues = []
    for i, block in enumerate(body[:-1].split("\n\n"), start=1):
        lines = block.split("\n")
        if numbered:
            assert lines.pop(0) == str(i)
        timing = lines.pop(0)
        ts = TS.replace("[,.]", re.escape(marker))
        m = re.fullmatch(f"{ts} --> {ts}", timing)
        assert m, timing
        assert lines, f"empty cue {i}"
        for line in lines:
            assert line and line == line.strip(), repr(line)
            assert "-->" not in line
        cues.append(Cue(_ms(m, 1), _ms(m, 5), lines))
    return cues


def parse_srt(text: str) -> list[Cue]:
    return check_timeline(_parse_blocks(text, ",", numbered=True))


def parse_vtt(text: str) -> list[Cue]:
    assert text.startswith("WEBVTT\n")
    rest = text[len("WEBVTT\n"):]
    if rest:
        assert rest.startswith("\n")
        rest = rest[1:]
    return check_timeline(_parse_blocks(rest, ".", numbered=False))


def check_timeline(cues: list[Cue]) -> list[Cue]:
    prev_end = 0
    for cue in cues:
        assert cue.end >= cue.start
        assert cue.start >= prev_end, "overlapping cues"
        prev_end = cue.end
    return cues


def plain(line: str) -> str:
    return line.replace("<u>", "").replace("</u>", "")


LONG = (
    "The quick brown fox jumps over the lazy dog while an extraordinarily long word like "
    "antidisestablishmentarianism has to sit on a line of its own"
)


# ---------------------------------------------------------------------------------------------
# timestamps


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "00:00:00,000"),
        (1.0006, "00:00:01,001"),
        (59.9996, "00:01:00,000"),
        (3661.5, "01:01:01,500"),
        (360_000.25, "100:00:00,250"),
    ],
)
def test_format_timestamp(seconds: float, expected: str) -> None:
    assert format_timestamp(seconds) == expected
    assert format_timestamp(seconds, decimal_marker=".") == expected.replace(",", ".")


def test_format_timestamp_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_timestamp(-0.5)


# ---------------------------------------------------------------------------------------------
# segment-level subtitles


def test_srt_segments_without_words() -> None:
    r = result(segment(0, 0.0, 2.5, "  Hello there. "), segment(1, 2.5, 4.0, " General Kenobi!"))
    text = to_srt(r)
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nGeneral Kenobi!\n"
    )
    assert [c.lines for c in parse_srt(text)] == [["Hello there."], ["General Kenobi!"]]


def test_vtt_header_and_format() -> None:
    r = result(segment(0, 0.0, 2.5, " Hello there."))
    text = to_vtt(r)
    assert text == "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n"
    assert to_vtt(result()) == "WEBVTT\n"
    assert parse_vtt(to_vtt(result())) == []
    assert to_srt(result()) == ""


def test_segment_over_one_hour() -> None:
    r = result(segment(0, 3599.9, 3725.25, " A long monologue."), segment(1, 7200.0, 7201.0, " Later."))
    cues = parse_srt(to_srt(r))
    assert (cues[0].start, cues[0].end) == (3_599_900, 3_725_250)
    assert to_srt(r).splitlines()[1] == "00:59:59,900 --> 01:02:05,250"
    assert to_vtt(r).splitlines()[2] == "00:59:59.900 --> 01:02:05.250"
    assert cues[1].start == 7_200_000


def test_overlaps_clipped_bad_times_fixed_and_empty_cues_dropped() -> None:
    r = result(
        segment(0, 0.0, 5.0, " first"),
        segment(1, 4.0, 6.0, " second overlaps"),
        segment(2, 6.5, 6.5, "   "),  # empty: no cue
        segment(3, 7.0, 6.0, " ends before it starts"),
        segment(4, 5.0, 5.5, " inside the previous"),
    )
    cues = parse_srt(to_srt(r))
    assert [(c.start, c.end) for c in cues] == [(0, 5000), (5000, 6000), (7000, 7000), (7000, 7000)]
    assert [c.lines[0] for c in cues] == ["first", "second overlaps", "ends before it starts",
                                          "inside the previous"]


def test_arrow_never_in_text() -> None:
    r = result(segment(0, 0.0, 1.0, " a --> b ---> c"))
    srt, vtt = to_srt(r), to_vtt(r)
    parse_srt(srt)
    parse_vtt(vtt)
    assert "a -> b -> c" in srt
    assert "a --&gt; b ---&gt; c" in vtt  # VTT escapes markup characters instead


def test_vtt_escapes_markup() -> None:
    r = result(segment(0, 0.0, 1.0, " Tom & Jerry <3"))
    assert "Tom &amp; Jerry &lt;3" in to_vtt(r)
    assert "Tom & Jerry <3" in to_srt(r)


def test_fallback_without_words_ignores_word_options() -> None:
    r = result(segment(0, 0.0, 9.0, " " + LONG), segment(1, 9.0, 10.0, " short"))
    opts = WriterOptions(highlight_words=True, max_line_width=20, max_line_count=2)
    for cues in (parse_srt(to_srt(r, opts)), parse_vtt(to_vtt(r, opts))):
        assert [(c.start, c.end) for c in cues] == [(0, 9000), (9000, 10000)]  # segment cues
        assert not any("<u>" in line for c in cues for line in c.lines)
        assert " ".join(cues[0].lines) == LONG  # wrapped, nothing lost
        for line in cues[0].lines:
            assert len(line) <= 20 or " " not in line


# ---------------------------------------------------------------------------------------------
# word-level subtitles


def test_words_default_one_cue_per_segment_with_word_bounds() -> None:
    r = result(
        segment(0, 0.0, 3.0, " Hello big world.", words_from("Hello big world.", 0.5)),
        segment(1, 3.0, 5.0, " Grüße, 東京", [word(" Grüße,", 3.2, 3.6), word(" 東京", 3.7, 4.4)]),
    )
    cues = parse_srt(to_srt(r))
    assert [(c.start, c.end, c.lines) for c in cues] == [
        (500, 1900, ["Hello big world."]),
        (3200, 4400, ["Grüße, 東京"]),
    ]


def test_whisperx_words_without_leading_space() -> None:
    words = [word("Hello", 0.0, 0.4), word("world", 0.5, 0.9)]
    r = result(segment(0, 0.0, 1.0, " Hello world", words))
    assert parse_srt(to_srt(r))[0].lines == ["Hello world"]
    ja = [word("東", 0.0, 0.4), word("京", 0.5, 0.9)]
    assert parse_srt(to_srt(result(segment(0, 0.0, 1.0, "東京", ja))))[0].lines == ["東京"]


def test_words_missing_times_and_blank_words() -> None:
    words = [word(" one", 1.0, 1.5), {"word": " two"}, word("  ", 2.0, 2.1), word(" three", 2.5, 3.0)]
    cues = parse_srt(to_srt(result(segment(0, 0.0, 3.0, " one two three", words))))
    assert [(c.start, c.end, c.lines) for c in cues] == [(1000, 3000, ["one two three"])]


def test_highlight_cue_count_and_underline_placement() -> None:
    words = [word(" Hello", 0.0, 0.5), word(" big", 0.5, 1.0), word(" world", 2.0, 2.5)]
    r = result(segment(0, 0.0, 3.0, " Hello big world", words))
    for text, parse in ((to_srt(r, WriterOptions(highlight_words=True)), parse_srt),
                        (to_vtt(r, WriterOptions(highlight_words=True)), parse_vtt)):
        cues = parse(text)
        assert [(c.start, c.end) for c in cues] == [(0, 500), (500, 1000), (1000, 2000), (2000, 2500)]
        assert [c.lines for c in cues] == [
            ["<u>Hello</u> big world"],
            ["Hello <u>big</u> world"],
            ["Hello big world"],  # filler for the gap: nothing underlined
            ["Hello big <u>world</u>"],
        ]


def test_highlight_underlines_within_its_line() -> None:
    text = "alpha beta gamma delta epsilon"
    r = result(segment(0, 0.0, 5.0, " " + text, words_from(text, 0.0, step=0.5, dur=0.5)))
    opts = WriterOptions(highlight_words=True, max_line_width=11)
    cues = parse_srt(to_srt(r, opts))
    assert len(cues) == 5  # contiguous words: no fillers
    expected_lines = ["alpha beta", "gamma delta", "epsilon"]
    for i, cue in enumerate(cues):
        assert [plain(line) for line in cue.lines] == expected_lines
        marked = [line for line in cue.lines if "<u>" in line]
        assert len(marked) == 1 and marked[0].count("<u>") == marked[0].count("</u>") == 1
        assert re.search(rf"<u>{text.split()[i]}</u>", marked[0])


def test_highlight_overlapping_words_do_not_overlap() -> None:
    words = [word(" a", 0.0, 1.0), word(" b", 0.5, 0.8), word(" c", 0.9, 2.0)]
    cues = parse_srt(to_srt(result(segment(0, 0.0, 2.0, " a b c", words)),
                            WriterOptions(highlight_words=True)))
    assert [(c.start, c.end) for c in cues] == [(0, 1000), (1000, 1000), (1000, 2000)]


def test_line_width_and_count_respected() -> None:
    half = len(LONG.split()) // 2
    first, second = " ".join(LONG.split()[:half]), " ".join(LONG.split()[half:])
    r = result(
        segment(0, 0.0, 20.0, " " + first, words_from(first, 0.0)),
        segment(1, 20.0, 40.0, " " + second, words_from(second, 20.0)),
    )
    opts = WriterOptions(max_line_width=20, max_line_count=2)
    for cues in (parse_srt(to_srt(r, opts)), parse_vtt(to_vtt(r, opts))):
        assert len(cues) > 2
        for cue in cues:
            assert len(cue.lines) <= 2
            for line in cue.lines:
                assert len(line) <= 20 or " " not in line
        all_words = " ".join(line for c in cues for line in c.lines).split()
        assert all_words == LONG.split()
    assert "antidisestablishmentarianism" in to_srt(r, opts).splitlines()


def test_width_and_count_flow_across_segments_but_break_at_long_pause() -> None:
    r = result(
        segment(0, 0.0, 1.0, " one two", words_from("one two", 0.0)),
        segment(1, 1.0, 2.0, " three", words_from("three", 1.0)),
        segment(2, 8.0, 9.0, " four", words_from("four", 8.0)),  # 6.6 s pause before it
    )
    cues = parse_srt(to_srt(r, WriterOptions(max_line_width=40, max_line_count=2)))
    assert [c.lines for c in cues] == [["one two three"], ["four"]]
    # With only a width, segments stay separate cues (as openai-whisper).
    cues = parse_srt(to_srt(r, WriterOptions(max_line_width=40)))
    assert [c.lines for c in cues] == [["one two"], ["three"], ["four"]]


def test_max_line_count_alone_breaks_cues() -> None:
    text = "a b c d e f g"
    r = result(segment(0, 0.0, 4.0, " " + text, words_from(text, 0.0)))
    cues = parse_srt(to_srt(r, WriterOptions(max_words_per_line=2, max_line_count=2)))
    assert [c.lines for c in cues] == [["a b", "c d"], ["e f", "g"]]


def test_max_words_per_line_makes_short_cues() -> None:
    text = "a b c d e f g"
    r = result(segment(0, 0.0, 4.0, " " + text, words_from(text, 0.0)))
    cues = parse_srt(to_srt(r, WriterOptions(max_words_per_line=3)))
    assert [c.lines for c in cues] == [["a b c"], ["d e f"], ["g"]]
    assert [(c.start, c.end) for c in cues] == [(0, 1400), (1500, 2900), (3000, 3400)]


# ---------------------------------------------------------------------------------------------
# TSV, TXT, JSON


def test_tsv_integer_milliseconds() -> None:
    r = result(segment(0, 0.0, 1.2345, " Hello\tthere"), segment(1, 3599.9996, 3725.25, " Grüße,\n東京 "))
    assert to_tsv(r) == "start\tend\ttext\n0\t1234\tHello there\n3600000\t3725250\tGrüße, 東京\n"
    for row in to_tsv(r).splitlines()[1:]:
        start, end, _ = row.split("\t")
        assert start.isdigit() and end.isdigit()


def test_txt() -> None:
    r = result(segment(0, 0.0, 1.0, " Hello. "), segment(1, 1.0, 2.0, "  "), segment(2, 2.0, 3.0, "Grüße"))
    assert to_txt(r) == "Hello.\nGrüße\n"


def test_json_keeps_everything_as_given() -> None:
    r = result(segment(0, 0.1 + 0.2, 1.0, " Grüße, 東京", [word(" Grüße,", 0.30000000000000004, 0.7)]))
    text = to_json(r)
    assert "Grüße, 東京" in text  # not \u escaped
    assert json.loads(text) == r
    assert "word_segments" not in json.loads(text)
    data = json.loads(to_json(r, WriterOptions(word_level=True)))
    assert data["word_segments"] == r["segments"][0]["words"]
    assert "word_segments" not in r  # input untouched


# ---------------------------------------------------------------------------------------------
# write_result


UNICODE = result(
    segment(0, 0.0, 2.0, " Grüße, 東京", [word(" Grüße,", 0.1, 0.8), word(" 東京", 0.9, 1.8)]),
    segment(1, 3600.0, 3601.5, " über eine Stunde", words_from("über eine Stunde", 3600.0)),
)


def test_write_result_all_formats_utf8_and_no_temp_files(tmp_path: Path) -> None:
    paths = write_result(UNICODE, tmp_path / "out" / "talk", FORMATS)
    assert [p.name for p in paths] == [f"talk.{ext}" for ext in FORMATS]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(p.name for p in paths)
    texts = {p.suffix[1:]: p.read_bytes().decode("utf-8") for p in paths}
    assert json.loads(texts["json"]) == UNICODE
    assert texts["srt"] == to_srt(UNICODE) and texts["vtt"] == to_vtt(UNICODE)
    assert "Grüße, 東京" in texts["srt"] and "Grüße, 東京" in texts["txt"]
    parse_srt(texts["srt"])
    parse_vtt(texts["vtt"])
    # Overwriting in place also leaves nothing behind.
    write_result(UNICODE, tmp_path / "out" / "talk", ["srt"], WriterOptions(highlight_words=True))
    assert sorted(os.listdir(tmp_path / "out")) == sorted(p.name for p in paths)
    assert "<u>" in (tmp_path / "out" / "talk.srt").read_text(encoding="utf-8")


def test_write_result_directory_and_name(tmp_path: Path) -> None:
    assert write_result(UNICODE, tmp_path, "srt", name="clip") == [tmp_path / "clip.srt"]
    with pytest.raises(OutputError, match="name="):
        write_result(UNICODE, tmp_path, ["srt"])


def test_unknown_format_names_valid_ones_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        write_result(UNICODE, tmp_path / "talk", ["srt", "docx"])
    message = str(info.value)
    assert "docx" in message and all(fmt in message for fmt in FORMATS)
    assert isinstance(info.value, LightningAlignError)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "talk.srt"
    target.write_text("old", encoding="utf-8")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_result(UNICODE, tmp_path / "talk", ["srt"])
    assert os.listdir(tmp_path) == ["talk.srt"]
    assert target.read_text(encoding="utf-8") == "old"


def test_writer_options_validated() -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            WriterOptions(max_line_width=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# property: any word list gives a valid, non-overlapping SRT that respects the layout options

word_text = st.text(
    alphabet=st.sampled_from(list("abcxyzÄß東京'-.,!?")), min_size=1, max_size=12
)


@st.composite
def word_results(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 40))
    t = draw(st.floats(0, 4000))
    words = []
    for _ in range(n):
        t = max(0.0, t + draw(st.floats(-0.5, 5.0)))  # gaps, touching and overlapping words
        duration = draw(st.floats(0.0, 2.0))
        words.append(word(" " + draw(word_text), t, t + duration))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    segments = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, n])):
        ws = words[a:b]
        if ws:
            segments.append(segment(i, ws[0]["start"], ws[-1]["end"], "".join(w["word"] for w in ws), ws))
    return result(*segments)


options = st.builds(
    WriterOptions,
    highlight_words=st.booleans(),
    max_line_width=st.one_of(st.none(), st.integers(1, 40)),
    max_line_count=st.one_of(st.none(), st.integers(1, 4)),
    max_words_per_line=st.one_of(st.none(), st.integers(1, 6)),
)


@settings(max_examples=300, deadline=None)
@given(word_results(), options)
def test_property_srt_always_valid(r: dict, opts: WriterOptions) -> None:
    cues = parse_srt(to_srt(r, opts))
    vtt_cues = parse_vtt(to_vtt(r, opts))
    assert [(c.start, c.end) for c in cues] == [(c.start, c.end) for c in vtt_cues]
    line_count = opts.max_line_count or (1 if opts.max_words_per_line else None)
    for cue in cues:
        if line_count is not None:
            assert len(cue.lines) <= line_count
        for line in map(plain, cue.lines):
            if opts.max_line_width is not None:
                assert len(line) <= opts.max_line_width or " " not in line
            if opts.max_words_per_line is not None:
                assert len(line.split()) <= opts.max_words_per_line
        if opts.highlight_words:
            assert sum(line.count("<u>") for line in cue.lines) <= 1
    if not opts.highlight_words:
        # Every word appears once, in order ("-->" cannot occur: no ">" in the alphabet).
        shown = " ".join(line for c in cues for line in c.lines).split()
        assert shown == [w["word"].strip() for s in r["segments"] for w in s["words"]]
