"""Whisper in MLX, built for batched decoding.

Parameter names follow `mlx_whisper.whisper.Whisper`, so the same weights load into both. What
differs is the forward pass: attention uses MLX's fused `scaled_dot_product_attention` (on a CPU,
where MLX's element-wise ops run on one thread, the encoder's softmax and GELUs run in numba
kernels and the decoder's cross-attention as two products), the decoder's self-attention
keys/values live in a preallocated cache, and the cross-attention keys and values of a batch of
windows are computed once per batch. The model knows nothing about word
timing: a decoding step accepts an optional `probe`, and only when one is given does it hand over
the cross-attention queries of the heads the probe asks for (see `capture.py`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial

import mlx.nn as nn
import numpy as np

from .backend import gpu_available, mx
from .kernels.activations import gelu, softmax_rows


@dataclass(frozen=True)
class ModelDimensions:
    """Whisper's architecture: mel bins, context lengths (frames / tokens), widths, heads, layers."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> mx.array:
    """Whisper's fixed sinusoidal positional embedding of the encoder, (length, channels)."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = mx.exp(-log_increment * mx.arange(channels // 2))
    t = mx.arange(length)[:, None] * inv[None, :]
    return mx.concatenate([mx.sin(t), mx.cos(t)], axis=1)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def heads(self, x: mx.array) -> mx.array:
        """(B, T, C) -> (B, H, T, C/H)."""
        b, t, _ = x.shape
        return x.reshape(b, t, self.n_head, -1).transpose(0, 2, 1, 3)

    def merge(self, x: mx.array) -> mx.array:
        b, _, t, _ = x.shape
        return self.out(x.transpose(0, 2, 1, 3).reshape(b, t, -1))

    def self_attention(self, x: mx.array, mask: str | None = None) -> mx.array:
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        scale = q.shape[-1] ** -0.5
        return self.merge(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(n_state, n_head)
            self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp1 = nn.Linear(n_state, n_state * 4)
        self.mlp2 = nn.Linear(n_state * 4, n_state)
        self.mlp_ln = nn.LayerNorm(n_state)

    def mlp(self, x: mx.array) -> mx.array:
        return self.mlp2(nn.gelu(self.mlp1(self.mlp_ln(x))))


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        n = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, n, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n, n, kernel_size=3, stride=2, padding=1)
        self._positional_embedding = sinusoids(dims.n_audio_ctx, n)
        self.blocks = [ResidualAttentionBlock(n, dims.n_audio_head) for _ in range(dims.n_audio_layer)]
        self.ln_post = nn.LayerNorm(n)

    def __call__(self, mel: mx.array, host_kernels: bool = False) -> mx.array:
        """mel (B, 3000 frames, n_mels) -> audio features (B, 1500 frames, n_audio_state).

        `host_kernels` (float32 only): the attention's softmax and the GELUs run as numba
        kernels on all cores instead of MLX's one-thread element-wise ops, the attention's
        products in numpy's BLAS; for MLX's CPU backend, where those element-wise ops took
        most of the encoder's time. Same arithmetic, float32 rounding apart."""
        act = _host_gelu if host_kernels else nn.gelu
        x = act(self.conv1(mel))
        x = act(self.conv2(x))
        x = x + self._positional_embedding.astype(x.dtype)
        for block in self.blocks:
            h = block.attn_ln(x)
            x = x + (_host_self_attention(block.attn, h) if host_kernels
                     else block.attn.self_attention(h))
            x = x + block.mlp2(act(block.mlp1(block.mlp_ln(x))))
        return self.ln_post(x)


def _on_host(x: mx.array) -> np.ndarray:
    mx.eval(x)
    return np.ascontiguousarray(np.asarray(x))  # a view of MLX's CPU memory when contiguous


def _host_gelu(x: mx.array) -> mx.array:
    return mx.array(gelu(_on_host(x)))


def _host_self_attention(attn: MultiHeadAttention, h: mx.array) -> mx.array:
    """`attn.self_attention(h)` (no mask) with the softmax in `softmax_rows`, one window at a
    time so the (heads, T, T) scores stay one window's (54 MB for Whisper's 1500 frames)."""
    b, t, c = h.shape
    d = c // attn.n_head
    q, k, v = (_on_host(y).reshape(b, t, attn.n_head, d).transpose(0, 2, 1, 3)
               for y in (attn.query(h) * d ** -0.5, attn.key(h), attn.value(h)))
    out = np.empty((b, t, attn.n_head, d), np.float32)
    for i in range(b):
        scores = softmax_rows(np.matmul(q[i], k[i].transpose(0, 2, 1)))
        out[i] = np.matmul(scores, v[i]).transpose(1, 0, 2)
    return attn.out(mx.array(out.reshape(b, t, c)))


