"""Speed of lightning-align beside its peers, on the same weights and the same audio.

    python -m pytest bench/test_bench_speed.py --benchmark-only --benchmark-json=bench/results/cpu.json
    BENCH_MINUTES=1,10,60 python -m pytest bench/test_bench_speed.py --benchmark-only   # longer audio

Each case transcribes generated speech (`synth.long_speech`, seed 11) of the given length once
per round after a warm-up; `extra_info` records the audio length, realtime factor and machine.
`python -m bench.report` turns the JSON into the tables and plot of docs/benchmarks.md.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import lightning_align as la
from lightning_align.backend import gpu_available

from . import systems
from .throughput import machine

MINUTES = [float(m) for m in os.environ.get("BENCH_MINUTES", "1").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))


@pytest.fixture(scope="module", params=MINUTES, ids=lambda m: f"{m:g}min")
def speech(request) -> np.ndarray:
    from lightning_align.synth import long_speech

    return long_speech(request.param * 60, seed=11).audio


@pytest.fixture(scope="module")
def model():
    return la.load_model(str(systems.ct2_dir()))


def _run(benchmark, fn, samples):
    fn()  # warm-up: compilation, caches
    result = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)
    audio_s = len(samples) / 16000
    benchmark.extra_info.update(audio_s=audio_s, words=result.words, segments=len(result.segments),
                                rtf=audio_s / benchmark.stats.stats.min, **machine())
    return result


def test_lightning_segments(benchmark, speech, model):
    benchmark.group = f"{len(speech) / 960000:g}min"
    _run(benchmark, lambda: systems.lightning(speech, model=model), speech)


def test_lightning_capture(benchmark, speech, model):
    benchmark.group = f"{len(speech) / 960000:g}min"
    _run(benchmark, lambda: systems.lightning(speech, model=model, keep_attention=True), speech)


def test_lightning_words(benchmark, speech, model):
    benchmark.group = f"{len(speech) / 960000:g}min"
    _run(benchmark, lambda: systems.lightning(speech, model=model, words=True), speech)


@pytest.mark.parametrize("percent", [1, 10, 100])
def test_lazy_alignment(benchmark, speech, model, percent):
    """Aligning k % of the segments after a segment pass with capture: the align call alone."""
    benchmark.group = f"{len(speech) / 960000:g}min lazy"
    result = la.transcribe(speech, model=model, keep_attention=True)
    n = len(result["segments"])
    chosen = np.random.default_rng(0).choice(n, size=max(1, round(n * percent / 100)), replace=False)

    def run():
        la.align(result["segments"], which=chosen.tolist(), force=True)
        return systems.Run(0.0, result["segments"], len(chosen))
    _run(benchmark, run, speech)


@pytest.mark.parametrize("words", [False, True], ids=["segments", "words"])
def test_mlx_whisper(benchmark, speech, words):
    benchmark.group = f"{len(speech) / 960000:g}min"
    _run(benchmark, lambda: systems.mlx_whisper(speech, words=words, fp16=gpu_available()), speech)


@pytest.mark.parametrize("words", [False, True], ids=["segments", "words"])
def test_faster_whisper(benchmark, speech, words):
    pytest.importorskip("faster_whisper")
    benchmark.group = f"{len(speech) / 960000:g}min"
    _run(benchmark, lambda: systems.faster_whisper(speech, words=words), speech)
