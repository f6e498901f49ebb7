"""A fresh machine's first transcriptions: what MLX's kernel compiling costs, and what
`warm_up` takes off it.

    python -m bench.coldstart AUDIO.npy [--tile 4] [--seeds 2 1] [--no-warm-up]

Points `MLX_PTX_CACHE_DIR` at a new empty directory (MLX reads it at its first compile, so
this runs in a process of its own), then: `warm_up` (unless `--no-warm-up`), with its seconds
and the kernel modules it compiled; one segment-only transcription of the audio per seed (seed
2 on the 30-minute tile is the window decoded alone at a fallback temperature that stopped the
official runs for 21-34 s); and one with word timestamps. Each prints its seconds, the modules
compiled during it, and the longest wall time between two decoding steps. On a CPU there is
nothing to compile: use it on the GPU machine.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--tile", type=int, default=4, help="repeat the audio N times")
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 1])
    p.add_argument("--no-warm-up", action="store_true")
    args = p.parse_args(argv)
    cache = tempfile.mkdtemp(prefix="mlx-ptx-")
    os.environ["MLX_PTX_CACHE_DIR"] = cache  # before lightning_align (and MLX) compile anything

    import lightning_align as la
    from lightning_align import model as mdl

    from . import systems
    from .throughput import load_samples

    def modules() -> int:
        return len(glob.glob(os.path.join(cache, "*.ptx")))

    gaps = {"longest": 0.0, "last": None}
    choose = mdl.CompiledStep.choose

    def timed_choose(self, *a, **k):
        now = time.perf_counter()
        if gaps["last"] is not None:
            gaps["longest"] = max(gaps["longest"], now - gaps["last"])
        try:
            return choose(self, *a, **k)
        finally:
            gaps["last"] = time.perf_counter()

    mdl.CompiledStep.choose = timed_choose
    wm = la.load_model(str(systems.ct2_dir()))
    samples = load_samples(args.audio, args.tile)
    print(f"kernel cache {cache}; audio {len(samples) / 16000:.0f} s", flush=True)
    if not args.no_warm_up:
        before = modules()
        print(f"warm_up {la.warm_up(wm):.1f} s, {modules() - before} modules compiled", flush=True)
        before = modules()
        print(f"warm_up again {la.warm_up(wm):.2f} s, {modules() - before} modules compiled",
              flush=True)
    runs = [("segment-only", seed, dict(keep_attention=False, seed=seed)) for seed in args.seeds]
    runs.append(("words", args.seeds[0], dict(word_timestamps=True, seed=args.seeds[0])))
    for name, seed, kwargs in runs:
        before = modules()
        gaps.update(longest=0.0, last=None)
        t = time.perf_counter()
        result = la.transcribe(samples, model=wm, **kwargs)
        print(f"{name} seed {seed}: {time.perf_counter() - t:.2f} s, {modules() - before} modules "
              f"compiled, longest time between two steps {gaps['longest']:.2f} s, "
              f"{len(result['segments'])} segments", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
