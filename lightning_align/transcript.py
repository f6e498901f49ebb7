"""Result types: WhisperX-format dicts that remember where their attention is cached."""

from __future__ import annotations

import copy
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audio import AudioInput, load_audio
from .cache import AttentionCache
from .models import WhisperModel


@dataclass(eq=False)
class TranscriptContext:
    """What the segments of one transcript share: the model, its attention cache, its audio."""

    model: WhisperModel
    cache: AttentionCache | None
    audio: AudioInput | None
    duration_s: float
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    _samples: np.ndarray | None = field(default=None, repr=False)
    _loaded: "weakref.ref | None" = field(default=None, repr=False)

    def samples(self) -> np.ndarray | None:
        """The audio as 16 kHz float32, or None. Audio given as a path is not kept with the
        transcript (230 MB per hour); it is decoded again only when no one holds the last copy."""
        if self._samples is not None:
            return self._samples
        if self.audio is None:
            return None
        held = self._loaded() if self._loaded is not None else None
        if held is not None:
            return held
        samples = load_audio(self.audio)
        if isinstance(self.audio, np.ndarray):
            self._samples = samples
        else:
            self.remember(samples)
        return samples

    def remember(self, samples: np.ndarray) -> None:
        """Reuse `samples` (the decoded audio) for as long as someone else holds them."""
        self._loaded = weakref.ref(samples)


@dataclass(frozen=True)
class SegmentSource:
    """Where a segment came from: its transcript, a serial number there, its decoding window,
    and the tokens the decoder had seen before the segment's first token (prompt, start
    sequence, earlier segments of the window), which a forced pass replays on a cache miss."""

    context: TranscriptContext
    index: int
    window_start_s: float
    window_end_s: float
    prefix: tuple[int, ...] = ()
    start_s: float = 0.0  # the decoded segment times, which alignment may later refine
    end_s: float = 0.0
    prev_end_s: float = 0.0  # decoded end of the speech before it in its window (or the window start)

    @property
    def key(self) -> tuple[str, int]:
        return (self.context.uid, self.index)


class Segment(dict):
    """A WhisperX/openai segment dict (`id`, `start`, `end`, `text`, `tokens`, ...). `source`
    links it to the captured attention; a plain dict works too (aligned by a forced pass)."""

    __slots__ = ("source",)

    def __init__(self, *args: Any, source: SegmentSource | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.source = source

    def __reduce__(self):
        # The link to a process's model and cache does not travel: unpickled, it is plain.
        return (Segment, (dict(self),))

    def __deepcopy__(self, memo):
        return Segment(copy.deepcopy(dict(self), memo), source=self.source)


class Transcript(dict):
    """`{"segments": [...], "text": str, "language": str}` plus the context for lazy alignment."""

    __slots__ = ("context",)

    def __init__(self, *args: Any, context: TranscriptContext | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.context = context

    def __reduce__(self):
        return (Transcript, (dict(self),))

    def __deepcopy__(self, memo):
        return Transcript(copy.deepcopy(dict(self), memo), context=self.context)

    def align(self, which=None, **options) -> "Transcript":
        """Add `words` to the selected segments (see `lightning_align.align`); returns self."""
        from .align import align

        align(self["segments"], which, **options)
        return self