def cross_attention(q: mx.array, keys: mx.array, values: mx.array, scale: float) -> mx.array:
    """Attention of queries (B, H, L, D) over the audio's values (B, H, frames, D). Keys laid
    out like the values run MLX's fused kernel; keys kept transposed, (B, H, D, frames) (a CPU's
    `DecoderState`; told apart by shape, frames != D in Whisper), run as two products and a
    softmax, which on a CPU was 1.3-1.9x faster per decoding step for one token per row."""
    if keys.shape[-1] == values.shape[-1]:
        return mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale)
    return mx.softmax((q * scale) @ keys, axis=-1) @ values


# How the compiled step writes a token's keys, values and recorded queries into their buffers:
# "slice" (MLX's slice update) or "scatter" (`write_at`). Read when a step is traced, so set it
# before a model's first step; the environment variable lets a benchmark compare the two in
# separate processes with the same command (bench/ab_cache_write.sh).
CACHE_WRITE = os.environ.get("LIGHTNING_ALIGN_CACHE_WRITE", "slice")
if CACHE_WRITE not in ("slice", "scatter"):
    raise ValueError(f"LIGHTNING_ALIGN_CACHE_WRITE={CACHE_WRITE!r}: use slice or scatter")


def write_at(buffer: mx.array, update: mx.array, position: mx.array, axis: int) -> mx.array:
    """`buffer` with `update` (size 1 along `axis`, the buffer's size along the others) written at
    index `position` (an int32 array, so that one compiled graph serves every step) of `axis`.

    MLX's CUDA slice update at a position given as an array sizes its copy kernel by the whole
    output: writing one token (24,576 values for 64 rows of tiny.en) into a 64 x 6 x 448 x 64
    cache launches 10,752 blocks of 1,024 threads, 8 of them a step, the largest kernel of a
    decoding step (~50 us each on an H100, `bench.kernel_timeline`). A scatter
    (`mx.put_along_axis`, `CACHE_WRITE = "scatter"`) launches threads over the update only and
    writes the same values; whether that shortens a GPU step's wall, whose host side is longer
    than its kernels, is not measured yet, so the slice update stays the default. On a CPU the
    scatter made a transcription ~12 % slower.
    """
    if CACHE_WRITE == "slice":
        return mx.slice_update(buffer, update, position, axes=(axis,))
    index = mx.broadcast_to(position.astype(mx.int32).reshape((1,) * update.ndim), update.shape)
    return mx.put_along_axis(buffer, index, update, axis=axis)


