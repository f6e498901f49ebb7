"""Load audio as 16 kHz mono float32, from files (ffmpeg, else soundfile), bytes or arrays.

Everything a user can pass is checked here, so that nothing downstream (the mel front end,
MLX, the DTW kernels) ever sees audio it cannot work with: unreadable, corrupt or truncated
files, non-finite samples, odd shapes, dtypes and sample rates all raise `AudioError`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from .errors import AudioError

log = logging.getLogger("lightning_align")

SAMPLE_RATE = 16000
MIN_DURATION_S = 0.1
MIN_RATE_HZ, MAX_RATE_HZ = 1000, 768_000
# Decoded audio this much shorter than the container declares means the file is cut short.
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRACTION = 0.05

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]

# Warnings by which ffmpeg's demuxers report a file shorter than its header says.
_DAMAGE_WARNINGS = ("filesize and duration do not match", "ended prematurely", "runcat",
                    "Packet corrupt", "corrupt input packet")
_DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def load_audio(audio: AudioInput, *, sample_rate: int | None = None, name: str | None = None) -> np.ndarray:
    """Return `audio` as a 1-D float32 array at 16 kHz in [-1, 1].

    `audio` is a file path, the bytes of an audio file, or an array of samples (1-D mono, or 2-D
    (samples, channels) / (channels, samples), float or integer PCM) at `sample_rate` Hz (default
    16 kHz). Stereo is averaged; other rates are resampled; integer PCM is scaled to [-1, 1].
    `name` labels the input in error messages. Raises `AudioError` for anything unusable:
    missing, empty, unreadable, corrupt or truncated files, fewer than 0.1 s of audio, NaN or
    infinite samples, and arrays of other shapes or dtypes.
    """
    if isinstance(audio, np.ndarray):
        label = name or "the audio array"
        return _from_array(audio, _check_rate(sample_rate, label), label)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        label = name or "the audio bytes"
        data = bytes(audio)
        if not data:
            raise AudioError(f"{label}: empty (0 bytes); pass the contents of an audio file.")
        return _finish(_decode(data, label), label)
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        label = name or str(path)
        _check_file(path, label)
        return _finish(_decode(path, label), label)
    raise AudioError(f"unsupported audio input of type {type(audio).__name__}: pass a path, "
                     "bytes, or a numpy array of samples.")


def _check_rate(rate, label: str) -> int:
    if rate is None:
        return SAMPLE_RATE
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
            or not float(rate).is_integer():
        raise AudioError(f"{label}: sample rate {rate!r} is not a whole number of Hz; pass e.g. "
                         "sample_rate=44100.")
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise AudioError(f"{label}: sample rate {rate} Hz is outside {MIN_RATE_HZ}-{MAX_RATE_HZ} "
                         "Hz; pass the rate the samples were recorded at (in Hz).")
    return int(rate)


def _check_file(path: Path, label: str) -> None:
    try:
        if not path.exists():
            raise AudioError(f"{label}: no such file; check the path.")
        if path.is_dir():
            raise AudioError(f"{label}: a directory, not an audio file; pass the files inside it.")
        if path.stat().st_size == 0:
            raise AudioError(f"{label}: empty file (0 bytes); it was not written completely.")
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{label}: cannot read it ({e.strerror}); check its permissions.") from None


def _decode(source: bytes | Path, label: str) -> np.ndarray:
    """Decode a file (path or bytes) with ffmpeg (any format it knows), else with libsndfile."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        samples, declared_s, errors = _ffmpeg(ffmpeg, source, label)
    else:
        samples, declared_s, errors = _soundfile(source, label), None, []
    _check_complete(source, samples, declared_s, errors, label)
    return samples


