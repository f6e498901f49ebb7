"""Where keeping the attention costs: segment-only, capture, capture without mid-pass settling,
capture settling without the side stream and the deeper queue (as before 2026-12-07), words
with and without them and without mid-pass settling (`words-nosettle`: all windows aligned
after the pass), and capture / words keeping only the calibrated heads (`-calheads`:
tiny.en 4 instead of the 10 it captures, what capturing fewer heads would save; the default
words need no others), in alternating order in one process.

    python -m bench.capture_parts AUDIO.npy [--rounds 6] [--seconds S] [--emulate] [--configs ...]

Each run prints its `total` and `decode_end` (seconds from the start of `transcribe`) and the
host time spent inside the probe's calls that wait for the device: `open` (new query buffers
at the start and at each shrink), `ended_rows` (the attention of rows settled mid-pass),
`per_row` (the collection at the end of a pass) and `host_views` (segments' attention copied
off the device). Then medians per configuration and each one's overhead over segment-only,
paired round by round. What capture costs beyond these calls is spent in the decoding steps
themselves. `--emulate` runs the device loop on a CPU (for testing the harness only: the
CPU's figures say nothing about a GPU's).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import statistics
import time

from . import systems
from .instrument import mark_return, time_calls
from .throughput import load_samples

CONFIGS = {"seg": dict(keep_attention=False), "capture": {}, "capture-nosettle": {},
           "capture-noside": {}, "words": dict(word_timestamps=True),
           "words-noside": dict(word_timestamps=True), "words-nosettle": dict(word_timestamps=True),
           "capture-calheads": {}, "words-calheads": dict(word_timestamps=True)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=None, help="use only the first S seconds")
    p.add_argument("--emulate", action="store_true")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   help="run only these (seg is always run: overheads are over it)")
    args = p.parse_args(argv)
    configs = {name: CONFIGS[name] for name in CONFIGS if name in args.configs or name == "seg"}

    import lightning_align as la

    dec = importlib.import_module("lightning_align.decoding")
    cap = importlib.import_module("lightning_align.capture")
    tr = importlib.import_module("lightning_align.transcribe")
    if args.emulate:
        dec.DecodingOptions.tokens_on_device = lambda self: True
    spent: dict[str, float] = {}
    for name in ("open", "ended_rows", "per_row"):
        time_calls(cap.AttentionProbe, name, spent)
    time_calls(tr, "host_views", spent)
    marks: dict[str, float] = {}
    mark_return(tr, "decode_with_fallback", marks, "decode_end")
    settle = {"on": True}
    decode_batch = dec.decode_batch

    def maybe_settling(*a, **k):
        if not settle["on"]:
            k["settle"] = None
        return decode_batch(*a, **k)
    dec.decode_batch = maybe_settling
    side_stream, settle_ahead = cap.side_stream, dec.SETTLE_AHEAD_STEPS

    def main_stream():
        return la.backend.mx.default_stream(la.backend.mx.default_device())

    all_heads = la.WhisperModel.captured_heads

    def calibrated_only(self):
        return tuple(sorted(map(tuple, self.timing_calibration.heads)))

    samples = load_samples(args.audio)
    if args.seconds:
        samples = samples[: int(args.seconds * 16000)]
    wm = la.load_model(str(systems.ct2_dir()))

    def configure(name: str) -> None:
        settle["on"] = not name.endswith("-nosettle")
        side = not name.endswith("-noside")
        cap.side_stream = side_stream if side else main_stream
        dec.SETTLE_AHEAD_STEPS = settle_ahead if side else 0
        la.WhisperModel.captured_heads = (property(calibrated_only)
                                          if name.endswith("-calheads") else all_heads)

    for name, config in configs.items():  # warm-up: compile every graph once
        configure(name)
        la.transcribe(samples, model=wm, **config)
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    for r in range(args.rounds):
        order = list(configs) if r % 2 == 0 else list(configs)[::-1]
        for name in order:
            configure(name)
            spent.clear()
            marks.clear()
            t0 = time.perf_counter()
            la.transcribe(samples, model=wm, **configs[name])
            row = dict(total=time.perf_counter() - t0, decode_end=marks["decode_end"] - t0,
                       **spent)
            runs[name].append(row)
            print(name, r, {k: round(v, 4) for k, v in row.items()}, flush=True)
    configure("capture")
    for name, rows in runs.items():
        keys = sorted({k for row in rows for k in row})
        print("median", name, {k: round(statistics.median(row.get(k, 0.0) for row in rows), 4)
                               for k in keys})
    for name in configs:
        if name != "seg":
            ratios = [a["total"] / b["total"] - 1 for a, b in zip(runs[name], runs["seg"])]
            print(f"paired over seg {name}: {statistics.median(ratios) * 100:+.1f} %",
                  "(" + ", ".join(f"{q * 100:+.0f}" for q in ratios) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
