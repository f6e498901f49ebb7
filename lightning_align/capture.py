"""Capture the alignment heads' cross-attention while the batched decoder runs.

The decoder calls `take(layer, scores)` for the layers it is told about; the probe keeps, per
decoding step, the scores of the curated alignment heads only, for the rows still decoding. It
stores *scores* (q.k / sqrt(d)) minus their row maximum, in float16, not softmax weights: the
alignment stage standardizes every (head, token) row over frames, which cancels the softmax's
per-row normalizer exactly, so the softmax runs later and only for segments someone aligns.
Subtracting the maximum first keeps float16 precise where it matters (near the peak). The
normalizers themselves are computed once per batch, when the steps are collected (`per_row`):
in the step they were extra reductions on the decoder's critical path, every token.
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
        self._steps: list[tuple[np.ndarray, mx.array]] = []  # (row ids, scores) per step

    def take(self, layer: int, scores: mx.array) -> None:
        """Receive (B, heads, 1, frames) scores of one layer for the current step."""
        self._pending[layer] = scores

    def end_step(self, rows: np.ndarray) -> list[mx.array]:
        """Close a step whose batch rows are `rows` (original row ids); returns the lazy arrays to
        evaluate together with the step's logits."""
        scores = mx.concatenate([self._pending[layer][:, :, -1, :] for layer in self._order], axis=1)
        scores = peak_relative(scores)
        self._steps.append((rows.copy(), scores))
        self._pending.clear()
        return [scores]

    def record(self, rows: np.ndarray, alive: np.ndarray, scores: mx.array) -> None:
        """Keep one compiled step's (B, heads, frames) scores (`peak_relative`); rows not
        `alive` (finished, still in the batch) are dropped when the steps are collected."""
        self._steps.append((np.where(alive, rows, -1), scores))

    def per_row(self, n_rows: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """-> for each original row, its (steps, heads, frames) float16 scores and (steps, heads)
        float32 log-normalizers over the row's frames, in step order."""
        if not self._steps:
            return ([np.zeros((0, len(self.pairs), 0), np.float16) for _ in range(n_rows)],
                    [np.zeros((0, len(self.pairs)), np.float32) for _ in range(n_rows)])
        row_ids = np.concatenate([r for r, _ in self._steps])
        live = np.flatnonzero(row_ids >= 0)
        sorted_ids = live[np.argsort(row_ids[live], kind="stable")]
        cuts = np.cumsum(np.bincount(row_ids[live], minlength=n_rows))[:-1]
        # Sorted into rows on the device, then one device-to-host copy for the whole batch: a
        # sort on the host would copy the batch's attention (~300 MB for 64 windows) once more.
        stacked = mx.take(mx.concatenate([s for _, s in self._steps], axis=0), mx.array(sorted_ids), axis=0)
        frames = None if self.frames is None else mx.array(self.frames[row_ids[sorted_ids]])
        norms = log_normalizers(stacked, frames)
        return np.split(np.asarray(stacked), cuts), np.split(np.asarray(norms), cuts)


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


def peak_relative(scores: mx.array) -> mx.array:
    """(B, heads, frames) attention scores -> the same minus their row maximum, as float16."""
    return (scores - scores.max(axis=-1, keepdims=True)).astype(mx.float16)


NORM_CHUNK_VALUES = 1 << 24  # float32 values one normalizer chunk expands to on the device (64 MB)


def log_normalizers(s: mx.array, frames: mx.array | None) -> mx.array:
    """(N, heads, frames) float16 `peak_relative` scores -> their softmax log-normalizer over each
    row's first `frames[n]` frames (all when None), (N, heads) float32. Storing the normalizer
    lets the alignment stage rebuild the exact softmax weights from scores kept only around a
    segment. Computed in float32 over chunks of rows, so a batch's ~300 MB of float16 scores
    never expands to float32 all at once."""
    n, _, width = s.shape
    step = max(1, NORM_CHUNK_VALUES // max(1, s.shape[1] * width))
    parts = []
    for a in range(0, n, step):
        s32 = s[a:a + step].astype(mx.float32)
        if frames is not None:
            inside = mx.arange(width)[None, None, :] < frames[a:a + step, None, None]
            s32 = mx.where(inside, s32, -mx.inf)
        parts.append(mx.logsumexp(s32, axis=-1))
        if n > step:
            mx.eval(parts[-1])  # one chunk's float32 expansion alive at a time
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


def scores_and_normalizers(scores: mx.array, frames: mx.array | None) -> tuple[mx.array, mx.array]:
    """(B, heads, frames) attention scores -> (`peak_relative` scores, `log_normalizers` over
    each row's first `frames[b]` frames)."""
    s = peak_relative(scores)
    return s, log_normalizers(s, frames)


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