def _ffmpeg(ffmpeg: str, source: bytes | Path, label: str) -> tuple[np.ndarray, float | None, list[str]]:
    # A path goes to ffmpeg directly (it may seek, e.g. to an MP4's index at the end); "file:"
    # keeps names such as "concat:x" or "-x" from being read as protocols or options.
    target = f"file:{source.resolve()}" if isinstance(source, Path) else "pipe:0"
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info",
           "-i", target, "-map", "0:a:0", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    try:
        proc = subprocess.run(cmd, input=source if isinstance(source, bytes) else None,
                              capture_output=True)
    except OSError as e:
        raise AudioError(f"{label}: cannot run ffmpeg ({e.strerror}).") from None
    lines = proc.stderr.decode(errors="replace").splitlines()
    errors = [_strip_level(line) for line in lines if "[error]" in line or "[fatal]" in line
              or ("[warning]" in line and any(w in line for w in _DAMAGE_WARNINGS))]
    if proc.returncode != 0 or not proc.stdout:
        if any("matches no streams" in e for e in errors):
            detail = "it holds no audio stream"
        elif proc.returncode == 0:
            detail = "no audio samples in it"
        else:
            detail = errors[-1] if errors else f"ffmpeg exit status {proc.returncode}"
        raise AudioError(f"{label}: not readable as audio ({detail}). Check that it is a complete "
                         "audio or video file, or convert it to WAV/FLAC/MP3.")
    # ffmpeg writes whole float32 samples; an odd tail would only come from a killed process.
    data = proc.stdout[: len(proc.stdout) // 4 * 4]
    samples = np.frombuffer(data, np.float32).copy()
    match = _DURATION.search(proc.stderr)
    declared = None
    if match and b"Estimating duration from bitrate" not in proc.stderr:
        h, m, s = match.groups()
        declared = int(h) * 3600 + int(m) * 60 + float(s)
    return samples, declared, errors


def _strip_level(line: str) -> str:
    return re.sub(r"^(\[[^\]]*@ 0x[0-9a-f]+\] )?\[(error|fatal|warning)\] ", "", line).strip()


def _soundfile(source: bytes | Path, label: str) -> np.ndarray:
    import soundfile

    try:
        samples, rate = soundfile.read(source if isinstance(source, Path) else io.BytesIO(source),
                                       dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as e:
        raise AudioError(f"{label}: not readable as audio ({e}). Install ffmpeg for more formats "
                         "(apt-get install ffmpeg), or convert it to WAV/FLAC.") from None
    return _resample(samples.mean(axis=1), rate)


def _check_complete(source: bytes | Path, samples: np.ndarray, declared_s: float | None,
                    errors: list[str], label: str) -> None:
    """Refuse audio that is clearly cut short or damaged; a few bad frames only warn, so that a
    long recording is not lost to one glitch."""
    decoded_s = samples.size / SAMPLE_RATE
    wav_s = _wav_declared_s(source)
    for expected_s in (wav_s, declared_s if errors else None):
        if expected_s is None:
            continue
        missing = expected_s - decoded_s
        if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * expected_s):
            why = f"; the decoder reported: {errors[0]}" if errors else ""
            raise AudioError(f"{label}: truncated or corrupt: it declares {expected_s:.2f} s of "
                             f"audio but only {decoded_s:.2f} s could be decoded{why}. Copy or "
                             "export the file again; to keep what is readable, re-encode it "
                             "(ffmpeg -i IN -c:a flac OUT.flac).")
    if errors:
        if samples.size < SAMPLE_RATE * MIN_DURATION_S:
            raise AudioError(f"{label}: corrupt audio ({errors[0]}); only "
                             f"{decoded_s * 1000:.0f} ms could be decoded. Copy or export it again.")
        log.warning("%s: %d decoding error(s) (first: %s); transcribing the %.1f s that decoded",
                    label, len(errors), errors[0], decoded_s)


def _wav_declared_s(source: bytes | Path) -> float | None:
    """Seconds of audio a RIFF/WAVE header declares beyond what the file holds, as a duration
    the decoder should have reached; None when not a WAV or the header is not finalized."""
    try:
        if isinstance(source, Path):
            with open(source, "rb") as f:
                return _wav_walk(f, source.stat().st_size)
        return _wav_walk(io.BytesIO(source), len(source))
    except (OSError, struct.error):
        return None


def _wav_walk(f: BinaryIO, size: int) -> float | None:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = f.read(min(length, 16))
            if len(fmt) < 12:
                return None
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
            f.seek(length - len(fmt) + (length & 1), io.SEEK_CUR)
        elif cid == b"data":
            # 0 and 0xFFFFFFFF are what recorders leave when they never finalize the header.
            if not byte_rate or length in (0, 0xFFFFFFFF) or f.tell() + length <= size:
                return None
            return length / byte_rate
        else:
            f.seek(length + (length & 1), io.SEEK_CUR)


def _from_array(audio: np.ndarray, rate: int, label: str) -> np.ndarray:
    if audio.size == 0:
        raise AudioError(f"{label}: zero samples; there is no audio to transcribe.")
    if audio.ndim == 2:
        # Channels are the short axis: (samples, channels) or (channels, samples).
        audio = audio.mean(axis=1 if audio.shape[1] <= audio.shape[0] else 0)
    elif audio.ndim != 1:
        raise AudioError(f"{label}: shape {audio.shape}; expected 1-D samples or 2-D "
                         "(samples, channels).")
    if np.issubdtype(audio.dtype, np.bool_) or not (np.issubdtype(audio.dtype, np.integer)
                                                     or np.issubdtype(audio.dtype, np.floating)):
        raise AudioError(f"{label}: dtype {audio.dtype} is not audio samples; use float or integer PCM.")
    if np.issubdtype(audio.dtype, np.integer):
        info = np.iinfo(audio.dtype)
        # Unsigned PCM (8-bit WAV) is centred on 128, not 0; full scale is half the range either way.
        audio = (audio.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    finite = np.isfinite(audio)
    if not finite.all():
        # Checked before resampling, which would smear one NaN over the whole signal.
        _raise_non_finite(int((~finite).sum()), audio.size, label)
    return _finish(_resample(np.asarray(audio, np.float32), rate), label)


def _raise_non_finite(bad: int, total: int, label: str):
    raise AudioError(f"{label}: {bad} of {total} samples are NaN or infinite; the audio is "
                     "corrupt. Replace them (e.g. np.nan_to_num) if you want it transcribed.")


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
        _raise_non_finite(int((~finite).sum()), audio.size, label)
    if audio.size < SAMPLE_RATE * MIN_DURATION_S:
        raise AudioError(f"{label}: only {audio.size / SAMPLE_RATE * 1000:.0f} ms of audio; at least "
                         f"{MIN_DURATION_S * 1000:.0f} ms are needed.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        # Float input outside [-1, 1] is almost always unscaled integer PCM.
        audio = audio / (32768.0 if peak <= 32768.0 * 1.01 else peak)
    return np.ascontiguousarray(audio, dtype=np.float32)
