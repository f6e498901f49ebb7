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
    """Collects (tokens x heads x frames) alignment-head scores, and their softmax normalizers,
    for each row of a batch. `frames[row]`: the row's audio frames (default: all 1500)."""

    all_positions = False

    def __init__(self, pairs: tuple[tuple[int, int], ...], frames: np.ndarray | None = None):
        self.pairs = tuple(sorted(pairs))
        self.layers = _layers(self.pairs)
        self.frames = None if frames is None else np.asarray(frames, np.int32)
        self._order = sorted(self.layers)
        self._pending: dict[int, mx.array] = {}
        self._steps: list[tuple[np.ndarray, mx.array, mx.array]] = []

    def frames_of(self, rows: np.ndarray) -> mx.array | None:
        """The audio frames of batch rows `rows` (original row ids), for the compiled step."""
        return None if self.frames is None else mx.array(self.frames[rows])

    def take(self, layer: int, scores: mx.array) -> None:
        """Receive (B, heads, 1, frames) scores of one layer for the current step."""
        self._pending[layer] = scores

    def end_step(self, rows: np.ndarray) -> list[mx.array]:
        """Close a step whose batch rows are `rows` (original row ids); returns the lazy arrays to
        evaluate together with the step's logits."""
        scores = mx.concatenate([self._pending[layer][:, :, -1, :] for layer in self._order], axis=1)
        scores, norms = scores_and_normalizers(scores, self.frames_of(rows))
        self._steps.append((rows.copy(), scores, norms))
        self._pending.clear()
        return [scores, norms]

    def record(self, rows: np.ndarray, alive: np.ndarray, captured: tuple[mx.array, mx.array]) -> None:
        """Keep one compiled step's (B, heads, frames) scores and (B, heads) normalizers; rows not
        `alive` (finished, still in the batch) are dropped when the steps are collected."""
        self._steps.append((np.where(alive, rows, -1), *captured))

    def per_row(self, n_rows: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """-> for each original row, its (steps, heads, frames) float16 scores and (steps, heads)
        float32 log-normalizers, in step order."""
        if not self._steps:
            return ([np.zeros((0, len(self.pairs), 0), np.float16) for _ in range(n_rows)],
                    [np.zeros((0, len(self.pairs)), np.float32) for _ in range(n_rows)])
        row_ids = np.concatenate([r for r, _, _ in self._steps])
        live = np.flatnonzero(row_ids >= 0)
        order = mx.array(live[np.argsort(row_ids[live], kind="stable")])
        cuts = np.cumsum(np.bincount(row_ids[live], minlength=n_rows))[:-1]
        # Sorted into rows on the device, then one device-to-host copy for the whole batch: a
        # sort on the host would copy the batch's attention (~300 MB for 64 windows) once more.
        stacked = np.asarray(mx.take(mx.concatenate([s for _, s, _ in self._steps], axis=0), order, axis=0))
        norms = np.asarray(mx.take(mx.concatenate([n for _, _, n in self._steps], axis=0), order, axis=0))
        return np.split(stacked, cuts), np.split(norms, cuts)


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

    def weights(self, heads: list[int] | None = None) -> np.ndarray:
        """Softmax attention weights (rows, heads, frames) float32 over the stored frames, of
        the captured heads at positions `heads` (default: all)."""
        scores, norm = (self.scores, self.log_norm) if heads is None else (
            self.scores[:, heads], self.log_norm[:, heads])
        return np.exp(scores.astype(np.float32) - norm[:, :, None])


def scores_and_normalizers(scores: mx.array, frames: mx.array | None) -> tuple[mx.array, mx.array]:
    """(B, heads, frames) attention scores -> (scores minus their row max as float16, and the
    softmax log-normalizer of those float16 scores over each row's first `frames[b]` frames,
    (B, heads) float32). Storing the normalizer lets the alignment stage rebuild the exact
    softmax weights from scores kept only around a segment."""
    s = (scores - scores.max(axis=-1, keepdims=True)).astype(mx.float16)
    s32 = s.astype(mx.float32)
    if frames is not None:
        inside = mx.arange(s.shape[-1])[None, None, :] < frames[:, None, None]
        s32 = mx.where(inside, s32, -mx.inf)
    return s, mx.logsumexp(s32, axis=-1)


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
