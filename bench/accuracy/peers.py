"""Systems under test, each `words(audio) -> [(word, start_s, end_s), ...]` on the same weights.

lightning-align is transcribed once per clip and then aligned with every option set (cache
hits, no second pass); the peers run their own `transcribe(..., word_timestamps=True)`.
A peer whose package is missing is reported as skipped, not faked.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

import lightning_align as la
from lightning_align.align import AlignOptions

Words = list[tuple[str, float, float]]

# The one-pass ablations: each correction alone on top of openai's DTW, then combined.
# Every row but the default's spells out each switch it leaves off.
_OFF = dict(anchors=False, dips=False, onset_cost=0, token_contrast=0)
ABLATIONS: dict[str, AlignOptions] = {
    "onepass plain (openai DTW on captured attention)": AlignOptions.plain(),
    "+ anchors (decoded timestamps bound the DTW)": AlignOptions(False, False, refine=False, **{**_OFF, "anchors": True}),
    "+ lag correction": AlignOptions(False, True, refine=False, **_OFF),
    "+ calibrated heads": AlignOptions(True, False, refine=False, **_OFF),
    "+ signal refinement": AlignOptions(False, False, refine=True, **_OFF),
    "+ energy dips": AlignOptions(False, False, refine=False, **{**_OFF, "dips": True}),
    "+ onset cost (word starts prefer quiet frames in the DTW)": AlignOptions(False, False, refine=False, **{**_OFF, "onset_cost": 1.0}),
    "+ token contrast (each token's row less its neighbours')": AlignOptions(False, False, refine=False, **{**_OFF, "token_contrast": 0.5}),
    "+ attention power 0.5 (the matrix from the weights' square root)": AlignOptions(False, False, refine=False, **{**_OFF, "attention_power": 0.5}),
    "+ heads + dips": AlignOptions(refine=False, **{**_OFF, "dips": True}),
    "+ heads + lag": AlignOptions(True, True, refine=False, **_OFF),
    "+ heads + token contrast": AlignOptions(True, False, refine=False, **{**_OFF, "token_contrast": 0.5}),
    "+ heads + lag + refinement": AlignOptions(True, True, refine=True, **_OFF),
    "+ heads + refinement": AlignOptions(**_OFF),
    "+ heads + refinement + onset cost": AlignOptions(**{**_OFF, "onset_cost": 1.0}),
    "+ heads + lag + refinement + dips": AlignOptions(lag=True, **{**_OFF, "dips": True}),
    "+ heads + refinement + dips": AlignOptions(**{**_OFF, "dips": True}),
    "+ heads + refinement + dips + onset cost (default before the token contrast)": AlignOptions(anchors=False, token_contrast=0),
    "+ heads + refinement + dips + onset cost + token contrast 0.15 (default of 17b16ff)": AlignOptions(anchors=False, token_contrast=0.15),
    "+ heads + refinement + dips + onset cost + token contrast 0.5 (no anchors)": AlignOptions(anchors=False),
    "+ heads + refinement + dips + onset cost + token contrast 0.5 + anchors 0.05 s (default)": AlignOptions(),
    "default with attention power 0.7, token contrast 0.35, onset cost 4 (the calibration sets' choice, not the default)": AlignOptions(attention_power=0.7, token_contrast=0.35, onset_cost=4.0),
}


def _flat(segments) -> Words:
    return [(w["word"], float(w["start"]), float(w["end"])) for s in segments for w in s.get("words", [])]


def lightning(audio: np.ndarray, wm: la.WhisperModel) -> dict[str, Words]:
    """Every lightning-align method on one clip: ablations of one-pass, then the reference."""
    tr = la.transcribe(audio, model=wm)
    out = {}
    for label, options in ABLATIONS.items():
        la.align(tr["segments"], force=True, options=options)
        out[f"lightning-align {label}"] = _flat(tr["segments"])
    la.align(tr["segments"], force=True, method="reference")
    out["lightning-align method=reference (openai algorithm)"] = _flat(tr["segments"])
    return out


FORCED = "lightning-align default, given the true text (forced pass: no recognition errors)"


def forced(audio: np.ndarray, text: str, wm: la.WhisperModel) -> Words:
    """The default method aligning the reference text instead of a transcript (one clip of at
    most 30 s, one segment): a forced decoder pass captures the attention. Timing quality alone,
    as the forced-alignment literature measures it."""
    segments = la.align([{"id": 0, "start": 0.0, "end": len(audio) / 16000, "text": text}],
                        audio=audio, model=wm)
    return _flat(segments)


@dataclass
class Peer:
    name: str
    run: Callable[[np.ndarray], Words]


def faster_whisper_peer(ct2_dir: str) -> Peer:
    from faster_whisper import WhisperModel

    model = WhisperModel(ct2_dir, device="cpu", compute_type="float32", cpu_threads=2)

    def run(audio):
        segments, _ = model.transcribe(audio, word_timestamps=True, beam_size=1)
        return [(w.word, w.start, w.end) for s in segments for w in (s.words or [])]

    return Peer("faster-whisper (curated heads)", run)


def mlx_whisper_peers(ct2_dir: str, curated: list) -> list[Peer]:
    import mlx_whisper
    from mlx_whisper.load_models import load_model

    from lightning_align import checkpoints, ct2
    from lightning_align.backend import mx

    tmp = tempfile.mkdtemp(prefix="mlxw-")
    path = str(checkpoints.write_mlx_directory(tmp, *ct2.convert(ct2_dir)[:2]))
    peers = []
    for label, heads in (("default heads (last half of layers)", None), ("curated heads", curated)):
        model = load_model(path, dtype=mx.float32)
        if heads is not None:
            model.set_alignment_heads(np.array(heads))

        def run(audio, model=model):
            # mlx-whisper looks its model up by path; hand it ours through its loader cache
            holder = sys.modules["mlx_whisper.transcribe"].ModelHolder
            holder.model, holder.model_path = model, path
            r = mlx_whisper.transcribe(audio, path_or_hf_repo=path, word_timestamps=True,
                                       condition_on_previous_text=False, fp16=False)
            return [(w["word"], w["start"], w["end"]) for s in r["segments"] for w in s.get("words", [])]

        peers.append(Peer(f"mlx-whisper ({label})", run))
    return peers


def openai_whisper_peer(ct2_dir: str, curated: list) -> Peer:
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper, sinusoids

    from lightning_align import ct2

    dims, weights, _ = ct2.convert(ct2_dir)
    model = Whisper(ModelDimensions(**dims))
    state = {}
    for name, value in weights.items():
        t = torch.from_numpy(np.asarray(value, np.float32))
        name = name.replace(".mlp1.", ".mlp.0.").replace(".mlp2.", ".mlp.2.")
        if name.startswith("encoder.conv") and t.ndim == 3:
            t = t.permute(0, 2, 1).contiguous()  # MLX (out, k, in) -> torch (out, in, k)
        state[name] = t
    state["encoder.positional_embedding"] = sinusoids(dims["n_audio_ctx"], dims["n_audio_state"])
    missing = model.load_state_dict(state, strict=False)
    if missing.missing_keys:
        raise RuntimeError(f"openai-whisper weights missing: {missing.missing_keys}")
    heads = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
    for layer, head in curated:
        heads[layer, head] = True
    model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
    model.eval()

    def run(audio):
        r = whisper.transcribe(model, audio, word_timestamps=True, fp16=False,
                               condition_on_previous_text=False)
        return [(w["word"], w["start"], w["end"]) for s in r["segments"] for w in s.get("words", [])]

    return Peer("openai-whisper CPU (curated heads)", run)


def all_peers(ct2_dir: str, curated: list, log=print) -> list[Peer]:
    """The peers that can run here; each missing one is logged and skipped."""
    peers = []
    for make in (lambda: [faster_whisper_peer(ct2_dir)], lambda: mlx_whisper_peers(ct2_dir, curated),
                 lambda: [openai_whisper_peer(ct2_dir, curated)]):
        try:
            peers.extend(make())
        except ImportError as e:
            log(f"peer skipped: {e}")
    return peers
