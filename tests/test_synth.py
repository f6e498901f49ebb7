"""Generated speech: word truth matches the text and the waveform, shifts are exact, output is
repeatable, noise has the asked-for SNR (espeak-ng through ctypes, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lightning_align.errors import LightningAlignError
from lightning_align.synth import (
    DEFAULT_VOICES,
    SENTENCES,
    Speech,
    SynthesisError,
    SynthesisInputError,
    concatenate,
    espeak_version,
    long_speech,
    synthesize,
    write_sample,
)

SR = 16000
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# "There were", "in the", "for a", "of the" are pairs espeak-ng would speak as one word event.
TEXT = ("There were twenty seven boats in the harbor, and for a while nobody spoke. "
        "Where's the keeper of the light?")
PUNCT = ".,;:!?\"'()"

try:
    espeak_version()
except SynthesisError as exc:  # libespeak-ng missing: nothing here can run
    pytest.skip(str(exc), allow_module_level=True)


def input_words(text: str) -> list[str]:
    return [t.strip(PUNCT) for t in text.split() if t.strip(PUNCT)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


@pytest.fixture(scope="module")
def gapped() -> Speech:
    """Every word preceded by >= 100 ms of silence."""
    return synthesize(" ".join(SENTENCES[:4]), voice="en-us", word_gap_ms=100)


@pytest.mark.parametrize("voice", DEFAULT_VOICES)
def test_words_match_input_and_are_ordered(voice):
    speech = synthesize(TEXT, voice=voice)
    assert [w.word for w in speech.words] == input_words(TEXT)
    assert speech.text == TEXT and speech.sample_rate == SR
    assert speech.audio.dtype == np.float32 and speech.audio.ndim == 1
    starts = [w.start for w in speech.words]
    assert all(a < b for a, b in zip(starts, starts[1:]))
    for w, nxt in zip(speech.words, speech.words[1:] + (None,)):
        assert 0.0 <= w.start < w.end <= speech.duration
        if nxt is not None:
            assert w.end <= nxt.start
    # The audio starts with the first word's first sample and ends with the last word's last.
    assert speech.words[0].start == 0.0
    assert abs(speech.words[-1].end - speech.duration) < 1.5 / SR


def test_boundaries_match_the_waveform(gapped):
    """Silence (30 ms) before each start after a gap, sound right after it; likewise at ends.
    The 1 ms skipped next to a boundary holds the resampling filter's ringing."""
    a = gapped.audio
    checked = 0
    for prev, w in zip(gapped.words, gapped.words[1:]):
        assert w.start - prev.end >= 0.1
        s, e = round(w.start * SR), round(prev.end * SR)
        assert rms(a[s - 480 : s - 16]) < 1e-4, w  # 30 ms before the start
        assert rms(a[s : s + 800]) > 2e-3, w  # first 50 ms of the word
        assert rms(a[e + 16 : e + 480]) < 1e-4, prev  # 30 ms after the previous word's end
        assert rms(a[e - 800 : e]) > 1e-3, prev
        checked += 1
    assert checked >= 30


def test_lead_in_and_tail_shift_exactly():
    plain = synthesize(TEXT)
    padded = synthesize(TEXT, lead_in_s=0.75, tail_s=0.25)
    assert len(padded.audio) == len(plain.audio) + SR
    assert np.array_equal(padded.audio[12000 : 12000 + len(plain.audio)], plain.audio)
    assert not padded.audio[:12000].any() and not padded.audio[-4000:].any()
    for p, q in zip(plain.words, padded.words):
        assert q.word == p.word
        assert q.start - p.start == pytest.approx(0.75, abs=1e-12)
        assert q.end - p.end == pytest.approx(0.75, abs=1e-12)


def test_concatenate_shifts_words_and_audio():
    parts = [synthesize(t, voice=v) for t, v in zip(SENTENCES[:3], ("en-us", "en-gb", "en-us+f1"))]
    joined = concatenate(parts, [0.5, 1.25])
    second = len(parts[0].audio) + 8000
    offsets = [0, second, second + len(parts[1].audio) + 20000]
    assert len(joined.audio) == offsets[2] + len(parts[2].audio)
    assert joined.text == " ".join(p.text for p in parts)
    words = iter(joined.words)
    for part, offset in zip(parts, offsets):
        assert np.array_equal(joined.audio[offset : offset + len(part.audio)], part.audio)
        for w in part.words:
            j = next(words)
            assert j.word == w.word
            assert j.start == pytest.approx(w.start + offset / SR, abs=1e-12)
            assert j.end == pytest.approx(w.end + offset / SR, abs=1e-12)
    assert not joined.audio[len(parts[0].audio) : offsets[1]].any()
    same = concatenate(parts[:2], 0.5)
    assert np.array_equal(same.audio, joined.audio[: len(same.audio)])
    with pytest.raises(SynthesisInputError, match="gaps_s has 1 values for 3 parts"):
        concatenate(parts, [0.5])


