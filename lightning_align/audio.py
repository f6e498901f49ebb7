"""Load audio as 16 kHz mono float32, from files (ffmpeg, else soundfile), bytes or arrays."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 16000
MIN_DURATION_S = 0.1

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]


def load_audio(audio: AudioInput, *, sample_rate: int | None = None, name: str | None = None) -> np.ndarray:
    """Return `audio` as a 1-D float32 array at 16 kHz in [-1, 1].

    `audio` is a file path, the bytes of an audio file, or an array of samples (1-D mono, or 2-D
    (samples, channels) / (channels, samples), float or integer PCM) at `sample_rate` Hz (default
    16 kHz). Stereo is averaged; other rates are resampled; integer PCM is scaled to [-1, 1].
    `name` labels the input in error messages. Raises `AudioError` for anything unusable.
    """
    if isinstance(audio, np.ndarray):
        return _from_array(audio, sample_rate or SAMPLE_RATE, name or "the audio array")
    if isinstance(audio, (bytes, bytearray, memoryview)):
        label = name or "the audio bytes"
        data = bytes(audio)
        if not data:
            raise AudioError(f"{label}: empty (0 bytes); pass the contents of an audio file.")
        return _finish(_decode(data, label), label)
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        label = name or str(path)
        if not path.exists():
            raise AudioError(f"{label}: no such file; check the path.")
        if path.is_dir():
            raise AudioError(f"{label}: a directory, not an audio file; pass the files inside it.")
        if path.stat().st_size == 0:
            raise AudioError(f"{label}: empty file (0 bytes); it was not written completely.")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise AudioError(f"{label}: cannot read it ({e.strerror}).") from None
        return _finish(_decode(data, label), label)
    raise AudioError(f"unsupported audio input of type {type(audio).__name__}: pass a path, "
                     "bytes, or a numpy array of samples.")


def _decode(data: bytes, label: str) -> np.ndarray:
    """Decode file bytes with ffmpeg (any format it knows), else with libsndfile."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
               "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
        proc = subprocess.run(cmd, input=data, capture_output=True)
        if proc.returncode == 0 and proc.stdout:
            samples = np.frombuffer(proc.stdout, np.float32).copy()
            if proc.stderr and b"Invalid data" in proc.stderr and samples.size < SAMPLE_RATE * MIN_DURATION_S:
                raise AudioError(f"{label}: corrupt or truncated audio (ffmpeg: "
                                 f"{proc.stderr.decode(errors='replace').strip()[:200]}).")
            return samples
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = message[-1] if message else "no audio stream decoded"
        if proc.returncode == 0:
            detail = "no audio samples in it"
        raise AudioError(f"{label}: not readable as audio ({detail}). Convert it to WAV/FLAC/MP3, "
                         "or check that the file is complete.")
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as e:
        raise AudioError(f"{label}: not readable as audio ({e}). Install ffmpeg for more formats "
                         "(apt-get install ffmpeg), or convert it to WAV/FLAC.") from None
    return _resample(samples.mean(axis=1), rate)


def _from_array(audio: np.ndarray, rate: int, label: str) -> np.ndarray:
    if audio.size == 0:
        raise AudioError(f"{label}: zero samples; there is no audio to transcribe.")
    if audio.ndim == 2:
        # Channels are the short axis: (samples, channels) or (channels, samples).
        audio = audio.mean(axis=1 if audio.shape[1] <= audio.shape[0] else 0)
    elif audio.ndim != 1:
        raise AudioError(f"{label}: shape {audio.shape}; expected 1-D samples or 2-D "
                         "(samples, channels).")
    if np.issubdtype(audio.dtype, np.integer):
        info = np.iinfo(audio.dtype)
        audio = (audio.astype(np.float64) - (info.max + 1 + info.min) / 2) / (info.max + 1)
    elif not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"{label}: dtype {audio.dtype} is not audio samples; use float or integer PCM.")
    if rate <= 0:
        raise AudioError(f"{label}: sample rate {rate} Hz is not positive.")
    return _finish(_resample(np.asarray(audio, np.float32), rate), label)


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate), SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)


def _finish(audio: np.ndarray, label: str) -> np.ndarray:
    if audio.size == 0:
        raise AudioError(f"{label}: decoded to zero samples; the file holds no audio.")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = int((~finite).sum())
        raise AudioError(f"{label}: {bad} of {audio.size} samples are NaN or infinite; the audio "
                         "is corrupt. Replace them (e.g. np.nan_to_num) if you want it transcribed.")
    if audio.size < SAMPLE_RATE * MIN_DURATION_S:
        raise AudioError(f"{label}: only {audio.size / SAMPLE_RATE * 1000:.0f} ms of audio; at least "
                         f"{MIN_DURATION_S * 1000:.0f} ms are needed.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        # Float input outside [-1, 1] is almost always unscaled integer PCM.
        audio = audio / (32768.0 if peak <= 32768.0 * 1.01 else peak)
    return np.ascontiguousarray(audio, dtype=np.float32)
