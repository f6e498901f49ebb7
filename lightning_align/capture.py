"""Capture the alignment heads' cross-attention while the batched decoder runs.

The decoder hands the probe, for the layers it is told about, each step's cross-attention
*queries*: the compiled step writes its query projections as they are (B, 1, n_state) into the
probe's buffers (`open`), so that keeping them is all a decoding step does for word timing; the
alignment heads are picked out and scaled for all steps at once, at collection. A step's
attention scores are those queries against the window's cross-attention keys, which are fixed
for the whole decode; so the scores of every step are computed at once, one (steps x 64) @
(64 x frames) product per row and head, when the batch is collected (`per_row`). On a GPU this
takes the probe off the step's critical path, where a (B, heads, frames) product, its row
maximum and a float16 copy each step had cost more than the product of all steps together.

The probe keeps *scores* (q.k / sqrt(d)) minus their row maximum, in float16, and each row's
softmax log-normalizer over the window's audio frames, so `exp(scores - log_norm)` are exactly
the softmax weights openai-whisper computes, and the softmax runs only for segments someone
aligns. Subtracting the maximum first keeps float16 precise where it matters (near the peak).
"""

from __future__ import annotations

import numpy as np

from .backend import gpu_available, mx
from .kernels.onepass import softmax_weights

CAPTURE_MARGIN_S = 1.0  # attention frames kept beyond a segment's decoded start and end (s)

_side_streams: dict[str, mx.Stream] = {}


def side_stream() -> mx.Stream:
    """A second stream on the default device, for what the host reads while decoding steps are
    queued (`AttentionProbe.ended_rows`, `host_views`). Waiting for work on the default stream
    waits for every step queued before it, and the device then idles until the host queues
    more; on this stream it waits for that work alone, which needs only finished steps'
    buffers, and the queued steps keep the device busy meanwhile."""
    device = mx.default_device()
    stream = _side_streams.get(str(device))
    if stream is None:
        stream = _side_streams[str(device)] = mx.new_stream(device)
    return stream


def _layers(pairs: tuple[tuple[int, int], ...]) -> dict[int, mx.array]:
    """{layer: head indices} for sorted (layer, head) pairs, as the decoder's probe expects."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in pairs:
        by_layer.setdefault(layer, []).append(head)
    return {layer: mx.array(heads) for layer, heads in sorted(by_layer.items())}


class _Run:
    """Steps the compiled decoder wrote into one set of probe buffers (one batch composition):
    per step, the original row id of each batch row (-1: finished, its scores unused), and,
    once closed and read, its steps' picked and scaled queries (`AttentionProbe._entries`)."""

    __slots__ = ("marks", "buffers", "queries", "ids")

    def __init__(self):
        self.marks: list[np.ndarray] = []
        self.buffers: tuple[mx.array, ...] = ()
        self.queries: mx.array | None = None
        self.ids: np.ndarray | None = None  # the row id of each of `queries`' entries


