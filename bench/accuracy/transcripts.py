"""Transcripts with their captured attention, kept on disk so that alignment experiments re-run
only the alignment (no decoder):
`python -m bench.accuracy.transcripts [calibration calibration-b evaluation evaluation-b real
    real-more]`.

Each clip's transcript is decoded once (all decoder heads captured, so any head choice can be
tried) and pickled with its segments' decoding sources and attention entries under
~/.cache/lightning-align/transcripts/<model>/<set>.pkl. `load(set)` rebuilds live transcripts
(segments linked to an attention cache), which `la.align(..., force=True)` aligns from the cache.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import lightning_align as la
from lightning_align.cache import AttentionCache
from lightning_align.transcript import Segment, SegmentSource, TranscriptContext

from . import datasets

ROOT = Path.home() / ".cache" / "lightning-align" / "transcripts"
SETS = {"calibration": datasets.calibration_set, "calibration-b": datasets.calibration_set_b,
        "evaluation": datasets.evaluation_set, "evaluation-b": datasets.evaluation_set_b,
        "real": datasets.real_clips, "real-more": datasets.more_real_clips}


def _path(model: str, name: str) -> Path:
    return ROOT / model / f"{name}.pkl"


def build(name: str, model: str | None = None, log=print) -> None:
    wm = la.load_model(model)
    pool = [(layer, head) for layer in range(wm.dims.n_text_layer) for head in range(wm.dims.n_text_head)]
    wm.extra_heads = tuple(pool)
    clips = SETS[name]()
    if clips is None:  # the real sets need pocketsphinx and its sdist's recordings
        raise SystemExit(f"set {name!r}: no recordings here; install pocketsphinx==5.1.1 and let "
                         f"it download its sdist once, or set {datasets.REAL_DATA_ENV} "
                         "(see docs/accuracy.md)")
    rows = []
    for clip in clips:
        tr = la.transcribe(clip.audio, model=wm)
        segs = []
        for seg in tr["segments"]:
            src = seg.source
            entry = src.context.cache.get(src.key)
            fields = dict(index=src.index, window_start_s=src.window_start_s,
                          window_end_s=src.window_end_s, prefix=src.prefix, start_s=src.start_s,
                          end_s=src.end_s, prev_end_s=src.prev_end_s)
            segs.append((dict(seg), fields, entry))
        rows.append((clip, dict(tr), segs, wm.captured_heads))
        log(f"  {clip.name}: {len(segs)} segments")
    wm.extra_heads = ()
    path = _path(wm.name, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(rows, f)


def load(name: str, wm: la.WhisperModel) -> list[tuple[datasets.Clip, list[Segment]]]:
    """-> [(clip, live segments)] of a stored set; `wm` gets the captured heads of the store."""
    with open(_path(wm.name, name), "rb") as f:
        rows = pickle.load(f)
    out = []
    for clip, tr, segs, heads in rows:
        wm.extra_heads = tuple(heads)
        cache = AttentionCache()
        context = TranscriptContext(wm, cache, clip.audio, len(clip.audio) / 16000)
        context._samples = clip.audio
        live = []
        for seg, fields, entry in segs:
            src = SegmentSource(context, **fields)
            if entry is not None:
                cache.put(src.key, entry)
            live.append(Segment(seg, source=src))
        out.append((clip, live))
    # the stored entries' head order is the store's captured heads
    assert all(tuple(wm.captured_heads) == tuple(r[3]) for r in rows), "captured heads differ"
    return out


def realign(stored: list[tuple[datasets.Clip, list[Segment]]], options: la.AlignOptions | None = None
            ) -> list[tuple[tuple, list[dict]]]:
    """[(reference words, words)] per clip of a set from `load`, its segments aligned again
    from their cache with `options` (the default method where None)."""
    pairs = []
    for clip, live in stored:
        la.align(live, force=True, audio=clip.audio, options=options)
        pairs.append((clip.words, [w for s in live for w in s["words"]]))
    return pairs


if __name__ == "__main__":
    for set_name in sys.argv[1:] or list(SETS):
        print(set_name, flush=True)
        build(set_name)
