"""Where the one-pass error comes from: per-word errors broken down by position, snapping, SNR,
voice and rate, on stored transcripts (`bench.accuracy.transcripts`; the decoder is not re-run).

`python -m bench.accuracy.analyze [calibration|evaluation|real]`
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import numpy as np

import lightning_align as la
from lightning_align.align import AlignOptions

from . import metrics, transcripts


@dataclass
class WordError:
    clip: str
    word: str
    start_err: float  # seconds, > 0 late; nan where not scored
    end_err: float
    position: str  # first / after-pause / inside / (last is marked by `last`)
    last: bool
    gap_after: float  # reference silence after the word (s)
    start_snapped: bool
    end_snapped: bool
    snr: str
    voice: str
    rate: str
    ref_start: float = 0.0
    ref_end: float = 0.0
    hyp_start: float = 0.0
    hyp_end: float = 0.0
    raw_start: float = 0.0  # before refinement
    raw_end: float = 0.0
    gap_before: float = 0.0


def _flat(segments):
    out = []
    for s_i, seg in enumerate(segments):
        words = seg.get("words", [])
        for k, w in enumerate(words):
            out.append((w, s_i, k, len(words)))
    return out


def align_words(live, options: AlignOptions):
    la.align(live, force=True, options=options)
    return _flat(live)


def errors(stored, options: AlignOptions = AlignOptions(), pause_s: float = 0.1) -> list[WordError]:
    """Per matched word errors of `options` on stored (clip, live segments) pairs. A boundary
    counts as snapped when refinement moved it (compared with the same options, refine off)."""
    from dataclasses import replace

    out = []
    for clip, live in stored:
        hyp = align_words(live, options)
        raw = align_words(live, replace(options, refine=False)) if options.refine else hyp
        m = re.search(r"\[(.*)\]", clip.name)
        voice, rate, _, snr = m.group(1).split(",") if m else ("real", "real", "", "real")
        # expand the hypothesis words as the metric does, keeping where each came from
        h_words, meta = [], []
        for (w, s_i, k, n), (w0, *_rest) in zip(hyp, raw):
            parts = metrics.as_timed([w])
            for p in parts:
                h_words.append(p)
                meta.append((s_i, k, n, abs(w["start"] - w0["start"]) > 1e-4,
                             abs(w["end"] - w0["end"]) > 1e-4, w0["start"], w0["end"]))
        ref = metrics.as_timed(clip.words)
        match = metrics.match_words(ref, h_words)
        for i, j in match.pairs:
            r, h = ref[i], h_words[j]
            s_i, k, n, ss, es, r0, r1 = meta[j]
            gap_before = r.start - ref[i - 1].end if i > 0 else r.start
            gap_after = ref[i + 1].start - r.end if i + 1 < len(ref) else 9.0
            position = "first" if k == 0 else ("after-pause" if gap_before > pause_s else "inside")
            out.append(WordError(clip.name, r.word,
                                 h.start - r.start if h.score_start else np.nan,
                                 h.end - r.end if h.score_end else np.nan,
                                 position, k == n - 1, gap_after, ss, es, snr, voice, rate,
                                 r.start, r.end, h.start, h.end, r0, r1, gap_before))
    return out


def summary(errs: list[WordError], key, label: str, which: str = "start") -> str:
    groups: dict = {}
    for e in errs:
        groups.setdefault(key(e), []).append(e)
    lines = [f"{label} ({which}s): group n MAE signed <=20 <=50 <=200 | share of total abs error"]
    total = np.nansum([abs(getattr(e, f"{which}_err")) for e in errs])
    for g in sorted(groups, key=str):
        v = np.array([getattr(e, f"{which}_err") for e in groups[g]]) * 1000
        v = v[~np.isnan(v)]
        if not len(v):
            continue
        a = np.abs(v)
        lines.append(f"  {str(g):22s} {len(v):4d} {a.mean():6.1f} {v.mean():+6.1f} "
                     f"{100 * np.mean(a <= 20 + 1e-6):5.0f} {100 * np.mean(a <= 50 + 1e-6):5.0f} "
                     f"{100 * np.mean(a <= 200 + 1e-6):5.0f} | {100 * a.sum() / 1000 / total:5.1f} %")
    return "\n".join(lines)


def report(errs: list[WordError]) -> str:
    out = []
    for which in ("start", "end"):
        snapped = (lambda e: e.start_snapped) if which == "start" else (lambda e: e.end_snapped)
        pos = (lambda e: e.position) if which == "start" else (
            lambda e: "last" if e.last else ("before-pause" if e.gap_after > 0.1 else "inside"))
        out += [summary(errs, lambda e: "all", "all", which),
                summary(errs, pos, "position", which),
                summary(errs, snapped, "snapped", which),
                summary(errs, lambda e: (pos(e), snapped(e)), "position x snapped", which),
                summary(errs, lambda e: e.snr, "snr", which),
                summary(errs, lambda e: e.voice, "voice", which),
                summary(errs, lambda e: e.rate, "rate", which), ""]
    return "\n".join(out)


def main(argv):
    name = argv[0] if argv else "calibration"
    wm = la.load_model()
    stored = transcripts.load(name, wm)
    print(report(errors(stored)))


if __name__ == "__main__":
    main(sys.argv[1:])
