"""Throughput of lightning-align and its peers, side by side, as JSON lines.

    python -m bench.throughput AUDIO.(wav|npy) [--systems ...] [--repeat N] [--out FILE]

Runs each system on the same samples after one warm-up run, and prints one JSON object per
measurement: system, audio seconds, wall seconds, realtime factor, words, batch size, machine.
`--interleave` runs the systems in rounds (rows then carry `round`), so `bench.report` can pair
each words run with the segment-only run of the same round: on hosts whose speed drifts by
+-15 % over minutes, back-to-back repeats of one system and then the other compare two moments
of the machine as much as two systems.
Works on CPU here and on the GPU machine (MLX CUDA build, PyTorch CUDA for openai-whisper).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import systems
from .wer import word_error_rate


def load_samples(path: str, tile: int = 1) -> np.ndarray:
    if path.endswith(".npy"):
        samples = np.load(path)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
    else:
        from lightning_align import load_audio

        samples = load_audio(path)
    return np.tile(samples, tile) if tile > 1 else samples


def machine() -> dict:
    import mlx.core as mx

    from lightning_align import model
    from lightning_align.backend import BLAS_LIBRARY, gpu_available

    info = {"python": platform.python_version(), "mlx": mx.__version__,
            "device": "gpu" if gpu_available() else "cpu", "cpu": platform.processor() or platform.machine(),
            "blas": BLAS_LIBRARY, "cache_write": model.CACHE_WRITE}
    try:
        import subprocess

        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if gpu:
            info["gpu"] = gpu
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--tile", type=int, default=1, help="repeat the audio N times")
    p.add_argument("--systems", default="lightning,lightning+words,mlx-whisper,mlx-whisper+words")
    p.add_argument("--batch-sizes", default="", help="comma-separated, for lightning (default: auto)")
    p.add_argument("--window-s", default="", help="comma-separated window caps for lightning, "
                   "seconds or 'auto' (the library's default)")
    p.add_argument("--fallback-ahead", default="auto",
                   help="lightning's DecodingOptions.fallback_ahead: 'auto' or a number (0: off)")
    p.add_argument("--reference", default=None, help="text file of the spoken words: adds WER")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--interleave", action="store_true",
                   help="run the systems in rounds (each once per round, the order reversed every "
                        "other round) instead of one system's repeats back to back: a host that "
                        "drifts over minutes then slows both sides of a comparison alike")
    p.add_argument("--vary-seed", action="store_true",
                   help="lightning's fallback samples drawn with seed r in round r (warm-up: seed "
                        "0) instead of seed 0 in every run: each run is then another draw of the "
                        "fallback's luck, as mlx-whisper's runs are (its random state moves on "
                        "from run to run)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip lightning_align.warm_up before the runs (on a GPU it compiles the "
                        "decoding kernels once, as a service does at start; no-op on the CPU)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import lightning_align as la

    if args.out:  # before the minutes a fresh GPU's warm-up takes, not after them
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = open(args.out, "a") if args.out else None
    samples = load_samples(args.audio, args.tile)
    audio_s = len(samples) / 16000
    wm = la.load_model(str(systems.ct2_dir()))
    gpu = la.backend.gpu_available()
    info = machine()
    if not args.no_warm_up and any(n.startswith("lightning") for n in args.systems.split(",")):
        # A service warms up once at start; without it a kernel variant first met inside a timed
        # run (a one-row batch at a fallback temperature) costs that run seconds of compiling.
        info["warm_up_s"] = round(la.warm_up(wm), 2)
        print(f"warm_up {info['warm_up_s']} s", file=sys.stderr, flush=True)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
    windows = [None if w == "auto" else float(w) for w in args.window_s.split(",") if w] or [None]
    reference = open(args.reference).read() if args.reference else None
    ahead = args.fallback_ahead if args.fallback_ahead == "auto" else int(args.fallback_ahead)

    def runners():
        for name in args.systems.split(","):
            if name.startswith("lightning"):
                for b, w in ((b, w) for b in batch_sizes for w in windows):
                    kw = {"model": wm, "batch_size": b, "window_s": w, "fallback_ahead": ahead}
                    if name == "lightning":
                        yield name, (b, w), lambda kw=kw, seed=0: systems.lightning(samples, seed=seed, **kw)
                    elif name == "lightning+capture":
                        yield name, (b, w), lambda kw=kw, seed=0: systems.lightning(
                            samples, keep_attention=True, seed=seed, **kw)
                    elif name == "lightning+words":
                        yield name, (b, w), lambda kw=kw, seed=0: systems.lightning(
                            samples, words=True, seed=seed, **kw)
                    elif name.startswith("lightning+lazy"):
                        frac = float(name.split("lazy")[1]) / 100
                        yield name, (b, w), lambda kw=kw, f=frac: sum_runs(systems.lightning_lazy(samples, fraction=f, **kw))
            elif name == "mlx-whisper":
                yield name, None, lambda: systems.mlx_whisper(samples, fp16=gpu)
            elif name == "mlx-whisper+words":
                yield name, None, lambda: systems.mlx_whisper(samples, words=True, fp16=gpu)
            elif name == "faster-whisper":
                yield name, None, lambda: systems.faster_whisper(samples)
            elif name == "faster-whisper+words":
                yield name, None, lambda: systems.faster_whisper(samples, words=True)
            elif name == "openai-whisper":
                yield name, None, lambda: systems.openai_whisper(samples, device="cuda" if gpu else "cpu")
            elif name == "openai-whisper+words":
                yield name, None, lambda: systems.openai_whisper(samples, words=True, device="cuda" if gpu else "cpu")
            else:
                raise SystemExit(f"unknown system {name}")

    cases = list(runners())
    if args.interleave:
        schedule = [(r, case) for r in range(args.repeat)
                    for case in (cases if r % 2 == 0 else cases[::-1])]
    else:
        schedule = [(r, case) for case in cases for r in range(args.repeat)]
    invocation = round(time.time(), 3)  # tells this call's rounds from another's in one file
    warm: set[int] = set()
    for round_, (name, settings, run) in schedule:
        batch, window = settings if isinstance(settings, tuple) else (settings, None)
        if id(run) not in warm:
            run()  # warm-up: compilation, caches, first-call costs
            warm.add(id(run))
        seed = round_ if args.vary_seed and name in SEEDED else 0
        r = run(seed=seed) if seed else run()
        row = {"system": name, "batch_size": batch, "audio_s": round(audio_s, 2),
               "wall_s": round(r.wall_s, 4), "rtf": round(audio_s / r.wall_s, 2),
               "segments": len(r.segments), "words": r.words, "model": wm.name,
               "time": time.time(), **info}
        if args.interleave:
            row["round"], row["invocation"] = round_, invocation
        if name.startswith("lightning"):
            row["window_s"] = window if window is not None else "auto"
            row["fallback_ahead"] = ahead
            row["seed"] = seed
        if reference is not None:
            text = " ".join(s["text"] if isinstance(s, dict) else s.text for s in r.segments)
            row["wer"] = round(word_error_rate(" ".join([reference] * args.tile), text), 4)
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
    return 0


SEEDED = ("lightning", "lightning+capture", "lightning+words")  # the runners taking a seed


def sum_runs(pair):
    first, second = pair
    return systems.Run(first.wall_s + second.wall_s, second.segments, second.words)


if __name__ == "__main__":
    sys.exit(main())
