"""Choose each model's alignment heads for the one-pass DTW on the CALIBRATION set; ship as data.

Procedure (docs/accuracy.md): transcribe every calibration clip once while capturing all decoder
heads; greedy forward selection (add the head that most lowers start + end MAE, heads equally
weighted, stop after 3 rounds without improvement) on 6 random halves of the clips (seed 7);
keep the heads chosen in at least 5 of the 6 runs, equally weighted. Running it on halves and
keeping only what recurs is what stops it from fitting the set (docs/accuracy.md). The lags
are the chosen heads' mean signed start and end errors on the whole set (recorded; the default
does not subtract them). Written to lightning_align/data/timing_calibration.json.
Run: `python -m bench.accuracy.calibrate [model ...]` (about 15 minutes for tiny.en on 2 cores).
"""

from __future__ import annotations

import json
import sys

import numpy as np

import lightning_align as la
from lightning_align.align import AlignOptions
from lightning_align.calibration import CALIBRATION_FILE, Calibration, calibration

from . import datasets, metrics

HALVES, KEEP_IN, SEED, PATIENCE = 6, 5, 7, 3


def _score(clips, transcripts, heads) -> metrics.Scores:
    options = AlignOptions(head_weights=True, lag=False, refine=False, onset_cost=0.0,
                           token_contrast=0.0, anchors=False,
                           calibration=Calibration(tuple(heads), (1.0,) * len(heads), 0.0, 0.0))
    pairs = []
    for clip, tr in zip(clips, transcripts):
        la.align(tr["segments"], force=True, options=options)
        pairs.append((clip.words, [w for s in tr["segments"] for w in s["words"]]))
    return metrics.score(pairs)


def _cost(clips, transcripts, heads) -> float:
    s = _score(clips, transcripts, heads)
    return s.starts.mae_ms + s.ends.mae_ms


def greedy(clips, transcripts, pool, log=print) -> list[tuple[int, int]]:
    """Forward selection of heads from `pool` minimising start + end MAE (equal weights)."""
    chosen: list[tuple[int, int]] = []
    best, best_at, history = None, 0, []
    while len(chosen) < len(pool):
        cost, head = min((_cost(clips, transcripts, chosen + [h]), h) for h in pool if h not in chosen)
        chosen.append(head)
        history.append(list(chosen))
        if best is None or cost < best - 1e-9:
            best, best_at = cost, len(chosen)
        elif len(chosen) - best_at >= PATIENCE:
            break
    log(f"  greedy: {history[best_at - 1]} (start+end MAE {best:.1f} ms)")
    return history[best_at - 1]


def calibrate(model_name: str | None = None, log=print) -> dict:
    """-> the calibration entry of one model (see module docstring)."""
    wm = la.load_model(model_name)
    dims = wm.dims
    pool = [(layer, head) for layer in range(dims.n_text_layer) for head in range(dims.n_text_head)]
    wm.extra_heads = tuple(pool)
    clips = datasets.calibration_set()
    log(f"{wm.name}: transcribing {len(clips)} calibration clips, capturing all {len(pool)} heads")
    transcripts = [la.transcribe(c.audio, model=wm) for c in clips]
    rng = np.random.default_rng(SEED)
    counts: dict[tuple[int, int], int] = {}
    for k in range(HALVES):
        half = rng.permutation(len(clips))[: len(clips) // 2]
        for head in greedy([clips[i] for i in half], [transcripts[i] for i in half], pool, log):
            counts[head] = counts.get(head, 0) + 1
    heads = sorted(h for h, n in counts.items() if n >= KEEP_IN)
    if not heads:  # nothing recurs: fall back to the most frequent head
        heads = [max(counts, key=counts.get)]
    s = _score(clips, transcripts, heads)
    log(f"chosen {heads}: start MAE {s.starts.mae_ms:.1f} ms, end MAE {s.ends.mae_ms:.1f} ms "
        f"(times chosen: {sorted(counts.items(), key=lambda kv: -kv[1])})")
    wm.extra_heads = ()
    return {"fingerprint": wm.fingerprint,
            "curated": [list(p) for p in wm.alignment_heads.pairs], "heads": [list(h) for h in heads],
            "head_weights": [1.0] * len(heads),
            "start_lag_s": round(s.starts.mean_signed_ms / 1000, 4),
            "end_lag_s": round(s.ends.mean_signed_ms / 1000, 4),
            "calibrated_on": f"bench.accuracy.datasets.calibration_set(): {len(clips)} clips, "
                             f"{s.n_ref} words ({s.matched} matched)"}


def write(table: dict) -> None:
    """The calibration file, one line per list so that diffs stay readable."""
    lines = ["{", f' "source": {json.dumps(table["source"])},', ' "models": {']
    models = list(table["models"].items())
    for i, (name, entry) in enumerate(models):
        fields = [f'   {json.dumps(k)}: {json.dumps(v)}' for k, v in entry.items()]
        lines += [f'  {json.dumps(name)}: {{', ",\n".join(fields), "  }" + ("," if i < len(models) - 1 else "")]
    lines += [" }", "}"]
    CALIBRATION_FILE.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> None:
    try:
        table = json.loads(CALIBRATION_FILE.read_text())
    except FileNotFoundError:
        table = {"models": {}}
    table["source"] = ("python -m bench.accuracy.calibrate: greedy forward selection over all "
                       "decoder heads on 6 random halves of the generated calibration set; heads "
                       "chosen in at least 5 of 6, equally weighted")
    for name in argv or [None]:
        entry = calibrate(name)
        table["models"][la.load_model(name).name] = entry
        print(json.dumps(entry))
    write(table)
    calibration.cache_clear()


if __name__ == "__main__":
    main(sys.argv[1:])
