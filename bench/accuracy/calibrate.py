"""Calibrate head weights and lags per model on the CALIBRATION set; write them as data.

Procedure (docs/accuracy.md): score each curated alignment head alone (one-pass DTW, no other
correction); rank heads by start + end MAE; keep the best k heads (k in 1..n, equal weights)
that minimise start + end MAE together; the lags are the mean signed start and end errors of
that choice. Written to lightning_align/data/timing_calibration.json, keyed by model name and
head pairs. Run: `python -m bench.accuracy.calibrate [model ...]`.
"""

from __future__ import annotations

import json
import sys

import lightning_align as la
from lightning_align.align import CALIBRATION_FILE, AlignOptions, Calibration

from . import datasets, metrics


def _score(clips, transcripts, options: AlignOptions) -> metrics.Scores:
    pairs = []
    for clip, tr in zip(clips, transcripts):
        la.align(tr["segments"], force=True, options=options)
        pairs.append((clip.words, [w for s in tr["segments"] for w in s["words"]]))
    return metrics.score(pairs)


def calibrate(model_name: str | None = None, log=print) -> dict:
    """-> the calibration entry of one model (see module docstring)."""
    wm = la.load_model(model_name)
    pairs = tuple(map(tuple, wm.alignment_heads.pairs))
    clips = datasets.calibration_set()
    transcripts = [la.transcribe(c.audio, model=wm) for c in clips]

    def options(weights, lag=(0.0, 0.0)):
        return AlignOptions(head_weights=True, lag=False, refine=False,
                            calibration=Calibration(pairs, tuple(weights), *lag))

    cost = {}
    for h in range(len(pairs)):
        s = _score(clips, transcripts, options([float(k == h) for k in range(len(pairs))]))
        cost[h] = s.starts.mae_ms + s.ends.mae_ms
        log(f"head {pairs[h]}: start MAE {s.starts.mae_ms:.1f} ms, end MAE {s.ends.mae_ms:.1f} ms")
    order = sorted(cost, key=cost.get)
    best = None
    for k in range(1, len(pairs) + 1):
        weights = [1.0 if h in order[:k] else 0.0 for h in range(len(pairs))]
        s = _score(clips, transcripts, options(weights))
        total = s.starts.mae_ms + s.ends.mae_ms
        log(f"best {k} heads: start MAE {s.starts.mae_ms:.1f} ms, end MAE {s.ends.mae_ms:.1f} ms")
        if best is None or total < best[0]:
            best = (total, weights, s)
    _, weights, s = best
    return {"pairs": [list(p) for p in pairs], "head_weights": weights,
            "start_lag_s": round(s.starts.mean_signed_ms / 1000, 4),
            "end_lag_s": round(s.ends.mean_signed_ms / 1000, 4),
            "calibrated_on": f"bench.accuracy.datasets.calibration_set(): {s.n_ref} words"}


def main(argv: list[str]) -> None:
    names = argv or [None]
    try:
        table = json.loads(CALIBRATION_FILE.read_text())
    except FileNotFoundError:
        table = {"source": "python -m bench.accuracy.calibrate", "models": {}}
    for name in names:
        entry = calibrate(name)
        table["models"][la.load_model(name).name] = entry
        print(json.dumps(entry))
    CALIBRATION_FILE.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