def test_output_depends_only_on_the_call():
    """espeak-ng carries state between utterances; each call must be unaffected by it."""
    kwargs = dict(voice="en-gb", rate_wpm=205, word_gap_ms=20, noise_snr_db=20.0, seed=3)
    first = synthesize(SENTENCES[8], **kwargs)
    synthesize("The new software update", voice="en-us+f1", rate_wpm=100, pitch=20)
    synthesize(SENTENCES[44], voice="en-029", rate_wpm=300, pitch=90)
    again = synthesize(SENTENCES[8], **kwargs)
    assert np.array_equal(first.audio, again.audio) and first.words == again.words
    other_seed = synthesize(SENTENCES[8], **{**kwargs, "seed": 4})
    assert first.words == other_seed.words and not np.array_equal(first.audio, other_seed.audio)
    a, b = long_speech(15, seed=1), long_speech(15, seed=1)
    assert np.array_equal(a.audio, b.audio) and a.words == b.words
    assert long_speech(15, seed=2).text != a.text


def test_threads_get_the_same_output():
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(SENTENCES[i], DEFAULT_VOICES[i % len(DEFAULT_VOICES)]) for i in range(8)]
    serial = [synthesize(t, voice=v) for t, v in jobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda job: synthesize(job[0], voice=job[1]), jobs))
    for a, b in zip(serial, threaded):
        assert np.array_equal(a.audio, b.audio) and a.words == b.words


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_has_requested_snr(color, snr_db):
    clean = synthesize(TEXT, lead_in_s=0.5, tail_s=0.5)
    noisy = synthesize(TEXT, lead_in_s=0.5, tail_s=0.5, noise_snr_db=snr_db, noise=color, seed=7)
    assert noisy.words == clean.words
    noise = noisy.audio.astype(np.float64) - clean.audio
    a, b = round(clean.words[0].start * SR), round(clean.words[-1].end * SR)
    measured = 10 * np.log10(np.mean(clean.audio[a:b].astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.5)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(len(noise), 1 / SR)
    low, high = spectrum[(f > 100) & (f < 200)].mean(), spectrum[(f > 4000) & (f < 8000)].mean()
    # white: flat; pink: 1/f, so 100-200 Hz carries ~30x the power density of 4-8 kHz
    assert (0.7 < low / high < 1.4) if color == "white" else (15 < low / high < 60)


def test_long_speech_covers_its_duration():
    speech = long_speech(60, seed=0)
    assert speech.duration >= 60
    words = speech.words
    assert len(words) > 100
    assert words[0].start <= 2.5 + 1e-3
    assert speech.duration - words[-1].end == pytest.approx(0.5, abs=1e-3)
    gaps = np.array([b.start - a.end for a, b in zip(words, words[1:])])
    assert gaps.min() >= 0 and gaps.max() <= 2.5 + 1e-3
    assert (gaps > 1.0).sum() >= 3  # some long pauses
    starts = [w.start for w in words]
    assert all(a < b for a, b in zip(starts, starts[1:]))
    assert [w.word for w in words] == input_words(speech.text)


def test_bad_input_is_rejected():
    with pytest.raises(SynthesisInputError, match="spell it out") as info:
        synthesize("The year 1990 was cold.")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LightningAlignError)
    with pytest.raises(SynthesisInputError, match="no voice 'xx-nowhere'"):
        synthesize("Hello there.", voice="xx-nowhere")
    with pytest.raises(SynthesisInputError, match="rate_wpm"):
        synthesize("Hello there.", rate_wpm=20)
    with pytest.raises(SynthesisInputError, match="no words"):
        synthesize("... !")


def test_bundled_sample_matches_its_truth(tmp_path):
    record = json.loads((SAMPLES / "sample.json").read_text())
    audio, rate = sf.read(SAMPLES / "sample.wav", dtype="float32")
    assert rate == SR and audio.ndim == 1
    assert len(audio) / SR == pytest.approx(record["duration"], abs=1e-9)
    assert 10 <= record["duration"] <= 12.5
    assert [w["word"] for w in record["words"]] == input_words(record["text"])
    if record["espeak_ng_version"] != espeak_version():
        pytest.skip("bundled sample was made with another espeak-ng version")
    write_sample(tmp_path / "s.wav", tmp_path / "s.json")  # a fresh process-independent copy
    assert json.loads((tmp_path / "s.json").read_text()) == record
    assert np.array_equal(sf.read(tmp_path / "s.wav", dtype="float32")[0], audio)
