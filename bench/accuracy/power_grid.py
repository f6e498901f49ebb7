"""Experiment (session 26, not a default): the attention power with the token contrast and the
onset cost chosen again for it.

    python -m bench.accuracy.power_grid                       # the main grid (80 settings)
    python -m bench.accuracy.power_grid --powers 0.6 0.7 0.8 0.9 --contrasts 0.25 0.35 0.5 \\
        --onsets 4 5 6 8                                      # one of its extensions

Needs the stored transcripts of the five sets (`python -m bench.accuracy.transcripts
calibration calibration-b evaluation real real-more`). Each line is one setting of
`AlignOptions(attention_power=p, token_contrast=c, onset_cost=o)`, the default's line first:
the sum of start and end MAE over both calibration sets (the criterion the defaults are chosen
by), then start MAE (ms) and share within 50 ms, end MAE and share, per set. Results, and why
the default stays: docs/accuracy.md ("Tried, not kept", session 26).
"""

from __future__ import annotations

import argparse
import itertools

from . import metrics, transcripts

SETS = ("calibration", "calibration-b", "evaluation", "real", "real-more")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--powers", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    p.add_argument("--contrasts", type=float, nargs="+", default=[0.15, 0.25, 0.35, 0.5])
    p.add_argument("--onsets", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    args = p.parse_args(argv)

    import lightning_align as la

    wm = la.load_model(args.model)
    sets = {name: transcripts.load(name, wm) for name in SETS}
    default = la.AlignOptions()
    grid = [(default.attention_power, default.token_contrast, default.onset_cost)]
    grid += [g for g in itertools.product(args.powers, args.contrasts, args.onsets) if g != grid[0]]
    for power, contrast, onset in grid:
        options = la.AlignOptions(attention_power=power, token_contrast=contrast,
                                  onset_cost=onset)
        scores = {name: metrics.score(transcripts.realign(stored, options))
                  for name, stored in sets.items()}
        criterion = sum(scores[n].starts.mae_ms + scores[n].ends.mae_ms for n in SETS[:2])
        cells = "  ".join(f"{name} {metrics.brief(s)}" for name, s in scores.items())
        print(f"p={power:<4g} c={contrast:<4g} o={onset:<3g} calibration {criterion:6.1f}  {cells}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
