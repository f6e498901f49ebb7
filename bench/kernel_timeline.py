"""Where the GPU's time goes in one transcription: every CUDA kernel MLX runs, with its start
and duration, recorded by CUPTI through PyTorch's profiler (the device image has PyTorch and
`ncu`, not `nsys`; CUPTI's activity records are process-wide, so MLX's kernels are in them).

    python -m bench.kernel_timeline AUDIO.npy [--seconds S] [--configs seg words] [--warm 2]
                                    [--rounds 3] [--trace DIR]

Each configuration is run `--warm` times (kernel compilation), `--rounds` times unprofiled
(the wall to compare against), then once under the profiler. Printed per configuration: the
profiled and unprofiled wall, the decoding steps (`CompiledStep.choose` calls, each marked in
the trace), the kernels and their busy time (the union of kernel intervals, so overlapping
streams count once), the share of the decoding loop's wall the device is busy, kernels and
busy microseconds per step, the idle gaps between kernels, the kernels that take the most
time, the CUDA API calls on the host that take the most time, and the kernels grouped by the
marked host call that launched them (`--mark`; the steps, shrinks and attention collection by
default). `--trace DIR` also writes each run's Chrome trace (open it in Perfetto). Needs a
CUDA device and PyTorch built for it.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import importlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from . import systems
from .throughput import load_samples

CONFIGS = {"seg": dict(keep_attention=False), "capture": {}, "words": dict(word_timestamps=True)}
STEP = "la_step"  # the name of the range marked around each decoding step
# Host calls also marked (`--mark`): each kernel is counted under the innermost marked call that
# launched it (`by_launcher`), so work queued outside the steps says where it comes from.
MARKS = ("lightning_align.model:DecoderState.select", "lightning_align.capture:AttentionProbe.open",
         "lightning_align.capture:AttentionProbe._close",
         "lightning_align.capture:AttentionProbe._entries",
         "lightning_align.capture:AttentionProbe._scores")


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of `(start, end)` intervals (any unit; here microseconds)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def gaps_us(intervals: list[tuple[float, float]]) -> list[float]:
    """Idle stretches between the union's pieces, in order (same unit as the intervals)."""
    out, reach = [], None
    for start, end in sorted(intervals):
        if reach is not None and start > reach:
            out.append(start - reach)
        reach = end if reach is None else max(reach, end)
    return out


def _regular_steps(steps: list[dict], kernels: list[dict], api: list[dict]) -> dict:
    """Medians over the regular steps (from one step's mark to the next, at most twice the
    median period; the longer ones wait for the device at shrinks and settling): the period,
    and the kernels, kernel time and CUDA-call time that start inside it (microseconds)."""
    periods = [(a["ts"], b["ts"]) for a, b in zip(steps, steps[1:])]
    if not periods:
        return {}
    usual = statistics.median(hi - lo for lo, hi in periods)
    regular = [(lo, hi) for lo, hi in periods if hi - lo <= 2 * usual]

    def sliced(events):  # sorted once, then each step's events are a slice of them
        events = sorted(events, key=lambda e: e["ts"])
        ts = [e["ts"] for e in events]
        return lambda lo, hi: events[bisect.bisect_left(ts, lo):bisect.bisect_left(ts, hi)]
    kernels_in, api_in = sliced(kernels), sliced(api)
    rows = [(hi - lo, kernels_in(lo, hi), api_in(lo, hi)) for lo, hi in regular]
    return dict(regular_steps=len(regular), long_steps=len(periods) - len(regular),
                step_period_us=statistics.median(r[0] for r in rows),
                step_kernels=statistics.median(len(r[1]) for r in rows),
                step_kernel_us=statistics.median(sum(e["dur"] for e in r[1]) for r in rows),
                step_api_us=statistics.median(sum(e["dur"] for e in r[2]) for r in rows))


