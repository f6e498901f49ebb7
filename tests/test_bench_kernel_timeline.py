"""bench.kernel_timeline: busy time is the union of kernel intervals, the loop's figures come
from the marked steps, and gaps are the idle stretches between kernels."""

import pytest

from bench.kernel_timeline import STEP, gaps_us, summarize, union_us


def test_union_counts_overlapping_intervals_once():
    assert union_us([]) == 0.0
    assert union_us([(0, 10), (5, 15), (20, 30), (22, 25)]) == 25.0
    assert gaps_us([(0, 10), (5, 15), (20, 30), (22, 25), (40, 41)]) == [5, 10]


def _kernel(name, ts, dur):
    return {"cat": "kernel", "name": name, "ph": "X", "ts": ts, "dur": dur}


def test_summary_of_a_two_step_loop():
    # Two steps marked on the host over [0, 200) us; the device runs a 10 us kernel every
    # 20 us inside it (10 kernels, half the time busy) and one long kernel after it.
    events = [{"cat": "user_annotation", "name": STEP, "ph": "X", "ts": 0, "dur": 60},
              {"cat": "user_annotation", "name": STEP, "ph": "X", "ts": 100, "dur": 100}]
    events += [_kernel("gemv" if i % 2 else "softmax", 20 * i, 10) for i in range(10)]
    events += [_kernel("collect", 300, 60),
               {"cat": "cuda_driver", "name": "cuGraphLaunch", "ph": "X", "ts": 1, "dur": 4},
               {"cat": "cuda_driver", "name": "cuGraphLaunch", "ph": "X", "ts": 101, "dur": 6}]
    s = summarize(events)
    assert (s["kernels"], s["steps"]) == (11, 2)
    assert s["busy_ms"] == pytest.approx(0.16)
    assert s["span_ms"] == pytest.approx(0.36)
    assert s["loop_ms"] == pytest.approx(0.2)
    assert s["loop_busy_share"] == pytest.approx(0.5)
    assert s["kernels_per_step"] == 5 and s["busy_per_step_us"] == pytest.approx(50)
    assert s["host_step_us"] == 80 and s["gap_median_us"] == 10 and s["gaps"] == 9
    assert s["top_kernels"][0][:3] == ("collect", 1, pytest.approx(0.06))
    assert s["top_api"] == [("cuGraphLaunch", 2, pytest.approx(0.01))]
    # one period between the two marks, [0, 100) us: five kernels, 50 us of them, one launch
    assert (s["regular_steps"], s["long_steps"], s["step_period_us"]) == (1, 0, 100)
    assert (s["step_kernels"], s["step_kernel_us"], s["step_api_us"]) == (5, 50, 4)


def test_summary_without_device_work_says_so():
    assert summarize([]) == dict(kernels=0, copies=0, steps=0)


def test_kernels_are_counted_under_the_innermost_marked_call_that_launched_them():
    # A step [0, 50) launches a graph (two kernels, one correlation id); a collection [100, 200)
    # holds a close [120, 140) that launches one copy, and itself launches a gather; one
    # kernel's launch falls in no mark, another's was not recorded.
    def launch(ts, corr):
        return {"cat": "cuda_driver", "name": "cuGraphLaunch", "ph": "X", "ts": ts, "dur": 2,
                "args": {"correlation": corr}}

    def kernel(name, ts, dur, corr, grid=(1, 1, 1)):
        return {"cat": "kernel", "name": name, "ph": "X", "ts": ts, "dur": dur,
                "args": {"correlation": corr, "grid": list(grid)}}

    events = [{"cat": "user_annotation", "name": STEP, "ph": "X", "ts": 0, "dur": 50},
              {"cat": "user_annotation", "name": "collect", "ph": "X", "ts": 100, "dur": 100},
              {"cat": "user_annotation", "name": "close", "ph": "X", "ts": 120, "dur": 20},
              launch(10, 1), launch(125, 2), launch(150, 3), launch(300, 4),
              kernel("gemv", 20, 5, 1), kernel("sdpa", 26, 7, 1), kernel("copy", 130, 40, 2, (8, 1, 1)),
              kernel("gather", 180, 10, 3), kernel("late", 310, 1, 4), kernel("lost", 400, 1, 99)]
    g = summarize(events)["by_launcher"]
    assert {k: (v["kernels"], v["ms"]) for k, v in g.items()} == {
        STEP: (2, pytest.approx(0.012)), "close": (1, pytest.approx(0.04)),
        "collect": (1, pytest.approx(0.01)), "unmarked": (1, pytest.approx(0.001)),
        "unknown": (1, pytest.approx(0.001))}
    assert g["close"]["top"] == [("copy", [8, 1, 1], 1, pytest.approx(0.04))]
    assert [row[0] for row in g[STEP]["top"]] == ["sdpa", "gemv"]
