"""Token choice under Whisper's timestamp rules as MLX operations, for decoding on a GPU.

The same rules as `kernels.logits.select_tokens` (the host kernel used on CPUs), expressed as
whole-batch array operations so that they run inside the compiled decoder step: the logits never
leave the device, only the chosen token and its log-probability per row do.
"""

from __future__ import annotations

from .backend import mx


def select_tokens(logits: mx.array, suppress: mx.array, text_ok: mx.array, eot_ok: mx.array,
                  ts_min: mx.array, ts_max: mx.array, ts_rule: mx.array, blank: mx.array,
                  eot: int, ts_begin: int, temperature: float = 0.0,
                  key: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """-> (tokens (B,) int32, log-probabilities (B,) float32 under the filtered distribution).

    Arguments as in `kernels.logits.select_tokens`: logits (B, V); suppress (V,) bool; text_ok,
    eot_ok, ts_rule (B,) bool; ts_min, ts_max, blank (B,) int32 token ids (-1: none). A row with
    every token banned ends (end-of-text, log-probability 0).
    """
    vocab = logits.shape[-1]
    idx = mx.arange(vocab)[None, :]
    allowed = ~suppress[None, :] & (idx != blank[:, None])
    allowed = allowed & mx.where(idx < eot, text_ok[:, None], True)
    allowed = allowed & mx.where(idx == eot, eot_ok[:, None], True)
    allowed = allowed & ~((idx > eot) & (idx < ts_begin))
    in_range = (idx >= ts_min[:, None]) & (idx <= ts_max[:, None])
    allowed = allowed & mx.where(idx >= ts_begin, in_range, True)
    x = mx.where(allowed, logits, -mx.inf)
    # Timestamps win when their summed probability beats the best text token: the softmax
    # normalizer cancels, so compare logsumexp over timestamps with the text maximum.
    max_text = x[:, :ts_begin].max(axis=-1)
    lse_ts = mx.logsumexp(x[:, ts_begin:], axis=-1)
    force = ts_rule & (lse_ts > max_text)
    x = mx.where(force[:, None] & (idx < ts_begin), -mx.inf, x)
    best = x.max(axis=-1)
    lse = mx.logsumexp(x, axis=-1)
    if temperature > 0:
        choice = mx.random.categorical(x / temperature, key=key)
    else:
        choice = mx.argmax(x, axis=-1)
    chosen = mx.take_along_axis(x, choice[:, None], axis=-1)[:, 0]
    alive = best > -mx.inf
    tokens = mx.where(alive, choice, eot).astype(mx.int32)
    logprobs = mx.where(alive, chosen - lse, 0.0).astype(mx.float32)
    return tokens, logprobs
