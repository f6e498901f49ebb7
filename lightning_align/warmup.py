"""Compile a transcription's GPU kernels before the first request needs them.

MLX's CUDA backend compiles each fused kernel variant (one per operation graph, dtypes and
operand layout; a batch of one row lays some operands out unlike a batch of many) with NVRTC the
first time it runs, 4-9 s each on the H100 hosts measured (docs/benchmarks.md, session 23), and
keeps the result on disk (`backend.ptx_cache_dir`). On a fresh machine the first transcription
therefore spends minutes compiling, and a later one that meets a new variant (a window decoded
alone at a fallback temperature) stops for tens of seconds. `warm_up` runs every decoding path
a transcription takes on random audio (greedy and sampled, one row and several, a batch that
shrinks and one that a window joins, with and without the attention capture), so that a
service pays this when it starts, once per machine while the disk cache lasts. On a CPU there
is nothing to compile and it returns at once.

Processes of one machine that start together (Ray actors on a node) warm up one at a time,
under a lock file in the kernel cache: MLX writes a compiled kernel in place, so a process
reading it meanwhile could load half a file, and the later ones find every kernel on disk
instead of compiling the same ones at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np

from .backend import gpu_available, ptx_cache_dir
from .decoding import JOIN_MIN_STEPS, DecodingOptions, JoinRow, decode_batch
from .models import WhisperModel, load_model

WARM_UP_STEPS = 12  # decoding steps per warm-up batch at most: the kernels are the same at every step
# Noise levels of the warm-up windows, cycled over a batch's rows. On tiny.en the quiet and the
# loud rows decode text to the end, the silent one ends after a word: the batch shrinks, and a
# shrink's gathers compile too.
NOISE_LEVELS = (0.03, 0.0, 0.3, 0.003)
LOCK_NAME = ".lightning-align-warm-up.lock"
# Steps of the warm-up pass a window joins: room for a join after the silent row has ended
JOIN_PASS_STEPS = JOIN_MIN_STEPS + 8


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Hold the kernel cache's warm-up lock (`LOCK_NAME` in `backend.ptx_cache_dir`): one
    process of the machine at a time. Without a cache directory, or where it cannot be written
    or locked (no fcntl), there is nothing to share and nothing is held."""
    try:
        import fcntl
    except ImportError:  # Windows: no MLX CUDA backend to share kernels with anyway
        yield
        return
    cache = ptx_cache_dir()
    handle = None
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            handle = open(os.path.join(cache, LOCK_NAME), "a")
        except OSError:
            handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process warms up
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def warm_up(model: WhisperModel | str | None = None, *, batch_sizes: Sequence[int] = (1, 4),
            force: bool = False) -> float:
    """Run the GPU kernels of the model's transcription paths once, so that MLX compiles them
    now; -> the wall seconds it took (minutes on a fresh machine; with the kernels in the disk
    cache, eight short decodes per batch size, four for one row). `batch_sizes`: decoder
    batches to run (one row and several cover the operand layouts; in several, rows that end
    early shrink the batch, and a window joins one pass). Does
    nothing on a CPU unless `force`. Waits while another process of the machine warms up
    (`machine_lock`); the seconds returned include that wait."""
    if not (gpu_available() or force):
        return 0.0
    wm = model if isinstance(model, WhisperModel) else load_model(model)
    started = time.perf_counter()
    with machine_lock():
        _decode_each_path(wm, batch_sizes)
    return time.perf_counter() - started


def _decode_each_path(wm: WhisperModel, batch_sizes: Sequence[int]) -> None:
    from .transcribe import _encode  # the mel and encoder path transcription uses

    rng = np.random.default_rng(0)
    for b in batch_sizes:
        windows = [((level * rng.standard_normal(30 * 16000)).astype(np.float32), 0, 30 * 16000)
                   for level in (NOISE_LEVELS * b)[:b]]
        features = _encode(wm, windows)
        options = DecodingOptions(temperatures=(0.0, 1.0), sample_len=WARM_UP_STEPS,
                                  token_choice="auto")
        temperatures: list = [0.0, 1.0]
        if b > 1:  # rows greedy and sampled together (one row is greedy or sampled)
            temperatures.append([0.0, 1.0] * (b // 2) + [0.0] * (b % 2))
        for capture in (False, True):
            for temperature in temperatures:
                decode_batch(wm, features, options, temperature=temperature, capture=capture,
                             audio_frames=np.full(b, 1500))
            if b > 1:
                _decode_with_a_join(wm, features, capture)


def _decode_with_a_join(wm: WhisperModel, features, capture: bool) -> None:
    """A greedy pass that a window joins when its first row ends, as the rest of a window whose
    text stopped early joins a transcription's pass: the joined row's prompt and start
    sequence, decoded apart, and the batch growing by it have kernels of their own. Tokens are
    chosen on the device, where joins happen (on a CPU too, where `warm_up` is only forced); the
    silent row of `NOISE_LEVELS` ends within a few steps, leaving room for the join."""
    tok = wm.tokenizer("en" if wm.is_multilingual else None)
    prompt = [tok.sot_prev] + tok.encode(" The rest of the window, after the text before it.")
    joined = []

    def join(row: int, result, offset: int) -> JoinRow | None:
        if joined:
            return None
        joined.append(JoinRow(features[row : row + 1], prompt, "en"))
        return joined[-1]

    options = DecodingOptions(temperatures=(0.0,), sample_len=JOIN_PASS_STEPS,
                              token_choice="device")
    decode_batch(wm, features, options, temperature=0.0, capture=capture,
                 audio_frames=np.full(features.shape[0], 1500), join=join)


__all__ = ["warm_up"]
