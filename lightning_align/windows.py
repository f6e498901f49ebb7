"""Cut audio into decoding windows of at most 30 s, ending in the quietest moment near the limit.

Batched ("Lightning") decoding cannot move a window's end after seeing the text, as the
sequential decoder does, so the cut is chosen beforehand: in the last `search_s` seconds before
the 30 s limit, at the 100 ms stretch of lowest energy. A cut in a pause keeps words whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE
from .mel import CHUNK_SAMPLES

_HOP = SAMPLE_RATE // 100  # 10 ms energy frames


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of the audio; `index` counts windows from 0."""

    index: int
    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def seek(self) -> int:
        """Start in mel frames (10 ms), as openai-whisper's `seek`."""
        return self.start // _HOP


def plan_windows(audio: np.ndarray, *, max_s: float = 30.0, search_s: float = 5.0) -> list[Window]:
    """Windows covering `audio` (16 kHz samples), each <= `max_s` seconds, cut in pauses."""
    n = len(audio)
    limit = min(int(max_s * SAMPLE_RATE), CHUNK_SAMPLES)
    search = int(search_s * SAMPLE_RATE)
    windows: list[Window] = []
    start = 0
    while start < n:
        end = start + limit
        if end < n and search > 0:
            lo = max(start + limit - search, start + 1)
            segment = audio[lo:end]
            frames = len(segment) // _HOP
            energy = np.square(segment[: frames * _HOP].reshape(frames, _HOP), dtype=np.float32).sum(1)
            smooth = np.convolve(energy, np.ones(10, np.float32), mode="same")  # 100 ms
            # The middle of the latest run of quietest frames (within 1 %): long windows, and
            # the cut in the middle of a pause rather than at a word's edge.
            quiet = np.flatnonzero(smooth <= smooth.min() * 1.01 + 1e-12)
            breaks = np.flatnonzero(np.diff(quiet) > 1)
            run_start = quiet[breaks[-1] + 1] if len(breaks) else quiet[0]
            end = lo + int((run_start + quiet[-1]) // 2) * _HOP + _HOP // 2
        end = min(end, n)
        windows.append(Window(len(windows), start, end))
        start = end
    return windows


SILENCE_RMS = 1e-3  # -60 dBFS: no 20 ms frame louder than this means nothing to transcribe


def frame_power(samples: np.ndarray) -> np.ndarray:
    """Mean square of each whole 20 ms frame (320 samples) of `samples`; a shorter tail is left out."""
    frames = len(samples) // 320
    return np.square(samples[: frames * 320].reshape(frames, 320), dtype=np.float32).mean(1)


def is_silent(samples: np.ndarray) -> bool:
    """True when no 20 ms frame of `samples` rises above -60 dBFS. Whisper invents words
    ("you", "Thank you.") for digital silence; such windows are not decoded at all."""
    if len(samples) < 320:
        return float(np.abs(samples).max(initial=0.0)) < SILENCE_RMS
    return float(frame_power(samples).max()) < SILENCE_RMS**2
