"""Corpus throughput on Ray Data vs a plain in-process `transcribe` loop over the same files.

    pytest bench/test_bench_corpus.py --benchmark-only -s

Each configuration transcribes the same generated clips (word timestamps on) once into a fresh
output directory; Ray is started before timing (a cluster is already up in production), the
workers' model loads are timed (they are part of every run). The goal: the pipeline's overhead
over in-process `transcribe` <= 10 % with one worker. The printed lines and each benchmark's
extra_info give audio seconds, wall seconds, audio hours per wall hour, and the overhead.
"""

from __future__ import annotations

import time

import pytest
import soundfile as sf

import lightning_align as la
from lightning_align import corpus
from lightning_align.synth import concatenate, synthesize

SENTENCES = (
    "The lighthouse keeper climbed the stairs every evening at seven.",
    "Farmers in the valley planted barley and oats before the spring rain arrived.",
    "Her grandmother kept bees behind the old stone cottage near the river.",
    "Twelve students walked across the bridge to visit the museum of natural history.",
)
FILES = 12
_walls: dict[str, float] = {}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """~12 files of 8-12 s speech (two sentences each: one 30 s window per file)."""
    folder = tmp_path_factory.mktemp("corpus-in")
    paths = []
    for i in range(FILES):
        parts = [synthesize(SENTENCES[(i + k) % 4], voice=("en-us", "en-gb")[(i + k) % 2],
                            seed=i * 2 + k) for k in range(2)]
        speech = concatenate(parts, 0.5)
        path = folder / f"clip{i:02d}.wav"
        sf.write(path, speech.audio, 16000, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def audio_s(clips):
    return sum(sf.info(p).duration for p in clips)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # 3 logical CPUs: two 1-CPU workers plus the light decode tasks fit on a 2-core machine.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _report(benchmark, label: str, wall_s: float, audio_s: float) -> None:
    _walls[label] = wall_s
    info = {"audio_s": round(audio_s, 1), "wall_s": round(wall_s, 2),
            "audio_h_per_wall_h": round(audio_s / wall_s, 1)}
    if "in-process" in _walls and label != "in-process":
        info["overhead_pct"] = round(100 * (wall_s / _walls["in-process"] - 1), 1)
    benchmark.extra_info.update(info)
    print(f"\n{label}: {info}")


def test_in_process_transcribe(benchmark, clips, audio_s):
    model = la.load_model()
    la.transcribe(clips[0], model=model, word_timestamps=True)  # warm up outside the timing

    def loop():
        started = time.perf_counter()
        for path in clips:
            la.transcribe(path, model=model, word_timestamps=True)
        return time.perf_counter() - started

    _report(benchmark, "in-process", benchmark.pedantic(loop, rounds=1, iterations=1), audio_s)


@pytest.mark.parametrize("workers,cpus", [(1, 2.0), (2, 1.0)], ids=["1-worker", "2-workers"])
def test_ray_corpus(benchmark, local_ray, clips, audio_s, tmp_path, workers, cpus):
    def pipeline():
        started = time.perf_counter()
        summary = corpus.run(clips, tmp_path / "out", workers=workers, cpus_per_worker=cpus,
                             progress=False)
        assert summary.ok and len(summary.succeeded) == FILES
        return time.perf_counter() - started

    _report(benchmark, f"ray {workers} worker(s)",
            benchmark.pedantic(pipeline, rounds=1, iterations=1), audio_s)
