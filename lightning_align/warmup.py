"""Compile a transcription's GPU kernels before the first request needs them.

MLX's CUDA backend compiles each fused kernel variant (one per operation graph, dtypes and
operand layout; a batch of one row lays some operands out unlike a batch of many) with NVRTC the
first time it runs, 4-9 s each on the H100 hosts measured (docs/benchmarks.md, session 23), and
keeps the result on disk (`backend.ptx_cache_dir`). On a fresh machine the first transcription
therefore spends minutes compiling, and a later one that meets a new variant (a window decoded
alone at a fallback temperature) stops for tens of seconds. `warm_up` runs every decoding path
a transcription takes on random audio (greedy and sampled, one row and several, with and
without the attention capture), so that a service pays this when it starts, once per machine
while the disk cache lasts. On a CPU there is nothing to compile and it returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .backend import gpu_available
from .decoding import DecodingOptions, decode_batch
from .models import WhisperModel, load_model

WARM_UP_STEPS = 12  # decoding steps per warm-up batch at most: the kernels are the same at every step
# Noise levels of the warm-up windows, cycled over a batch's rows. On tiny.en the quiet and the
# loud rows decode text to the end, the silent one ends after a word: the batch shrinks, and a
# shrink's gathers compile too.
NOISE_LEVELS = (0.03, 0.0, 0.3, 0.003)


def warm_up(model: WhisperModel | str | None = None, *, batch_sizes: Sequence[int] = (1, 4),
            force: bool = False) -> float:
    """Run the GPU kernels of the model's transcription paths once, so that MLX compiles them
    now; -> the wall seconds it took (minutes on a fresh machine; with the kernels in the disk
    cache, six short decodes per batch size). `batch_sizes`: decoder batches to run (one row
    and several cover the operand layouts, and rows that end early shrink the batch). Does
    nothing on a CPU unless `force`."""
    if not (gpu_available() or force):
        return 0.0
    from .transcribe import _encode  # the mel and encoder path transcription uses

    wm = model if isinstance(model, WhisperModel) else load_model(model)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        windows = [((level * rng.standard_normal(30 * 16000)).astype(np.float32), 0, 30 * 16000)
                   for level in (NOISE_LEVELS * b)[:b]]
        features = _encode(wm, windows)
        options = DecodingOptions(temperatures=(0.0, 1.0), sample_len=WARM_UP_STEPS,
                                  token_choice="auto")
        mixed = [0.0, 1.0] * (b // 2) + [0.0] * (b % 2)  # rows greedy and sampled together
        for capture in (False, True):
            for temperature in (0.0, 1.0, mixed):
                decode_batch(wm, features, options, temperature=temperature, capture=capture,
                             audio_frames=np.full(b, 1500))
    return time.perf_counter() - started


__all__ = ["warm_up"]
