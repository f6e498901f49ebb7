"""Experiment (session 20, not a default): the energy dips on generated against real speech.

    python -m bench.accuracy.dip_trade gate     # dips gated by their depth
    python -m bench.accuracy.dip_trade reach    # other dip reaches

Needs the stored transcripts of all four sets (`python -m bench.accuracy.transcripts
calibration evaluation real real-more`). Prints start / end MAE (ms) and the share within
50 ms per set, the default first.

`gate`: a boundary inside speech moves to its dip only where the level at the DTW's boundary
is D dB over the dip's (`over`, D = 1 / 3 / 6), or where the levels within the reach span D dB
(`span`, D = 6 / 10 / 15); other boundaries stay where the DTW put them. `reach`: the dip
search's reach ± 30 / 45 / 80 ms instead of ± 60 ms. Results and why neither is the default:
docs/accuracy.md ("Tried, not kept", session 20).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import metrics, transcripts

SETS = ("calibration", "evaluation", "real", "real-more")


def depth_gate(snap, kind: str, depth_db: float):
    """`kernels.boundaries.snap_to_dips` with boundaries whose dip is shallower than
    `depth_db` marked fixed first (see the module docstring for `kind`)."""

    def gated(starts, ends, fixed, db, origin_s, hop_s, reach_s, min_word_s, tolerance_db,
              half_window_s):
        fixed = np.array(fixed, bool)
        for i in range(len(starts) - 1):
            if fixed[i]:
                continue
            t = starts[i + 1]
            lo = max(0, int(np.ceil((t - reach_s - origin_s) / hop_s - 1e-9)))
            hi = min(len(db), int(np.floor((t + reach_s - origin_s) / hop_s + 1e-9)) + 1)
            if hi - lo < 1:
                continue
            levels = db[lo:hi]
            at = db[min(len(db) - 1, max(0, int(round((t - origin_s) / hop_s))))]
            depth = at - levels.min() if kind == "over" else levels.max() - levels.min()
            fixed[i] = depth < depth_db
        return snap(starts, ends, fixed, db, origin_s, hop_s, reach_s, min_word_s, tolerance_db,
                    half_window_s)
    return gated


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("gate", "reach"))
    p.add_argument("--model", default="tiny.en")
    args = p.parse_args(argv)

    import lightning_align as la
    from lightning_align import refine
    from lightning_align.refine import RefineOptions

    wm = la.load_model(args.model)
    sets = {name: transcripts.load(name, wm) for name in SETS}
    snap = refine._kernels.snap_to_dips
    # the packed kernel path runs its own snapping; the per-segment path calls the module's
    sys.modules["lightning_align.align"]._packable = lambda *a, **k: False
    if args.what == "gate":
        variants = [("default", snap, None)] + [
            (f"{kind} {d:g} dB", depth_gate(snap, kind, d), None)
            for kind, ds in (("over", (1, 3, 6)), ("span", (6, 10, 15))) for d in ds]
    else:
        variants = [("default", snap, None)] + [
            (f"reach {r * 1000:g} ms", snap, la.AlignOptions(refine_options=RefineOptions(dip_reach_s=r)))
            for r in (0.03, 0.045, 0.08)]
    try:
        for label, fn, options in variants:
            refine._kernels.snap_to_dips = fn
            line = [f"{name:11s} {metrics.brief(metrics.score(transcripts.realign(stored, options)))}"
                    for name, stored in sets.items()]
            print(f"{label:14s}", "  ".join(line), flush=True)
    finally:
        refine._kernels.snap_to_dips = snap
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
