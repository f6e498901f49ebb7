"""Capture the alignment heads' cross-attention while the batched decoder runs.

The decoder calls `take(layer, scores)` for the layers it is told about; the probe keeps, per
decoding step, the scores of the curated alignment heads only, for the rows still decoding. It
stores *scores* (q.k / sqrt(d)) minus their row maximum, in float16, not softmax weights: the
alignment stage standardizes every (head, token) row over frames, which cancels the softmax's
per-row normalizer exactly, so the softmax runs later and only for segments someone aligns.
Subtracting the maximum first keeps float16 precise where it matters (near the peak).
"""

from __future__ import annotations

import numpy as np

from .backend import mx

CAPTURE_MARGIN_S = 1.0  # attention frames kept beyond a segment's decoded start and end (s)


def _layers(pairs: tuple[tuple[int, int], ...]) -> dict[int, mx.array]:
    """{layer: head indices} for sorted (layer, head) pairs, as the decoder's probe expects."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in pairs:
        by_layer.setdefault(layer, []).append(head)
    return {layer: mx.array(heads) for layer, heads in sorted(by_layer.items())}


class AttentionProbe:
    """Collects (tokens x heads x frames) alignment-head scores for each row of a batch."""

    all_positions = False

    def __init__(self, pairs: tuple[tuple[int, int], ...]):
        self.pairs = tuple(sorted(pairs))
        self.layers = _layers(self.pairs)
        self._order = sorted(self.layers)
        self._pending: dict[int, mx.array] = {}
        self._steps: list[tuple[np.ndarray, mx.array]] = []

    def take(self, layer: int, scores: mx.array) -> None:
        """Receive (B, heads, 1, frames) scores of one layer for the current step."""
        self._pending[layer] = scores

    def end_step(self, rows: np.ndarray) -> mx.array:
        """Close a step whose batch rows are `rows` (original row ids); returns the lazy array to
        evaluate together with the step's logits."""
        scores = mx.concatenate([self._pending[layer][:, :, -1, :] for layer in self._order], axis=1)
        scores = (scores - scores.max(axis=-1, keepdims=True)).astype(mx.float16)
        self._steps.append((rows.copy(), scores))
        self._pending.clear()
        return scores

    def record(self, rows: np.ndarray, alive: np.ndarray, scores: mx.array) -> None:
        """Keep one compiled step's (B, heads, frames) scores; rows not `alive` (finished, still
        in the batch) are dropped when the steps are collected."""
        self._steps.append((np.where(alive, rows, -1), scores))

    def per_row(self, n_rows: int, audio_frames: np.ndarray | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """-> (for each original row its (steps, heads, frames) float16 scores in step order,
        and, given each row's number of audio frames, its (steps, heads) float32 softmax
        log-normalizers over those frames (see `log_normalizers`), else None)."""
        if not self._steps:
            empty = [np.zeros((0, len(self.pairs), 0), np.float16) for _ in range(n_rows)]
            norms = [np.zeros((0, len(self.pairs)), np.float32) for _ in range(n_rows)]
            return empty, (norms if audio_frames is not None else None)
        row_ids = np.concatenate([r for r, _ in self._steps])
        live = np.flatnonzero(row_ids >= 0)
        order = live[np.argsort(row_ids[live], kind="stable")]
        counts = np.bincount(row_ids[live], minlength=n_rows)
        cuts = np.cumsum(counts)[:-1]
        # Gather and normalize on the device, then one device-to-host copy for the whole batch.
        stacked = mx.take(mx.concatenate([s for _, s in self._steps], axis=0), mx.array(order), axis=0)
        norms = None
        if audio_frames is not None:
            frames = mx.array(np.asarray(audio_frames, np.int32)[row_ids[order]])
            inside = mx.arange(stacked.shape[-1])[None, None, :] < frames[:, None, None]
            masked = mx.where(inside, stacked.astype(mx.float32), -mx.inf)
            norms = mx.logsumexp(masked, axis=-1)
            mx.eval(stacked, norms)
            norms = np.split(np.asarray(norms), cuts)
        return np.split(np.asarray(stacked), cuts), norms


class CapturedAttention:
    """One segment's alignment-head attention, as kept in the cache.

    `scores` (rows, heads, frames) float16 are the captured scores minus their row maximum, over
    the segment's frames only (plus a margin), starting at window frame `frame_offset`;
    `log_norm` (rows, heads) float32 is each row's softmax log-normalizer over the whole window's
    audio, so `exp(scores - log_norm)` are exactly the softmax weights openai-whisper computes.
    Row r is the decoder step that predicted `tokens[r]`; `is_timestamp` marks timestamp tokens.
    """

    __slots__ = ("scores", "log_norm", "frame_offset", "tokens", "is_timestamp", "token_logprobs")

    def __init__(self, scores: np.ndarray, log_norm: np.ndarray, frame_offset: int,
                 tokens: tuple[int, ...], is_timestamp: np.ndarray, token_logprobs: np.ndarray):
        self.scores, self.log_norm, self.frame_offset = scores, log_norm, frame_offset
        self.tokens, self.is_timestamp, self.token_logprobs = tokens, is_timestamp, token_logprobs

    @property
    def nbytes(self) -> int:
        return (self.scores.nbytes + self.log_norm.nbytes + self.is_timestamp.nbytes
                + self.token_logprobs.nbytes + 8 * len(self.tokens) + 64)

    def weights(self) -> np.ndarray:
        """Softmax attention weights (rows, heads, frames) float32 over the stored frames."""
        return np.exp(self.scores.astype(np.float32) - self.log_norm[:, :, None])


def log_normalizers(scores: np.ndarray, n_frames: int) -> np.ndarray:
    """log(sum(exp(scores))) over the first `n_frames` frames: (rows, heads) float32."""
    s = scores[:, :, :n_frames].astype(np.float32)
    return np.log(np.exp(s).sum(-1))


class ForcedProbe:
    """Collects alignment-head scores for every position of one forced decoder pass."""

    all_positions = True

    def __init__(self, pairs: tuple[tuple[int, int], ...]):
        self.pairs = tuple(sorted(pairs))
        self.layers = _layers(self.pairs)
        self._order = sorted(self.layers)
        self._scores: dict[int, mx.array] = {}

    def take(self, layer: int, scores: mx.array) -> None:
        self._scores[layer] = scores

    def result(self) -> mx.array:
        """(B, heads, positions, frames) float32 scores, heads in `pairs` order."""
        return mx.concatenate([self._scores[layer] for layer in self._order], axis=1).astype(mx.float32)
