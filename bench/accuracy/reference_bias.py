"""Analysis (session 20): how much of the real-speech error is the reference's own bias.

    python -m bench.accuracy.reference_bias [--model tiny.en]

The real sets are scored against pocketsphinx's forced alignment, whose own error is measured
on the generated evaluation set against the exact truth (`datasets.reference_error`). This
prints that bias (mean signed error of its starts and ends), then the default method's figures
on the stored real sets (`python -m bench.accuracy.transcripts real real-more`) against the
reference as it is and with that bias taken out of its boundaries. Espeak's speech is not
real speech, so the second figure is an estimate of what the reference's bias hides, not a
replacement for the first.
"""

from __future__ import annotations

import argparse

from . import datasets, metrics, transcripts
from .metrics import TimedWord


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny.en")
    args = p.parse_args(argv)

    import lightning_align as la

    wm = la.load_model(args.model)
    ref = metrics.score(datasets.reference_error(datasets.evaluation_set()))
    start_bias, end_bias = ref.starts.mean_signed_ms / 1000, ref.ends.mean_signed_ms / 1000
    print(f"pocketsphinx against the truth (evaluation set): start MAE {ref.starts.mae_ms:.1f} ms, "
          f"{ref.starts.within[50] * 100:.1f} % within 50 ms, start lag {start_bias * 1000:+.1f} ms, "
          f"end lag {end_bias * 1000:+.1f} ms")
    for name in ("real", "real-more"):
        pairs = transcripts.realign(transcripts.load(name, wm))
        for label, shift in (("reference as is", (0.0, 0.0)),
                             ("its bias taken out", (-start_bias, -end_bias))):
            sc = metrics.score([(tuple(TimedWord(w.word, w.start + shift[0], w.end + shift[1],
                                                 w.score_start, w.score_end) for w in ref), words)
                                for ref, words in pairs])
            print(f"{name:9s} {label:18s} starts {sc.starts.mae_ms:5.1f} ms "
                  f"{sc.starts.within[50] * 100:4.1f} % lag {sc.starts.mean_signed_ms:+3.0f} | ends "
                  f"{sc.ends.mae_ms:5.1f} ms {sc.ends.within[50] * 100:4.1f} % lag "
                  f"{sc.ends.mean_signed_ms:+3.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