class AttentionProbe:
    """Collects (tokens x heads x frames) alignment-head scores, and their softmax normalizers,
    for each row of a batch. `n_head`, `n_state`: the decoder's heads per layer and width, for
    the compiled steps' buffers (`open`); `frames[row]`: the row's audio frames (default: all
    1500)."""

    def __init__(self, pairs: tuple[tuple[int, int], ...], n_head: int, n_state: int,
                 frames: np.ndarray | None = None):
        self.pairs = tuple(sorted(pairs))
        self.layers = _layers(self.pairs)
        self.frames = None if frames is None else np.asarray(frames, np.int32)
        self.n_head, self.n_state = n_head, n_state
        self._order = sorted(self.layers)
        self._pending: dict[int, mx.array] = {}
        self._keys: dict[int, mx.array] = {}  # layer -> (B, heads, D, frames), the batch's rows
        # steps of `take`: (row ids, their scaled queries (B, heads, D))
        self._steps: list[tuple[np.ndarray, mx.array]] = []
        self._runs: list[_Run] = []
        self.buffers: tuple[mx.array, ...] = ()  # what the next compiled step writes into
        self.base: mx.array | None = None  # the token position of the buffers' first step

    def take(self, layer: int, queries: mx.array, keys: mx.array) -> None:
        """Receive one layer's scaled queries (B, heads, L, D) of the current step, and the
        batch's keys (B, heads, D, frames) for those heads; only the last position is kept."""
        self._pending[layer] = queries[:, :, -1, :]
        self._keys.setdefault(layer, keys)

    def end_step(self, rows: np.ndarray) -> list[mx.array]:
        """Close a step whose batch rows are `rows` (original row ids); returns the lazy arrays to
        evaluate together with the step's logits."""
        queries = mx.concatenate([self._pending[layer] for layer in self._order], axis=1)
        self._steps.append((rows.copy(), queries))
        self._pending.clear()
        return [queries]

    def add_rows(self, keys: dict[int, mx.array], frames: np.ndarray | None) -> None:
        """Rows that joined the batch after its first step (`DecoderState.append`), numbered on
        from the rows before them: their keys per probed layer (n, heads, D, frames) and audio
        frames (n,) (None: all)."""
        first = self._keys[self._order[0]]
        n_old, n_new, width = first.shape[0], keys[self._order[0]].shape[0], first.shape[-1]
        for layer in self._order:
            self._keys[layer] = mx.concatenate([self._keys[layer], keys[layer]])
        if self.frames is not None or frames is not None:
            old = self.frames if self.frames is not None else np.full(n_old, width, np.int32)
            new = np.asarray(frames, np.int32) if frames is not None else np.full(n_new, width, np.int32)
            self.frames = np.concatenate([old, new])

    def open(self, batch: int, offset: int, steps: int, dtype: mx.Dtype) -> None:
        """Start buffers for the compiled steps (`CompiledStep`) to write their query
        projections into: `batch` rows, at most `steps` steps, the first at token position
        `offset`. Opened at the start of a decode and whenever its batch shrinks; the steps
        written are told with `record`."""
        self._close()
        self.buffers = tuple(mx.zeros((batch, max(1, steps), self.n_state), dtype)
                             for _ in self._order)
        self.base = mx.array(offset, dtype=mx.int32)
        # Queued, not waited for: a wait here is a round trip to the device at each shrink,
        # with nothing queued behind it (0.8 ms a pass, up to 6 ms, on an H100).
        mx.async_eval(self.buffers, self.base)
        self._runs.append(_Run())

    def record(self, rows: np.ndarray, alive: np.ndarray) -> None:
        """The next step of the open buffers was written by batch rows `rows` (original ids);
        rows not `alive` (finished, still in the batch) are dropped at collection."""
        self._runs[-1].marks.append(np.where(alive, rows, -1))

    def _close(self) -> None:
        if self._runs:
            self._runs[-1].buffers = self.buffers
            if self.buffers:
                # The device loop may leave the writes lazy (`decoding.QUEUE_RECORD_EACH_STEP`):
                # queue them now, behind the last step that wrote them, so a later read on the
                # side stream waits for them alone. No step writes these buffers any more.
                mx.async_eval(self.buffers)
        self.buffers, self.base = (), None

    def _entries(self, closed_only: bool = False) -> tuple[np.ndarray, list[mx.array]]:
        """All steps' row ids (N,) and scaled queries of the probed heads, parts of (n, heads,
        D), each row's steps in order: the recorded steps of each run split into heads, picked
        and scaled at once. `closed_only`: leave the open buffers alone (steps may still be
        writing them) and read only the runs closed before."""
        if not closed_only:
            self._close()
        ids = [r for r, _ in self._steps]
        parts = [q for _, q in self._steps]
        for run in self._runs:
            n = len(run.marks)
            if not n or not run.buffers:
                continue
            # batch row by batch row, each row's steps in order (as the buffers hold them):
            # `_scores` sorts the entries by row id stably, so a row's steps stay in order,
            # and the picked heads need no transpose to step order (a strided copy of each
            # run's queries per layer)
            if run.queries is None:  # a closed run's buffers never change: picked once
                run.ids = np.stack(run.marks, axis=1).reshape(-1)
                picked = []
                for buf, layer in zip(run.buffers, self._order):
                    b, steps = buf.shape[:2]
                    p = buf.reshape(b, steps, self.n_head, -1)[:, :n, self.layers[layer]]
                    picked.append(p.reshape(b * n, p.shape[2], p.shape[3]))
                heads = mx.concatenate(picked, axis=1)
                run.queries = heads * heads.shape[-1] ** -0.5
            ids.append(run.ids)
            parts.append(run.queries)
        return (np.concatenate(ids) if ids else np.zeros(0, int)), parts

    def per_row(self, n_rows: int, skip: np.ndarray | None = None,
                ) -> tuple[list[RowScores], list[np.ndarray]]:
        """-> for each original row, its (steps, heads, frames) float16 scores (`RowScores`, on
        the device until cut) and (steps, heads) float32 log-normalizers over the row's frames,
        in step order. Rows `skip` (n_rows,) bool marks get none (no steps): their decodes are
        not used."""
        return self._scores(*self._entries(), n_rows, skip)

    def ended_rows(self, rows: np.ndarray, n_rows: int) -> tuple[list[RowScores], list[np.ndarray]]:
        """`per_row` for `rows` alone (original ids of rows that left the batch before the
        buffers now open), while the decode goes on: from the closed runs only, on the
        `side_stream`, so it waits for its own products, not for the steps queued before it."""
        skip = np.ones(n_rows, bool)
        skip[np.asarray(rows, np.int64)] = False
        with mx.stream(side_stream()):
            scores, norms = self._scores(*self._entries(closed_only=True), n_rows, skip)
        return [scores[r] for r in rows], [norms[r] for r in rows]

    def _scores(self, row_ids: np.ndarray, parts: list[mx.array], n_rows: int,
                skip: np.ndarray | None) -> tuple[list[RowScores], list[np.ndarray]]:
        if skip is not None and len(row_ids):
            row_ids = np.where((row_ids >= 0) & skip[np.maximum(row_ids, 0)], -1, row_ids)
        if not (row_ids >= 0).any():
            empty = mx.zeros((0, len(self.pairs), 0), mx.float16)
            return ([RowScores(empty, 0, 0) for _ in range(n_rows)],
                    [np.zeros((0, len(self.pairs)), np.float32) for _ in range(n_rows)])
        live = np.flatnonzero(row_ids >= 0)
        sorted_ids = live[np.argsort(row_ids[live], kind="stable")]
        counts = np.bincount(row_ids[live], minlength=n_rows)
        cuts = np.cumsum(counts)[:-1]
        queries = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)
        queries = mx.take(queries, mx.array(sorted_ids), axis=0)  # (N, heads, D), by row
        keys = mx.concatenate([self._keys[layer] for layer in self._order], axis=1)
        product = padded_row_scores if gpu_available() else row_scores
        stacked = peak_relative(product(queries, keys, counts))
        frames = None if self.frames is None else mx.array(self.frames[row_ids[sorted_ids]])
        norms = log_normalizers(stacked, frames)
        mx.eval(stacked, norms)
        starts = np.concatenate([[0], cuts]).tolist()
        return ([RowScores(stacked, a, n) for a, n in zip(starts, counts.tolist())],
                np.split(np.asarray(norms), cuts))


