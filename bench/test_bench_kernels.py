"""Kernel timings at openai-whisper's sizes: 8 alignment heads, 100 tokens, 1500 frames (a full
30 s window), median width 7.

    NUMBA_NUM_THREADS=1 pytest bench/test_bench_kernels.py --benchmark-only

The goal is median filter + DTW <= 2 ms on one core. Every benchmark calls its function once
before timing so JIT compilation (or loading numba's disk cache) is not measured.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from lightning_align.kernels import alignment_matrix, dtw, dtw_batch, median_filter

HEADS, TOKENS, FRAMES, WIDTH = 8, 100, 1500, 7


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def weights(rng):
    """Softmax-over-frames attention weights, like the alignment heads' after capture."""
    scores = rng.standard_normal((HEADS, TOKENS, FRAMES)).astype(np.float32) * 4
    w = np.exp(scores - scores.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def cost(rng):
    return rng.standard_normal((TOKENS, FRAMES)).astype(np.float32)


def _run(benchmark, fn):
    fn()  # compile / load from cache outside the timing
    benchmark.extra_info["numba_threads"] = numba.get_num_threads()
    return benchmark(fn)


def test_median_filter_then_dtw(benchmark, weights, cost):
    """The 2 ms goal: median filter (8 x 100 x 1500, width 7) + DTW (100 x 1500)."""
    def fn():
        median_filter(weights, WIDTH)
        return dtw(cost)

    _run(benchmark, fn)


def test_median_filter(benchmark, weights):
    _run(benchmark, lambda: median_filter(weights, WIDTH))


def test_dtw(benchmark, cost):
    _run(benchmark, lambda: dtw(cost))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_alignment_matrix_then_dtw(benchmark, weights, dtype):
    """What the aligner does per segment: weights -> matrix -> DTW on its negation."""
    w = weights.astype(dtype)
    _run(benchmark, lambda: dtw(-alignment_matrix(w, WIDTH)))


def test_dtw_batch_20_segments(benchmark, rng):
    """20 segments of 20..120 tokens against 1500 frames, in parallel over segments."""
    costs = [
        rng.standard_normal((int(rng.integers(20, 121)), FRAMES)).astype(np.float32)
        for _ in range(20)
    ]
    _run(benchmark, lambda: dtw_batch(costs))
    benchmark.extra_info["threading_layer"] = numba.threading_layer()