def by_launcher(kernels: list[dict], api: list[dict], marks: list[dict]) -> dict[str, dict]:
    """Kernels grouped by the innermost marked host range (`user_annotation` events) holding the
    CUDA call that launched them (matched by the `correlation` id CUPTI gives both; a graph's
    kernels carry its launch's), "unmarked" when none: {mark: {kernels, ms, top: [(name, grid,
    count, ms)]}}. Kernels whose launch was not recorded count as "unknown"."""
    launched = {e["args"]["correlation"]: e["ts"] for e in api
                if "correlation" in e.get("args", {})}
    ranges = sorted(((m["ts"], m["ts"] + m["dur"], m["name"]) for m in marks), key=lambda r: r[0])
    starts = [lo for lo, _, _ in ranges]
    groups: dict[str, dict] = collections.defaultdict(lambda: collections.defaultdict(list))
    for k in kernels:
        at = launched.get(k.get("args", {}).get("correlation"))
        name = "unknown"
        if at is not None:
            name = "unmarked"
            # innermost: the latest-starting range that still holds the launch
            for lo, hi, mark in reversed(ranges[:bisect.bisect_right(starts, at)]):
                if at < hi:
                    name = mark
                    break
        grid = tuple(k.get("args", {}).get("grid", ()))
        groups[name][(k["name"][:70], grid)].append(k["dur"])
    out = {}
    for name, kinds in groups.items():
        ranked = sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
        out[name] = dict(kernels=sum(len(d) for d in kinds.values()),
                         ms=sum(sum(d) for d in kinds.values()) / 1e3,
                         top=[(n, list(g), len(d), sum(d) / 1e3) for (n, g), d in ranked[:4]])
    return out


def summarize(events: list[dict], top: int = 12) -> dict:
    """Figures of one Chrome trace's events (`ts` / `dur` in microseconds): kernels, memory
    copies, the marked steps, and CUDA API calls (`cuda_runtime` / `cuda_driver`)."""
    kernels = [e for e in events if e.get("cat") == "kernel"]
    copies = [e for e in events if e.get("cat") in ("gpu_memcpy", "gpu_memset")]
    steps = sorted((e for e in events if e.get("name") == STEP and e.get("cat") == "user_annotation"),
                   key=lambda e: e["ts"])
    api = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    device = [(e["ts"], e["ts"] + e["dur"]) for e in kernels + copies]
    out: dict = dict(kernels=len(kernels), copies=len(copies), steps=len(steps))
    if not device:
        return out
    out["busy_ms"] = union_us(device) / 1e3
    out["span_ms"] = (max(e for _, e in device) - min(s for s, _ in device)) / 1e3
    if steps:
        # The loop's window in host time: the device runs a roughly constant lag behind the
        # host, so the window holds about as much device work as the steps queued.
        lo = steps[0]["ts"]
        hi = steps[-1]["ts"] + steps[-1]["dur"]
        inside = [(max(s, lo), min(e, hi)) for s, e in device if e > lo and s < hi]
        n_in = sum(1 for e in kernels if lo <= e["ts"] < hi)
        loop_ms = (hi - lo) / 1e3
        busy = union_us(inside) / 1e3
        out.update(loop_ms=loop_ms, loop_busy_ms=busy, loop_busy_share=busy / loop_ms,
                   per_step_us=loop_ms * 1e3 / len(steps), busy_per_step_us=busy * 1e3 / len(steps),
                   kernels_per_step=n_in / len(steps),
                   host_step_us=statistics.median(e["dur"] for e in steps))
        out.update(_regular_steps(steps, kernels, api))
        g = gaps_us(inside)
        if g:
            out.update(gaps=len(g), gap_median_us=statistics.median(g),
                       gap_p90_us=sorted(g)[int(0.9 * (len(g) - 1))],
                       gaps_over_50us_ms=sum(x for x in g if x > 50) / 1e3)
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        by_name[e["name"]].append(e["dur"])
    out["top_kernels"] = [(name[:90], len(d), sum(d) / 1e3, statistics.median(d))
                          for name, d in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]]
    by_api: dict[str, list[float]] = collections.defaultdict(list)
    for e in api:
        by_api[e["name"]].append(e["dur"])
    out["top_api"] = [(name, len(d), sum(d) / 1e3)
                      for name, d in sorted(by_api.items(), key=lambda kv: -sum(kv[1]))[:top]]
    marks = [e for e in events if e.get("cat") == "user_annotation" and "ts" in e and "dur" in e]
    out["by_launcher"] = by_launcher(kernels, api, marks)
    return out


