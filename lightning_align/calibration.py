"""Per-model timing calibration shipped as data: which cross-attention heads time words best.

openai-whisper's curated alignment heads were chosen for its own DTW; measured on generated
speech with exact boundaries, some of them are far off alone and others, not curated, are
better (docs/accuracy.md). `bench/accuracy/calibrate.py` chooses heads per model on generated
calibration speech and writes `data/timing_calibration.json`; the decoder then captures the
union of the curated and the calibrated heads, so both the reference method and the calibrated
default are served from the one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CALIBRATION_FILE = Path(__file__).with_name("data") / "timing_calibration.json"

Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Calibration:
    """Heads ((layer, head) pairs) and their weights for the one-pass DTW, and the mean signed
    error of starts and ends (s) measured with them on the calibration set."""

    heads: Pairs
    head_weights: tuple[float, ...]
    start_lag_s: float
    end_lag_s: float

    def __post_init__(self):
        if len(self.heads) != len(self.head_weights) or not self.heads:
            raise ValueError(f"calibration: {len(self.heads)} heads but {len(self.head_weights)} "
                             "weights; give one weight per head, at least one head.")


@lru_cache(maxsize=8)
def calibration(name: str, curated: Pairs, fingerprint: str | None = None) -> Calibration | None:
    """The shipped calibration of model `name`, or None. It applies only where the model's
    curated heads are those it was made with (a fine-tuned model under the same name is not
    the model that was calibrated). Weights loaded from a path carry the directory's name, so
    an entry is also found by `fingerprint` (`WhisperModel.fingerprint`, a hash of the
    weights): tiny.en from any directory or format is still tiny.en."""
    try:
        table = json.loads(CALIBRATION_FILE.read_text())["models"]
    except FileNotFoundError:
        return None

    def made_with(entry) -> bool:
        return entry is not None and tuple(map(tuple, entry["curated"])) == tuple(curated)

    entry = table.get(name)
    if not made_with(entry) and fingerprint:
        entry = next((e for e in table.values() if e.get("fingerprint") == fingerprint), None)
    if not made_with(entry):
        return None
    return Calibration(tuple(map(tuple, entry["heads"])), tuple(map(float, entry["head_weights"])),
                       float(entry["start_lag_s"]), float(entry["end_lag_s"]))