class DecoderState:
    """Per-batch decoder state: preallocated self-attention K/V and precomputed cross K/V.

    Self-attention caches are (B, H, n_text_ctx, D) buffers written in place step by step, so a
    step costs no reallocation or concatenation of the history. On a CPU the cross-attention
    keys are kept transposed, (B, H, D, frames) (see `cross_attention`).
    """

    def __init__(self, decoder: "TextDecoder", audio_features: mx.array, probe_layers=None):
        b = audio_features.shape[0]
        dtype = audio_features.dtype
        self.dtype = dtype
        self.offset = 0
        # Per row, the cache position of its first token: 0, except for rows that joined a
        # running batch (`append`); compiled steps count a row's token positions from there.
        self.starts = mx.zeros((b,), dtype=mx.int32)
        self.cross = []
        self.keys = []
        self.values = []
        transposed = not gpu_available()
        for block in decoder.blocks:
            ca = block.cross_attn
            keys = ca.heads(ca.key(audio_features))
            if transposed:
                keys = mx.contiguous(keys.swapaxes(-1, -2))
            self.cross.append((keys, ca.heads(ca.value(audio_features))))
            shape = (b, decoder.n_head, decoder.n_ctx, decoder.n_state // decoder.n_head)
            self.keys.append(mx.zeros(shape, dtype=dtype))
            self.values.append(mx.zeros(shape, dtype=dtype))
        # Keys of the probed heads, gathered and transposed once per batch, for the batch's
        # original rows: `select` leaves them, the probe scores all steps against them at the end.
        self.probe_keys = {
            layer: self.cross[layer][0][:, heads] if transposed
            else self.cross[layer][0][:, heads].swapaxes(-1, -2)
            for layer, heads in sorted((probe_layers or {}).items())
        }
        mx.eval(self.cross, self.keys, self.values, self.probe_keys)

    def select(self, rows: mx.array) -> None:
        """Keep only the given batch rows (e.g. the windows still being decoded)."""
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.starts = self.starts[rows]

    def append(self, other: "DecoderState") -> None:
        """Add the rows of `other`, a state whose first `other.offset` positions were decoded
        (a prompt and start sequence, from position 0), as rows that end those positions at
        this state's offset: their keys and values move to cache positions
        [offset - other.offset, offset), and `starts` marks where they begin, so the compiled
        steps give their next tokens the positions they would have had alone. The masked
        positions before that hold zeros and are never attended to."""
        length, offset = other.offset, self.offset
        if not 0 < length <= offset:
            raise ValueError(f"rows of {length} positions cannot end at position {offset}")

        def moved(cache: mx.array) -> mx.array:
            room = mx.zeros(cache.shape, dtype=cache.dtype)
            return mx.slice_update(room, cache[:, :, :length, :], mx.array(offset - length), axes=(2,))

        self.cross = [(mx.concatenate([k, ok]), mx.concatenate([v, ov]))
                      for (k, v), (ok, ov) in zip(self.cross, other.cross)]
        self.keys = [mx.concatenate([k, moved(ok)]) for k, ok in zip(self.keys, other.keys)]
        self.values = [mx.concatenate([v, moved(ov)]) for v, ov in zip(self.values, other.values)]
        self.starts = mx.concatenate([self.starts, mx.full((other.starts.shape[0],), offset - length,
                                                           dtype=mx.int32)])


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.n_head, self.n_state, self.n_ctx = dims.n_text_head, dims.n_text_state, dims.n_text_ctx
        self.token_embedding = nn.Embedding(dims.n_vocab, dims.n_text_state)
        self.positional_embedding = mx.zeros((dims.n_text_ctx, dims.n_text_state))
        self.blocks = [
            ResidualAttentionBlock(dims.n_text_state, dims.n_text_head, cross_attention=True)
            for _ in range(dims.n_text_layer)
        ]
        self.ln = nn.LayerNorm(dims.n_text_state)

    def step(self, tokens: mx.array, state: DecoderState, probe=None, positions=(-1,)) -> mx.array:
        """Run tokens (B, L) at positions state.offset.. and return logits (B, P, vocab) float32
        for the P requested positions (indices into the L new tokens; default: the last).

        Every row starts at position 0 here (`state.starts` is for the compiled steps).
        `probe`, when given, wants the cross-attention of some heads: `probe.layers` maps a
        layer index to head indices and `probe.take(layer, queries, keys)` receives their scaled
        queries (B, heads, L, D) and keys (B, heads, D, frames), so that `queries @ keys` are
        the attention scores at every new position. The attention itself runs as without one.
        """
        t0, length = state.offset, tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[t0 : t0 + length]
        x = x.astype(state.cross[0][0].dtype)
        if length == 1:
            mask = None
        elif t0 == 0:
            mask = "causal"
        else:  # a block of tokens after earlier ones: causal within the new block
            mask = mx.tril(mx.ones((length, t0 + length), dtype=mx.bool_), k=t0)
        for i, block in enumerate(self.blocks):
            sa = block.attn
            h = block.attn_ln(x)
            q, k, v = sa.heads(sa.query(h)), sa.heads(sa.key(h)), sa.heads(sa.value(h))
            scale = q.shape[-1] ** -0.5
            state.keys[i][:, :, t0 : t0 + length, :] = k
            state.values[i][:, :, t0 : t0 + length, :] = v
            k_all = state.keys[i][:, :, : t0 + length, :]
            v_all = state.values[i][:, :, : t0 + length, :]
            x = x + sa.merge(mx.fast.scaled_dot_product_attention(q, k_all, v_all, scale=scale, mask=mask))

            ca = block.cross_attn
            q = ca.heads(ca.query(block.cross_attn_ln(x)))
            ck, cv = state.cross[i]
            x = x + ca.merge(cross_attention(q, ck, cv, scale))
            if probe is not None and i in state.probe_keys:
                probe.take(i, q[:, probe.layers[i]] * scale, state.probe_keys[i])
            x = x + block.mlp(x)
        state.offset = t0 + length
        x = self.ln(x[:, list(positions), :])
        return (x @ self.output_projection()).astype(mx.float32)

    def output_projection(self) -> mx.array:
        """The tied embedding, transposed once: x @ W^T with a contiguous W^T runs ~2x faster
        on CPU than MLX's transposed-operand path for the (batch x 51864) logits."""
        weight = self.token_embedding.weight
        if getattr(self, "_projection_of", None) is not weight:
            self._projection = mx.contiguous(weight.T)
            self._projection_of = weight
        return self._projection


class Whisper(nn.Module):
    """Whisper encoder-decoder with `alignment_heads` ((layer, head) pairs) as plain data."""

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    @property
    def dtype(self) -> mx.Dtype:
        return self.decoder.token_embedding.weight.dtype

    def embed_audio(self, mel: mx.array) -> mx.array:
        """mel (B, 3000, n_mels) in the model's dtype -> audio features (B, 1500, n_audio_state).
        On a CPU (float32) the encoder's element-wise work runs in multi-threaded kernels."""
        host = not gpu_available() and self.dtype == mx.float32
        return self.encoder(mel.astype(self.dtype), host_kernels=host)


def _transposed_linears(decoder: TextDecoder) -> dict[int, tuple[mx.array | None, mx.array]]:
    """{id(linear): (bias or None, weight transposed)} for the decoder's blocks' linears. The
    transposes are views made and evaluated once, so the compiled step applies `x @ W^T` with
    the same operands as `nn.Linear` (the same products) but without a transpose of its own in
    every step's graph."""
    out = {}
    for block in decoder.blocks:
        for layer in (block.attn.query, block.attn.key, block.attn.value, block.attn.out,
                      block.cross_attn.query, block.cross_attn.out, block.mlp1, block.mlp2):
            out[id(layer)] = (layer.bias if "bias" in layer else None, layer.weight.T)
    mx.eval([t for _, t in out.values()])
    return out


class CompiledStep:
    """One decoding step (one token per row) as a compiled MLX graph.

    Shapes are fixed: attention runs over the whole preallocated cache with a mask up to the
    current position, and the new keys/values go in at a position given as an array
    (`write_at`), so one compilation serves every step of every batch of the same size. Fusing the
    layer norms, GELUs and residual adds, and building the graph once instead of per step, is
    what makes batched decoding fast on a GPU, where a step is a few hundred small kernels.
    With `probe_layers`, the step also writes, for each probed layer in layer order, its
    cross-attention query projection (B, 1, n_state) as the attention consumed it into a
    `record` buffer (B, steps, n_state) at step `offset - base` (in place where MLX may donate
    the buffer; a buffer an unfinished `async_eval` names is copied instead: see
    `decoding.QUEUE_RECORD_EACH_STEP`), and returns the buffers: one buffer per layer and batch
    composition, not a new array per step and layer kept alive for the whole decode (each a
    fresh allocation, and all of them concatenated again at collection).
    Picking the alignment heads out, the scaling, and their scores against the window's keys
    are done for all steps at once when the batch is collected (`AttentionProbe.per_row`): on a
    GPU a step is a few hundred small kernels bound by their launches, and a gather and a
    product per probed layer would add to every step.
    """

    def __init__(self, decoder: TextDecoder, probe_layers: dict | None = None):
        self.decoder = decoder
        self.probe = {layer: heads for layer, heads in sorted((probe_layers or {}).items())}
        self.projection = decoder.output_projection()
        self._linear = _transposed_linears(decoder)
        self._fn = mx.compile(self._step)
        self._fn_choose: dict[tuple, object] = {}

    def _apply(self, layer: nn.Linear, x: mx.array) -> mx.array:
        bias, weight_t = self._linear[id(layer)]
        return x @ weight_t if bias is None else mx.addmm(bias, x, weight_t)

    def _step(self, tokens, offset, starts, keys, values, cross, record, base):
        # One token per row: x stays (B, n_state) and heads are (B, H, 1, D), reshapes of the
        # same memory, so the graph has no transposes and no batch dimension for the products
        # to fold away and restore. On a GPU the host spends more of a step queueing its
        # operations than the device spends running them, and views count there too (the
        # step's graph: 390 -> 273 operations, identical results).
        d = self.decoder
        b = tokens.shape[0]
        # A row's position counts from its own first cache position (`DecoderState.starts`)
        x = d.token_embedding(tokens[:, 0]) + mx.take(d.positional_embedding, offset - starts, axis=0)
        x = x.astype(cross[0][0].dtype)
        at = mx.arange(d.n_ctx)[None, :]
        mask = ((at <= offset) & (at >= starts[:, None]))[:, None, None, :]
        new_keys, new_values, queries = [], [], []
        for i, block in enumerate(d.blocks):
            sa = block.attn
            h = block.attn_ln(x)
            q = self._apply(sa.query, h).reshape(b, sa.n_head, 1, -1)
            k = self._apply(sa.key, h).reshape(b, sa.n_head, 1, -1)
            v = self._apply(sa.value, h).reshape(b, sa.n_head, 1, -1)
            scale = q.shape[-1] ** -0.5
            kc = write_at(keys[i], k, offset, 2)
            vc = write_at(values[i], v, offset, 2)
            new_keys.append(kc)
            new_values.append(vc)
            attended = mx.fast.scaled_dot_product_attention(q, kc, vc, scale=scale, mask=mask)
            x = x + self._apply(sa.out, attended.reshape(b, -1))
            ca = block.cross_attn
            projected = self._apply(ca.query, block.cross_attn_ln(x))
            ck, cv = cross[i]
            attended = cross_attention(projected.reshape(b, ca.n_head, 1, -1), ck, cv, scale)
            x = x + self._apply(ca.out, attended.reshape(b, -1))
            if i in self.probe:
                queries.append(projected[:, None])
            x = x + self._apply(block.mlp2, nn.gelu(self._apply(block.mlp1, block.mlp_ln(x))))
        logits = (d.ln(x) @ self.projection).astype(mx.float32)
        written = [write_at(buf, q, offset - base, 1) for buf, q in zip(record, queries)]
        return (logits, new_keys, new_values, *written)

    def _step_choose(self, special, tokens, alive, rules, offset, key, temperature, starts, keys,
                     values, cross, suppress, record, base):
        from .selection import advance_rules, select_tokens

        eot, ts_begin, vocab, timestamps, sampled = special
        out = self._step(tokens[:, None], offset, starts, keys, values, cross, record, base)
        sample_key = None
        if sampled:
            key, sample_key = mx.random.split(key)
        chosen, logprobs = select_tokens(out[0], suppress, *rules[:6], eot=eot, ts_begin=ts_begin,
                                         temperature=temperature if sampled else 0.0,
                                         key=sample_key)
        rules = advance_rules(rules, chosen, ts_begin, vocab, timestamps)
        alive_next = alive & (chosen != eot)
        # Finished rows keep running on end-of-text until the host shrinks the batch.
        next_tokens = mx.where(alive_next, chosen, eot).astype(mx.int32)
        return (chosen, logprobs, alive_next, next_tokens, rules, offset + 1, key) + tuple(out[1:])

    def choose(self, tokens: mx.array, alive: mx.array, rules: tuple, offset: mx.array,
               key: mx.array, temperature: mx.array, state: DecoderState, suppress: mx.array,
               special: tuple[int, int, int, bool, bool], record: tuple = (),
               base: mx.array | None = None) -> tuple:
        """One step that also chooses the next token (greedy, or sampled at a temperature) and
        advances the timestamp rules on the device (`selection`), so that nothing has to come
        back to the host before the next step can be queued.

        tokens (B,) int32 are the rows' last tokens, `alive` (B,) bool the rows still decoding,
        `rules` the rule state (`selection.RULE_FIELDS`), `offset` () int32 the token position,
        `key` the random key and `temperature` () float32 the temperature sampling draws with;
        `special` = (eot, timestamp_begin, vocab, timestamps on, sampling); `record`, with a
        probe, its buffers and `base` () int32 the token position of their first step (see the
        class). Returns (chosen (B,), their log-probabilities (B,), alive after this step, next
        tokens (B,), rules, offset + 1, next key, the written `record` buffers) and advances
        `state`."""
        fn = self._fn_choose.get(special)
        if fn is None:  # one compiled graph per kind of step; MLX keeps one per batch shape
            fn = self._fn_choose[special] = mx.compile(partial(self._step_choose, special))
        out = fn(tokens, alive, rules, offset, key, temperature, state.starts, state.keys,
                 state.values, state.cross, suppress, tuple(record), offset if base is None else base)
        state.keys, state.values = out[7], out[8]
        state.offset += 1
        return tuple(out[:7]) + (tuple(out[9:]),)

    def __call__(self, tokens: mx.array, state: DecoderState, record: tuple = (),
                 base: mx.array | None = None) -> tuple[mx.array, tuple]:
        """Run one token per row (B, 1) at `state.offset`; -> (logits (B, V), the written
        `record` buffers: see `choose` and the class)."""
        offset = mx.array(state.offset, dtype=mx.int32)
        out = self._fn(tokens, offset, state.starts, state.keys, state.values, state.cross,
                       tuple(record), offset if base is None else base)
        state.keys, state.values = out[1], out[2]
        state.offset += 1
        return out[0], tuple(out[3:])

