"""Peak memory of transcribing long recordings, each in a fresh process.

    python -m pytest bench/test_bench_memory.py --benchmark-only -s

`LA_BENCH_MEMORY_MINUTES` (default "10,60") picks the recording lengths; the 60-minute case
takes a long while on a small CPU. The audio is generated (`synth.long_speech`) and written to
a WAV in this process, so the measured process only loads the model, decodes the file and
transcribes it. Peak RSS is `ru_maxrss` of that process; figures go to `extra_info` and stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile

from lightning_align.synth import long_speech

MINUTES = [float(m) for m in os.environ.get("LA_BENCH_MEMORY_MINUTES", "10,60").split(",") if m]
SMALL_BUDGET_BYTES = 2 * 2**20

WORKER = textwrap.dedent("""
    import json, resource, sys, time
    import lightning_align as la

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    path, budget = sys.argv[1], int(sys.argv[2])
    model = la.load_model()
    after_model = peak_mib()
    samples = la.load_audio(path)
    after_audio = peak_mib()
    cache = la.AttentionCache(budget) if budget else None
    started = time.perf_counter()
    result = la.transcribe(samples, model=model, cache=cache)
    took = time.perf_counter() - started
    after_transcribe = peak_mib()
    stats = result.context.cache.stats()
    result.align()  # words for every segment: cache hits, and forced passes for evicted ones
    print(json.dumps({
        "audio_s": len(samples) / 16000, "transcribe_s": took,
        "segments": len(result["segments"]),
        "peak_rss_mib_after_model": after_model, "peak_rss_mib_after_audio": after_audio,
        "peak_rss_mib_after_transcribe": after_transcribe, "peak_rss_mib_after_align": peak_mib(),
        "cache_bytes": stats.bytes, "cache_entries": stats.entries,
        "cache_evictions": stats.evictions, "cache_max_bytes": stats.max_bytes,
        "cache_bytes_after_align": result.context.cache.stats().bytes,
    }))
""")


def wav_of(minutes: float, directory: Path) -> Path:
    path = directory / f"speech-{minutes:g}min.wav"
    soundfile.write(path, long_speech(minutes * 60, seed=7).audio, 16000, subtype="PCM_16")
    return path


def measure(path: Path, budget: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, str(path), str(budget)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(benchmark, label: str, figures: dict) -> None:
    benchmark.extra_info.update(figures)
    print(f"\n{label}: " + ", ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


@pytest.mark.parametrize("minutes", MINUTES)
def test_peak_memory(benchmark, tmp_path, minutes):
    path = wav_of(minutes, tmp_path)
    figures = benchmark.pedantic(measure, args=(path,), rounds=1, iterations=1)
    report(benchmark, f"{minutes:g} min", figures)
    assert figures["cache_bytes"] <= figures["cache_max_bytes"]
    assert figures["segments"] > 0


def test_cache_stays_within_a_small_budget(benchmark, tmp_path):
    path = wav_of(2, tmp_path)
    figures = benchmark.pedantic(measure, args=(path, SMALL_BUDGET_BYTES), rounds=1, iterations=1)
    report(benchmark, f"2 min, {SMALL_BUDGET_BYTES // 2**20} MiB cache", figures)
    assert figures["cache_max_bytes"] == SMALL_BUDGET_BYTES
    assert figures["cache_evictions"] > 0, "the budget was never reached: make it smaller"
    assert figures["cache_bytes"] <= SMALL_BUDGET_BYTES
    assert figures["cache_bytes_after_align"] <= SMALL_BUDGET_BYTES
