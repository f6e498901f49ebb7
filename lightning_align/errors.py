"""One exception hierarchy: every error a user can cause names the input, what is wrong, and
what to do about it."""

from __future__ import annotations


class LightningAlignError(Exception):
    """Base class of every error this package raises on purpose."""


class AudioError(LightningAlignError, ValueError):
    """The audio input cannot be read or is not usable speech audio."""


class ModelError(LightningAlignError, ValueError):
    """A model name, directory or checkpoint cannot be loaded."""


class AlignmentError(LightningAlignError, ValueError):
    """`align` was given segments, a selection, or options it cannot work with."""


class DecodingError(LightningAlignError, RuntimeError):
    """The decoder was given options it cannot work with."""
