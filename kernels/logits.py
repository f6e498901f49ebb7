"""Greedy / sampled token choice under Whisper's timestamp rules, for a batch of rows.

A pure function of arrays: the decoder copies one step's logits to the host once and this kernel
applies the suppression masks, openai-whisper's `ApplyTimestampRules`, the log-softmax and the
choice in one pass per row (rows run in parallel). Doing the same with MLX element-wise ops on a
CPU costs ~20x more (its exp/logsumexp are single-threaded and unvectorized).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NEG_INF = -np.inf


@njit(cache=True, nogil=True, parallel=True)
def select_tokens(logits, suppress, text_ok, eot_ok, ts_min, ts_max, ts_rule, blank,
                  eot, ts_begin, temperature, uniform, tokens_out, logprobs_out):
    """Choose one token per row and return its log-probability under the filtered distribution.

    logits (B, V) float32; suppress (V,) bool: always-banned tokens; text_ok / eot_ok (B,) bool:
    may the row emit text tokens (< eot) / end of text; ts_min, ts_max (B,) int32: the allowed
    timestamp token range (empty when ts_min > ts_max); ts_rule (B,) bool: apply "timestamp when
    their total probability beats every text token"; blank (B,) int32: a token banned for this
    row only (-1 for none; the space token on the first step). temperature (B,) float32, per row:
    0 is greedy, otherwise sampling from softmax(logits / T) with uniform (B,) random numbers in
    [0, 1).
    Writes tokens_out (B,) int32 and logprobs_out (B,) float32.
    """
    n_rows, n_vocab = logits.shape
    for b in prange(n_rows):
        row = logits[b]
        allowed = np.empty(n_vocab, np.bool_)
        for v in range(n_vocab):
            ok = not suppress[v]
            if v < eot:
                ok = ok and text_ok[b]
            elif v == eot:
                ok = ok and eot_ok[b]
            elif v < ts_begin:
                ok = False
            else:
                ok = ok and ts_min[b] <= v <= ts_max[b]
            allowed[v] = ok
        if blank[b] >= 0:
            allowed[blank[b]] = False
        if ts_rule[b]:
            # Timestamp tokens win when their summed probability exceeds the best text token's;
            # the softmax normaliser cancels, so compare logsumexp(ts) with max(text) directly.
            max_text = NEG_INF
            for v in range(ts_begin):
                if allowed[v] and row[v] > max_text:
                    max_text = row[v]
            max_ts = NEG_INF
            for v in range(ts_begin, n_vocab):
                if allowed[v] and row[v] > max_ts:
                    max_ts = row[v]
            if max_ts > NEG_INF:
                acc = 0.0
                for v in range(ts_begin, n_vocab):
                    if allowed[v]:
                        acc += np.exp(row[v] - max_ts)
                if max_ts + np.log(acc) > max_text:
                    for v in range(ts_begin):
                        allowed[v] = False
        best, best_v = NEG_INF, -1
        for v in range(n_vocab):
            if allowed[v] and row[v] > best:
                best, best_v = row[v], v
        if best_v < 0:  # every token banned: end the row rather than emit garbage
            tokens_out[b] = eot
            logprobs_out[b] = 0.0
            continue
        total = 0.0
        for v in range(n_vocab):
            if allowed[v]:
                total += np.exp(row[v] - best)
        lse = best + np.log(total)
        choice = best_v
        t = temperature[b]
        if t > 0.0:
            scaled_total = 0.0
            for v in range(n_vocab):
                if allowed[v]:
                    scaled_total += np.exp((row[v] - best) / t)
            target = uniform[b] * scaled_total
            acc = 0.0
            for v in range(n_vocab):
                if allowed[v]:
                    acc += np.exp((row[v] - best) / t)
                    if acc >= target:
                        choice = v
                        break
        tokens_out[b] = choice
        logprobs_out[b] = row[choice] - lse
