"""Shared fixtures: the real default model and generated speech with exact word boundaries."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", "/tmp/lightning-align-hypothesis")

import lightning_align as la  # noqa: E402
from bench.wer import word_error_rate  # noqa: E402,F401  (re-exported for the tests)
from lightning_align.synth import Speech, concatenate, synthesize  # noqa: E402

SENTENCES = (
    "The lighthouse keeper climbed the stairs every evening at seven.",
    "He polished the great lens and watched the ships pass through the narrow channel.",
    "In the morning he wrote everything in his logbook.",
    "Farmers in the valley planted barley and oats before the spring rain arrived.",
    "Her grandmother kept bees behind the old stone cottage near the river.",
    "Do you remember where we left the keys to the blue car?",
    "Twelve students walked across the bridge to visit the museum of natural history.",
    "The orchestra played a quiet melody while the audience found their seats.",
)


@pytest.fixture(scope="session")
def model() -> la.WhisperModel:
    return la.load_model()


@pytest.fixture(scope="session")
def short_speech() -> Speech:
    """~10 s, three sentences, one window."""
    parts = [synthesize(s, voice="en-us", rate_wpm=165) for s in SENTENCES[:3]]
    return concatenate(parts, 0.6)


@pytest.fixture(scope="session")
def long_speech() -> Speech:
    """~70 s of eight sentences, repeated with pauses: three windows."""
    voices = ("en-us", "en-gb", "en-us", "en-gb")
    parts = [synthesize(s, voice=voices[i % 4], rate_wpm=150 + 10 * (i % 3), seed=i)
             for i, s in enumerate(SENTENCES + SENTENCES[:6])]
    return concatenate(parts, [0.5, 1.2, 0.4, 2.0, 0.8, 0.6, 1.5, 0.7, 0.5, 1.0, 0.9, 0.6, 1.1])


@pytest.fixture(scope="session")
def short_transcript(model, short_speech):
    return la.transcribe(short_speech.audio, model=model)


@pytest.fixture(scope="session")
def long_transcript(model, long_speech):
    return la.transcribe(long_speech.audio, model=model, batch_size=4)


