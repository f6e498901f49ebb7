"""Whisper's audio encoder in float64 numpy, from the weights of an MLX `AudioEncoder`: the
reference the encoder's float32 paths (MLX's fused attention, the CPU's host kernels) are
tested against."""

from __future__ import annotations

import numpy as np
from scipy.special import erf, softmax


def _f64(a) -> np.ndarray:
    return np.array(a, np.float64)


def _linear(x: np.ndarray, layer) -> np.ndarray:
    return x @ _f64(layer.weight).T + (_f64(layer.bias) if "bias" in layer else 0.0)


def _norm(x: np.ndarray, ln) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * _f64(ln.weight) + _f64(ln.bias)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _conv(x: np.ndarray, layer, stride: int) -> np.ndarray:
    """Kernel 3, padding 1; MLX's weight layout (out, kernel, in)."""
    w = _f64(layer.weight)
    padded = np.pad(x, ((1, 1), (0, 0)))
    n = (len(x) - 1) // stride + 1
    return sum(padded[k : k + stride * n : stride] @ w[:, k, :].T for k in range(3)) + _f64(layer.bias)


def reference_encoder(encoder, mel: np.ndarray) -> np.ndarray:
    """mel (3000 frames, n_mels) -> features (1500 frames, n_audio_state), float64."""
    x = _gelu(_conv(_f64(mel), encoder.conv1, 1))
    x = _gelu(_conv(x, encoder.conv2, 2)) + _f64(encoder._positional_embedding)
    for block in encoder.blocks:
        attn = block.attn
        h = _norm(x, block.attn_ln)
        t, c = h.shape
        d = c // attn.n_head
        q, k, v = (_linear(h, layer).reshape(t, attn.n_head, d).transpose(1, 0, 2)
                   for layer in (attn.query, attn.key, attn.value))
        heads = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(d), axis=-1) @ v
        x = x + _linear(heads.transpose(1, 0, 2).reshape(t, c), attn.out)
        x = x + _linear(_gelu(_linear(_norm(x, block.mlp_ln), block.mlp1)), block.mlp2)
    return _norm(x, encoder.ln_post)