class RowScores:
    """One window's captured scores (steps, heads, frames) float16, left where the batch's
    scores were computed (the GPU) until the parts that segments keep are cut out (`part`,
    copied with `host_views`): a segment keeps its own frames and a margin, about a fifth of the
    1500 on speech, and on CUDA's managed memory a host slicing the whole batch had faulted
    every page of it over."""

    __slots__ = ("_scores", "_start", "shape")

    def __init__(self, scores: mx.array, start: int, n: int):
        self._scores, self._start = scores, start
        self.shape = (n,) + tuple(scores.shape[1:])

    def part(self, r0: int, r1: int, f0: int, f1: int) -> mx.array:
        """Steps [r0, r1) and frames [f0, f1), (steps, heads, frames): lazy, on the device (on
        the `side_stream`, as `host_views` reads it)."""
        with mx.stream(side_stream()):
            return self._scores[self._start + r0 : self._start + r1, :, f0:f1]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = np.array(self._scores[self._start : self._start + self.shape[0]])
        return rows if dtype is None else rows.astype(dtype)


def host_views(parts: list[mx.array]) -> list[np.ndarray]:
    """Device arrays -> host views of them, gathered on the device into one buffer first: one
    synchronization for all, however many parts. The views share that buffer (on CUDA, managed
    memory whose pages move to the host as they are read): copy them before keeping them,
    which needs no MLX call and so may happen on another thread
    (`transcribe.fetch_attention`). The gather runs on the `side_stream`: mid-pass, the decoding
    steps queued meanwhile go on."""
    if not parts:
        return []
    with mx.stream(side_stream()):
        flat = mx.concatenate([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0].reshape(-1)
        host = np.asarray(flat)
    out, at = [], 0
    for p in parts:
        size = int(np.prod(p.shape))
        out.append(host[at : at + size].reshape(p.shape))
        at += size
    return out


PADDED_SCORE_VALUES = 1 << 26  # scores one padded product of `padded_row_scores` may hold (128 MB)


def padded_row_scores(queries: mx.array, keys: mx.array, counts: np.ndarray) -> mx.array:
    """`row_scores` as a few batched products instead of one per row: each row's queries
    padded to the longest row's, (rows, heads, steps, D) @ (rows, heads, D, frames), then the
    padding dropped. On a GPU the collection is a few launches instead of four per row (the
    host queues every one, and while it does the decoding steps wait); the padding's extra
    products cost the device little. Rows are taken in consecutive spans, rows without queries
    included (their keys are sliced, never gathered), each span's product holding at most
    `PADDED_SCORE_VALUES` scores."""
    counts = np.asarray(counts, np.int64)
    n, heads, d = queries.shape
    frames = keys.shape[-1]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    padded = mx.concatenate([queries, mx.zeros((1, heads, d), queries.dtype)])  # row n: padding
    used = np.flatnonzero(counts)
    parts, i = [], 0
    while i < len(used):
        first, longest, j = used[i], counts[used[i]], i + 1
        while j < len(used) and ((used[j] - first + 1) * max(longest, counts[used[j]]) * heads * frames
                                 <= PADDED_SCORE_VALUES):
            longest, j = max(longest, counts[used[j]]), j + 1
        span = np.arange(first, used[j - 1] + 1)
        inside = np.arange(longest)[None, :] < counts[span][:, None]  # (span, longest)
        at = np.where(inside, starts[span][:, None] + np.arange(longest)[None, :], n)
        q = padded[mx.array(at)].transpose(0, 2, 1, 3)  # (span, heads, longest, D)
        s = (q @ keys[int(span[0]) : int(span[-1]) + 1]).transpose(0, 2, 1, 3)
        parts.append(s.reshape(-1, heads, frames)[mx.array(np.flatnonzero(inside.reshape(-1)))])
        i = j
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


def row_scores(queries: mx.array, keys: mx.array, counts: np.ndarray) -> mx.array:
    """Scores of queries sorted into rows, (N, heads, D) with `counts[b]` consecutive ones
    from row b, against each row's keys (B, heads, D, frames) -> (N, heads, frames): one
    batched (heads) product per row."""
    parts, start = [], 0
    for row, n in enumerate(counts.tolist()):
        if n:
            q = queries[start : start + n].swapaxes(0, 1)  # (heads, n, D)
            parts.append((q @ keys[row]).swapaxes(0, 1))
            start += n
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


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

    def weights(self, heads: list[int] | None = None, power: float = 1.0) -> np.ndarray:
        """Softmax attention weights (heads, rows, frames) float32 over the stored frames, of
        the captured heads at positions `heads` (default: all), raised to `power`."""
        picked = range(self.scores.shape[1]) if heads is None else heads
        return softmax_weights(self.scores, self.log_norm, np.asarray(picked, np.int64), power)


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

    def __init__(self, pairs: tuple[tuple[int, int], ...]):
        self.pairs = tuple(sorted(pairs))
        self.layers = _layers(self.pairs)
        self._order = sorted(self.layers)
        self._scores: dict[int, mx.array] = {}

    def take(self, layer: int, queries: mx.array, keys: mx.array) -> None:
        self._scores[layer] = queries @ keys

    def result(self) -> mx.array:
        """(B, heads, positions, frames) float32 scores, heads in `pairs` order."""
        return mx.concatenate([self._scores[layer] for layer in self._order], axis=1).astype(mx.float32)