def _print(name: str, s: dict) -> None:
    head = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()
            if k not in ("top_kernels", "top_api", "by_launcher")}
    print(f"{name}:", head, flush=True)
    for label, rows, fmt in (("kernels", s.get("top_kernels", []), "{1:6d} x {2:9.3f} ms  med {3:7.1f} us  {0}"),
                             ("API", s.get("top_api", []), "{1:6d} x {2:9.3f} ms  {0}")):
        print(f"  top {label} by total time:")
        for row in rows:
            print("   ", fmt.format(*row))
    print("  kernels by the marked host call that launched them:")
    for mark, g in sorted(s.get("by_launcher", {}).items(), key=lambda kv: -kv[1]["ms"]):
        print(f"    {mark}: {g['kernels']} kernels, {g['ms']:.3f} ms")
        for kernel, grid, count, ms in g["top"]:
            print(f"      {count:6d} x {ms:9.3f} ms  grid {grid}  {kernel}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--seconds", type=float, default=None, help="use only the first S seconds")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["seg", "words"])
    p.add_argument("--warm", type=int, default=2, help="unmeasured runs per configuration first")
    p.add_argument("--rounds", type=int, default=3, help="unprofiled timed runs per configuration")
    p.add_argument("--trace", type=Path, default=None, help="write each Chrome trace here")
    p.add_argument("--mark", nargs="*", default=list(MARKS),
                   help="host calls (module:Class.method) whose launched kernels are counted apart")
    args = p.parse_args(argv)
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile, record_function
    except ImportError:
        raise SystemExit("bench.kernel_timeline needs PyTorch (its profiler reads CUPTI)")
    if not torch.cuda.is_available():
        raise SystemExit("bench.kernel_timeline needs a CUDA device (PyTorch sees none)")

    import lightning_align as la

    def mark(target: str, label: str) -> None:
        module, _, attr = target.partition(":")
        owner_name, _, method = attr.rpartition(".")
        try:
            owner = getattr(importlib.import_module(module), owner_name)
            inner = getattr(owner, method)
        except (ImportError, AttributeError, ValueError) as e:
            raise SystemExit(f"--mark {target}: not found ({e}); give module:Class.method, "
                             "e.g. lightning_align.capture:AttentionProbe.open")

        def marked(*a, **k):
            with record_function(label):
                return inner(*a, **k)
        setattr(owner, method, marked)

    mark("lightning_align.model:CompiledStep.choose", STEP)
    for target in args.mark:
        mark(target, target.partition(":")[2])

    samples = load_samples(args.audio)
    if args.seconds:
        samples = samples[: int(args.seconds * 16000)]
    wm = la.load_model(str(systems.ct2_dir()))
    print(f"audio {len(samples) / 16000:.1f} s, mlx {la.backend.mx.__version__}, "
          f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    scratch = None if args.trace else tempfile.TemporaryDirectory()
    folder = args.trace or Path(scratch.name)
    folder.mkdir(parents=True, exist_ok=True)
    for name in args.configs:
        config = CONFIGS[name]
        for _ in range(args.warm):
            la.transcribe(samples, model=wm, **config)
        walls = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            la.transcribe(samples, model=wm, **config)
            walls.append(time.perf_counter() - t)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t = time.perf_counter()
            la.transcribe(samples, model=wm, **config)
            wall = time.perf_counter() - t
        path = folder / f"trace-{name}.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
        s = summarize(events)
        if not s["kernels"]:
            print(f"{name}: the profiler recorded no kernels (is MLX on the CUDA device?)")
        _print(f"{name} (profiled wall {wall:.3f} s, unprofiled "
               f"{', '.join(f'{w:.3f}' for w in walls)} s)", s)
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
