"""Log-mel spectrogram of one 30 s window, in numpy (MLX's CPU element-wise ops are slow)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 480_000  # 30 s at 16 kHz
N_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000 mel frames of 10 ms
FRAMES_PER_SECOND = 100
TOKENS_PER_SECOND = 50  # encoder frames of 20 ms (the convolution stride is 2)


@lru_cache(maxsize=2)
def mel_filters(n_mels: int) -> np.ndarray:
    """Whisper's mel filterbank (n_mels, 201), as shipped with mlx-whisper."""
    import mlx_whisper

    path = Path(mlx_whisper.__file__).with_name("assets") / "mel_filters.npz"
    with np.load(path) as f:
        return f[f"mel_{n_mels}"].astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def _padded(samples: np.ndarray) -> np.ndarray:
    """30 s of audio, zero-padded, with reflect padding of N_FFT // 2 at both ends, as
    torch.stft(center=True): the window start sees its audio."""
    audio = np.zeros(CHUNK_SAMPLES + N_FFT, np.float32)
    audio[N_FFT // 2 : N_FFT // 2 + min(len(samples), CHUNK_SAMPLES)] = samples[:CHUNK_SAMPLES]
    pad = N_FFT // 2
    audio[:pad] = audio[pad + 1 : 2 * pad + 1][::-1]
    audio[-pad:] = audio[-2 * pad - 1 : -pad - 1][::-1]
    return audio


def _padded_on_device(body):
    """`_padded` of a window's samples already on the MLX device (1-D mx.array): the zeros and
    reflections are device work."""
    from .backend import mx

    body = body[:CHUNK_SAMPLES]
    if body.shape[0] < CHUNK_SAMPLES:
        body = mx.pad(body, [(0, CHUNK_SAMPLES - body.shape[0])])
    pad = N_FFT // 2
    return mx.concatenate([body[1 : pad + 1][::-1], body, body[-pad - 1 : -1][::-1]])


def log_mel_batch(windows: list[tuple[np.ndarray, int, int]], n_mels: int):
    """Log-mel of several windows on the MLX device: (B, 3000 frames, n_mels) mx.array.
    `windows`: (recording's 16 kHz samples, first sample, end sample) each.

    On a GPU the spectrogram itself takes ~2 ms for 64 windows; what used to dominate (70 of
    100 ms on an H200) was padding each window on the host and copying it twice. Now the part
    of each recording the batch covers crosses to the device once, and the windows are cut
    and padded there. On a CPU use `log_mel_window` (MLX's CPU element-wise ops are slow).
    """
    from .backend import mx

    spans: dict[int, tuple[np.ndarray, int, int]] = {}  # id(recording) -> (recording, lo, hi)
    for samples, start, end in windows:
        _, lo, hi = spans.get(id(samples), (samples, start, end))
        spans[id(samples)] = (samples, min(lo, start), max(hi, end))
    uploaded = {key: (mx.array(np.asarray(samples[lo:hi], np.float32)), lo)
                for key, (samples, lo, hi) in spans.items()}
    rows = []
    for samples, start, end in windows:
        part, lo = uploaded[id(samples)]
        rows.append(_padded_on_device(part[start - lo : min(end, start + CHUNK_SAMPLES) - lo]))
    audio = mx.stack(rows)
    b = audio.shape[0]
    frames = mx.as_strided(audio, (b, N_FRAMES, N_FFT), (CHUNK_SAMPLES + N_FFT, HOP_LENGTH, 1))
    spectrum = mx.fft.rfft(frames * mx.array(_hann()), axis=-1)
    power = mx.square(mx.abs(spectrum))
    log_spec = mx.log10(mx.maximum(power @ mx.array(mel_filters(n_mels).T), 1e-10))
    log_spec = mx.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel_window(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """Log-mel of up to 30 s of 16 kHz audio, zero-padded to 30 s: (3000 frames, n_mels) float32."""
    audio = _padded(samples)
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP_LENGTH][:N_FRAMES]
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    log_spec = np.log10(np.maximum(power @ mel_filters(n_mels).T, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
