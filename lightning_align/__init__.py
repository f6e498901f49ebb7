"""lightning-align: Whisper transcripts with exact word timestamps on MLX, in one decoding pass."""

from .backend import mx as _mx  # noqa: F401  (loads a fast BLAS before anything imports MLX)
from .align import Alignment, AlignOptions, align
from .audio import load_audio
from .cache import AttentionCache, CacheStats
from .decoding import DecodingOptions
from .errors import AlignmentError, AudioError, DecodingError, LightningAlignError, ModelError
from .models import WhisperModel, load_model
from .transcribe import transcribe, transcribe_many
from .transcript import Segment, Transcript
from .warmup import warm_up

__version__ = "0.1.0"

__all__ = [
    "Alignment", "AlignOptions", "AlignmentError", "align", "AttentionCache", "AudioError", "CacheStats", "DecodingError",
    "DecodingOptions", "LightningAlignError", "ModelError", "Segment", "Transcript",
    "WhisperModel", "load_audio", "load_model", "transcribe", "transcribe_many", "warm_up",
]
