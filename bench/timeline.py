"""When the decoder and the aligner thread finish, with word timestamps on and off.

    python -m bench.timeline AUDIO.npy [--tiles 1 4] [--repeat 4]

Each run prints, in seconds from the start of `transcribe`: `decode_end` (the last batch's
decoding, fallback temperatures included), `align_first` / `align_end` (the aligner thread's
first and last hand-off of segments done) and `total`. A words run whose `align_end` sits just
after `decode_end` has no alignment tail: its overhead is the decoding itself running slower
beside the aligner thread.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

from . import systems
from .instrument import mark_return
from .throughput import load_samples


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeat", type=int, default=4)
    args = p.parse_args(argv)

    import lightning_align as la

    tr = importlib.import_module("lightning_align.transcribe")
    wm = la.load_model(str(systems.ct2_dir()))
    marks: dict[str, float] = {}
    mark_return(tr, "decode_with_fallback", marks, "decode_end")
    align = tr._align_segments

    def timed_align(segments):
        marks.setdefault("align_first", time.perf_counter())
        align(segments)
        marks["align_end"] = time.perf_counter()

    tr._align_segments = timed_align
    for tile in args.tiles:
        samples = load_samples(args.audio, tile)
        for words in (True, False):  # warm-up
            la.transcribe(samples, model=wm, word_timestamps=words)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeat):
            for words in (False, True):
                marks.clear()
                t0 = time.perf_counter()
                la.transcribe(samples, model=wm, word_timestamps=words)
                row = {k: v - t0 for k, v in marks.items()}
                row["total"] = time.perf_counter() - t0
                runs[words].append(row)
                print(f"{len(samples) / 16000:.0f} s words={words}",
                      {k: round(v, 3) for k, v in row.items()}, flush=True)
        for words, rows in runs.items():
            med = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
            print(f"median {len(samples) / 16000:.0f} s words={words}", med, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
