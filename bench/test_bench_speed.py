"""Speed of lightning-align beside its peers, on the same weights and the same audio.

    python -m pytest bench/test_bench_speed.py --benchmark-only --benchmark-json=bench/results/cpu.json
    BENCH_MINUTES=1,10,60 python -m pytest bench/test_bench_speed.py --benchmark-only   # longer audio

Each case transcribes generated speech (`synth.long_speech`, seed 11) of the given length once
per round after a warm-up; `extra_info` records the audio length, realtime factor and machine.
`test_word_overhead_paired` runs segment-only and words in each round and records their ratios.
This suite reports through pytest-benchmark (its table, `--benchmark-json`); the tables and plot
of docs/benchmarks.md come from `python -m bench.throughput`'s JSON lines (`python -m bench.report`).
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


def test_word_overhead_paired(benchmark, speech, model):
    """Word timestamps over segment-only, paired: each round runs both (the order alternating),
    so a host that drifts slows both alike; `extra_info` has every round's ratio and their
    median (`paired_overhead`, 0.18 = 18 % slower with words). Rounds: max(2, BENCH_ROUNDS)."""
    benchmark.group = f"{len(speech) / 960000:g}min paired"
    segments = lambda: systems.lightning(speech, model=model)  # noqa: E731
    words = lambda: systems.lightning(speech, model=model, words=True)  # noqa: E731
    segments(), words()  # warm-up: compilation, caches
    ratios: list[float] = []

    def one_round():
        walls = {}
        for name, fn in ((("s", segments), ("w", words)) if len(ratios) % 2 == 0
                         else (("w", words), ("s", segments))):
            walls[name] = fn().wall_s
        ratios.append(walls["w"] / walls["s"])
        return walls

    benchmark.pedantic(one_round, rounds=max(2, ROUNDS), iterations=1)
    benchmark.extra_info.update(audio_s=len(speech) / 16000, paired_ratios=ratios,
                                paired_overhead=float(np.median(ratios)) - 1, **machine())


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
