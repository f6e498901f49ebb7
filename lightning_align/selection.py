"""Token choice under Whisper's timestamp rules as MLX operations, for decoding on a GPU.

The same rules as `kernels.logits.select_tokens` (the host kernel used on CPUs), expressed as
whole-batch array operations so that they run inside the compiled decoder step: the logits never
leave the device. The rules' state advances on the device too (`advance_rules`), so a step needs
nothing from the host and the host can queue the next step before this one has finished.
"""

from __future__ import annotations

from .backend import mx


def select_tokens(logits: mx.array, suppress: mx.array, text_ok: mx.array, eot_ok: mx.array,
                  ts_min: mx.array, ts_max: mx.array, ts_rule: mx.array, blank: mx.array,
                  eot: int, ts_begin: int, temperature: float | mx.array = 0.0,
                  key: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """-> (tokens (B,) int32, log-probabilities (B,) float32 under the filtered distribution).

    Arguments as in `kernels.logits.select_tokens`: logits (B, V); suppress (V,) bool; text_ok,
    eot_ok, ts_rule (B,) bool; ts_min, ts_max, blank (B,) int32 token ids (-1: none). Greedy, or
    with a random `key` sampled from softmax(logits / temperature); `temperature` is () or per
    row (B,), where rows at 0 stay greedy. A row with every token banned ends (end-of-text,
    log-probability 0).
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
    if key is not None:  # sampling; `temperature` is an array (one graph for all values)
        t = mx.array(temperature, dtype=mx.float32)
        if t.ndim == 1:  # per row; rows at 0 stay greedy
            sampled = mx.random.categorical(x / mx.maximum(t, 1e-6)[:, None], key=key)
            choice = mx.where(t > 0, sampled, mx.argmax(x, axis=-1))
        else:
            choice = mx.random.categorical(x / t, key=key)
    else:
        choice = mx.argmax(x, axis=-1)
    chosen = mx.take_along_axis(x, choice[:, None], axis=-1)[:, 0]
    alive = best > -mx.inf
    tokens = mx.where(alive, choice, eot).astype(mx.int32)
    logprobs = mx.where(alive, chosen - lse, 0.0).astype(mx.float32)
    return tokens, logprobs


# The per-row state of the timestamp rules, in the order it is passed around as a tuple:
# text_ok, eot_ok, ts_rule (bool); ts_min, ts_max, blank, last_value (int32 token ids or -1);
# last_ts, penult_ts (bool: were the last / second-to-last sampled tokens timestamps).
RULE_FIELDS = ("text_ok", "eot_ok", "ts_min", "ts_max", "ts_rule", "blank", "last_ts",
               "penult_ts", "last_value")


def advance_rules(rules: tuple, chosen: mx.array, ts_begin: int, vocab: int,
                  timestamps: bool) -> tuple:
    """The rule state after each row sampled `chosen` (B,): openai-whisper's
    `ApplyTimestampRules` as `decoding._TimestampRules.advance` keeps it on the host, as a pure
    function of arrays. `rules` and the result are tuples in `RULE_FIELDS` order."""
    text_ok, eot_ok, ts_min, ts_max, ts_rule, blank, last_ts, penult_ts, last_value = rules
    eot_ok = mx.ones_like(eot_ok)
    blank = mx.full(blank.shape, -1, mx.int32)
    if not timestamps:
        return text_ok, eot_ok, ts_min, ts_max, ts_rule, blank, last_ts, penult_ts, last_value
    is_ts = chosen >= ts_begin
    penult_ts, last_ts = last_ts, is_ts
    last_value = mx.where(is_ts, chosen, last_value).astype(mx.int32)
    opening = last_ts & ~penult_ts  # a timestamp that must be closed next
    text_ok = ~opening
    has_ts = last_value >= 0
    ts_min = mx.where(has_ts, mx.where(opening, last_value, last_value + 1), ts_begin).astype(mx.int32)
    # two timestamps in a row close a segment: text must follow
    ts_max = mx.where(last_ts & penult_ts, -1, vocab - 1).astype(mx.int32)
    return text_ok, eot_ok, ts_min, ts_max, ts_rule, blank, last_ts, penult_ts, last_value
