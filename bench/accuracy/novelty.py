"""Experiment (session 19, not a default): encoder novelty as a cost for starting words.

    python -m bench.accuracy.novelty [--k 2] [--lam 0.3 0.8] [--floor -3] [--sets ...]

Needs the stored transcripts (`python -m bench.accuracy.transcripts calibration evaluation
real`). For each window of each stored clip the encoder runs again; a frame's novelty is the
cosine distance between the encoder's mean output over the `k` frames (20 ms) before it and
over the `k` after it, standardised over the window's audio frames and clipped to
[`floor`, 3]. The DTW's onset cost (`refine.onset_costs`) is lowered by `lam` x that, so a word
may start more cheaply where the representation changes. Prints start / end MAE (ms) and the
share within 50 ms per set, the default first. Results and why it is not the default:
docs/accuracy.md ("Tried, not kept", session 19).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import metrics, transcripts

SAMPLE_RATE = 16000
FRAMES_PER_S = 50


def novelty(h: np.ndarray, k: int) -> np.ndarray:
    """(frames, C) encoder output -> (frames,) cosine distance between the mean of the k
    frames before each frame and of the k from it on; 0 where either side is short."""
    out = np.zeros(len(h))
    c = np.concatenate([np.zeros((1, h.shape[1])), np.cumsum(h, 0)])
    t = np.arange(k, len(h) - k + 1)
    a, b = (c[t] - c[t - k]) / k, (c[t + k] - c[t]) / k
    out[t] = 1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
    return out


def clip_novelty(wm, clip, segments, k: int) -> np.ndarray:
    """Standardised novelty on the clip's 20 ms grid, from the encoder run on each window of
    the stored segments (a later window overwrites the frames it shares with an earlier)."""
    import mlx.core as mx

    from lightning_align.mel import log_mel_window

    duration = len(clip.audio) / SAMPLE_RATE
    grid = np.zeros(int(duration * FRAMES_PER_S) + 2)
    for w0 in sorted({s.source.window_start_s for s in segments}):
        audio = clip.audio[int(w0 * SAMPLE_RATE) : int(min(duration, w0 + 30) * SAMPLE_RATE)]
        mel = log_mel_window(audio, wm.dims.n_mels)
        h = np.asarray(wm.model.embed_audio(mx.array(mel[None]))[0]).astype(np.float64)
        n = int(len(audio) / SAMPLE_RATE * FRAMES_PER_S)
        nov = novelty(h[:n], k)
        z = (nov - nov.mean()) / (nov.std() + 1e-9)
        f0 = int(round(w0 * FRAMES_PER_S))
        grid[f0 : f0 + n] = z[: len(grid) - f0]
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--lam", type=float, nargs="+", default=[0.3, 0.8])
    p.add_argument("--floor", type=float, default=-3.0)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--sets", nargs="+", default=["calibration", "evaluation", "real"],
                   help="stored sets to score (real-more: the larger real-speech set)")
    args = p.parse_args(argv)

    import lightning_align as la
    from lightning_align import refine

    align_module = sys.modules["lightning_align.align"]
    onset_costs = align_module.onset_costs
    wm = la.load_model(args.model)
    sets = {name: transcripts.load(name, wm) for name in args.sets}
    grids = {id(clip.audio): clip_novelty(wm, clip, live, args.k)
             for stored in sets.values() for clip, live in stored}
    lam = {"now": 0.0}

    def with_novelty(samples, frame0_s, n_frames, scale, floor_percentile=5.0):
        out = onset_costs(samples, frame0_s, n_frames, scale, floor_percentile)
        grid = grids.get(id(samples))
        if grid is None or not lam["now"]:
            return out
        f0 = int(round(frame0_s * FRAMES_PER_S))
        part = np.zeros(n_frames)
        m = max(0, min(n_frames, len(grid) - f0))
        part[:m] = grid[f0 : f0 + m]
        return out - lam["now"] * np.clip(part, args.floor, 3.0)

    # the per-segment path calls `onset_costs` from Python; the packed kernel computes its own
    align_module.onset_costs = with_novelty
    align_module._packable = lambda *a, **k: False
    for value in [0.0] + args.lam:
        lam["now"] = value
        refine._envelopes.clear()
        line = [f"{'more' if name == 'real-more' else name[:4]} "
                f"{metrics.brief(metrics.score(transcripts.realign(stored)))}"
                for name, stored in sets.items()]
        print(f"{'default' if not value else f'lam {value}':10s}", "  ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
