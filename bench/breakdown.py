"""Where the time of one `transcribe` goes: mel, encoder, decoding, segments, alignment.

    python -m bench.breakdown AUDIO.npy [--batch-size B] [--tile N] [--window-s S]

"decode round N": decoding time of each round of `transcribe._batched` (0: every window).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from . import systems
from .instrument import add_time, time_calls
from .throughput import load_samples


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--tile", type=int, default=1)
    p.add_argument("--window-s", type=float, default=None, help="window cap (default: auto)")
    args = p.parse_args(argv)

    import importlib

    import lightning_align as la

    align_mod = importlib.import_module("lightning_align.align")
    decoding = importlib.import_module("lightning_align.decoding")
    tr = importlib.import_module("lightning_align.transcribe")

    samples = load_samples(args.audio, args.tile)
    wm = la.load_model(str(systems.ct2_dir()))
    totals: dict[str, float] = {}

    def timed(name):
        return add_time(totals, name)

    original_batch = decoding.decode_batch

    def decode_batch(*a, temperature=0.0, **k):
        # A pass whose lowest temperature is 0 is a first pass (with any attempts decoded ahead)
        first = float(np.min(temperature)) == 0
        with timed("decode T=0" if first else "decode T>0 (fallback)"):
            return original_batch(*a, temperature=temperature, **k)
    decoding.decode_batch = decode_batch

    # Rounds: the first decodes every window; each later one the windows decoded again (text
    # that stopped early, timestamps that jumped), which wait for the round before.
    round_no = [-1]
    original_batches, original_decode = tr._batches, tr.decode_with_fallback

    def batches(*a, **k):
        round_no[0] += 1
        yield from original_batches(*a, **k)

    def decode_with_fallback(*a, **k):
        with timed("decode"), timed(f"decode round {round_no[0]}"):
            return original_decode(*a, **k)
    tr._batches, tr.decode_with_fallback = batches, decode_with_fallback

    time_calls(tr, "log_mel_window", totals, "mel")
    time_calls(tr, "window_segments", totals, "segments+capture finalize")
    time_calls(decoding, "select_tokens", totals, "token selection (host)")
    time_calls(align_mod, "_solve", totals, "align: matrix+dtw+words")
    time_calls(align_mod, "_gather_attention", totals, "align: cache lookups")
    original_encode = tr._encode

    def encode(wm_, pieces):
        with timed("mel+encoder"):
            return original_encode(wm_, pieces)
    tr._encode = encode

    for words in (False, True):
        la.transcribe(samples, model=wm, batch_size=args.batch_size, word_timestamps=words,
                      window_s=args.window_s)
        totals.clear()
        round_no[0] = -1
        t = time.perf_counter()
        result = la.transcribe(samples, model=wm, batch_size=args.batch_size, word_timestamps=words,
                               keep_attention=words, window_s=args.window_s)
        wall = time.perf_counter() - t
        print(json.dumps({"words": words, "wall_s": round(wall, 4), "audio_s": len(samples) / 16000,
                          "segments": len(result["segments"]),
                          **{k: round(v, 4) for k, v in totals.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
