"""Batched greedy decoding of 30 s windows with openai-whisper's timestamp rules and fallback.

One `decode_batch` call decodes B windows in lock step: one decoder step per token for the whole
batch, rows leaving the batch as they reach end-of-text. `decode_with_fallback` re-decodes, at the
next temperature, only the windows whose result fails the compression-ratio / log-probability
tests, as openai-whisper does window by window. Where the batch has rows to spare (a GPU batch
that is not full), the next temperatures are decoded beside the first attempt in the same pass,
and a window's higher attempts stop once a lower one has passed.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from .backend import gpu_available, mx
from .capture import AttentionProbe, RowScores, host_views
from .errors import DecodingError
from .kernels.logits import select_tokens
from .model import CompiledStep, DecoderState
from .models import WhisperModel
from .selection import RULE_FIELDS


@dataclass(frozen=True)
class DecodingOptions:
    """How windows are decoded. Thresholds and defaults are openai-whisper's."""

    task: str = "transcribe"
    language: str | None = None  # None: English for .en models, detected per window otherwise
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    sample_len: int | None = None  # max tokens per window; None: n_text_ctx // 2 (224)
    suppress_tokens: str | tuple[int, ...] = "-1"  # "-1": Whisper's non-speech symbols
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp_s: float = 1.0
    initial_prompt: str | None = None
    compression_ratio_threshold: float | None = 2.4
    # A window that says the same segment (at least this many words) twice in a row is decoded
    # again hotter: tiny models loop on short windows, where the text is too short for the
    # compression-ratio test to see it. None: off.
    repeat_min_words: int | None = 4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    # When every temperature fails: "best" keeps the most probable attempt that is not
    # repetitive (faster-whisper's rule: the T=1.0 sample is usually the worst of them), "last"
    # keeps the final one as openai-whisper does.
    on_all_failed: str = "best"
    # Seeds the draws at fallback temperatures: the same seed, the same samples on one backend.
    seed: int = 0
    # Where each step's token is chosen: "device" inside the compiled step, with the host
    # queuing steps ahead (fast on a GPU); "host" by a numba kernel over the step's logits (fast
    # on a CPU, where MLX's element-wise ops are single-threaded); "auto" picks by backend.
    # Greedy choices are the same either way; samples (temperature > 0) come from different
    # random generators.
    token_choice: str = "auto"
    # Fallback attempts decoded ahead: in a batch with rows to spare, each window is also decoded
    # at up to this many of the next temperatures in the same pass, so a window that fails has
    # its next attempts ready instead of costing another pass of sequential steps. A higher
    # attempt stops as soon as a lower one of its window has passed. Results are those of the
    # one-temperature-at-a-time ladder (the first attempt that passes, in temperature order);
    # only the random draws differ. "auto": as many as fit in the rows the batch leaves free
    # where tokens are chosen on the device (a GPU, where a step's cost grows slowly with the
    # rows), none on a CPU. An int >= 0: up to that many, in the rows the batch leaves free.
    fallback_ahead: int | str = "auto"

    def __post_init__(self):
        if self.task not in ("transcribe", "translate"):
            raise DecodingError(f"task {self.task!r}: use 'transcribe' or 'translate'.")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise DecodingError(f"temperatures {self.temperatures}: give one or more values >= 0.")
        if self.on_all_failed not in ("best", "last"):
            raise DecodingError(f"on_all_failed={self.on_all_failed!r}: use 'best' or 'last'.")
        if self.repeat_min_words is not None and (isinstance(self.repeat_min_words, bool)
                                                   or not isinstance(self.repeat_min_words, int)
                                                   or self.repeat_min_words < 1):
            raise DecodingError(f"repeat_min_words={self.repeat_min_words!r}: give a whole "
                                "number of words >= 1, or None to turn the test off.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise DecodingError(f"seed={self.seed!r}: give a whole number >= 0.")
        if self.token_choice not in ("auto", "device", "host"):
            raise DecodingError(f"token_choice={self.token_choice!r}: use 'auto', 'device' or 'host'.")
        if self.fallback_ahead != "auto" and (isinstance(self.fallback_ahead, bool)
                                              or not isinstance(self.fallback_ahead, int)
                                              or self.fallback_ahead < 0):
            raise DecodingError(f"fallback_ahead={self.fallback_ahead!r}: give 'auto' or a whole "
                                "number of temperatures >= 0 (0: one temperature per pass).")

    def tokens_on_device(self) -> bool:
        """Whether steps choose their tokens on the device (see `token_choice`)."""
        return self.token_choice == "device" or (self.token_choice == "auto" and gpu_available())

    def attempts_ahead(self, windows: int, rows: int, untried: int) -> int:
        """Temperatures to decode ahead of the lowest of `untried` ones for each of `windows`
        windows, in a pass of at most `rows` rows (see `fallback_ahead`)."""
        if self.fallback_ahead == "auto":
            ahead = untried - 1 if self.tokens_on_device() else 0
        else:
            ahead = min(self.fallback_ahead, untried - 1)
        return max(0, min(ahead, rows // windows - 1))



@dataclass(frozen=True)
class WindowResult:
    """The accepted decode of one window. `tokens` are the sampled tokens (text and timestamps),
    without the start sequence and end-of-text. `attention`, when captured, has one row per
    sampled token plus one for the end-of-text prediction: (rows, heads, 1500 frames) float16,
    kept on the device until the parts segments keep are copied (`capture.host_views`)."""

    tokens: tuple[int, ...]
    token_logprobs: np.ndarray
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    language: str
    attention: RowScores | None = field(default=None, repr=False)
    # (rows, heads) softmax log-normalizers of `attention` over the audio frames given to
    # `decode_batch` (all 1500 frames if none were)
    log_norm: np.ndarray | None = field(default=None, repr=False)
    initial_tokens: tuple[int, ...] = ()  # prompt and start sequence the decode began with
    # words in the longest segment that repeats the one before it word for word (0: none)
    repeated_words: int = 0

    def needs_fallback(self, options: DecodingOptions) -> bool:
        """openai-whisper's test: repetitive or improbable text, unless the window is silence."""
        failed = (
            self.is_repetitive(options)
            or (options.logprob_threshold is not None and self.avg_logprob < options.logprob_threshold)
        )
        silent = (options.no_speech_threshold is not None and options.logprob_threshold is not None
                  and self.no_speech_prob > options.no_speech_threshold
                  and self.avg_logprob < options.logprob_threshold)
        return failed and not silent

    def is_repetitive(self, options: DecodingOptions) -> bool:
        """A loop: compressible text, or a segment said twice in a row."""
        return (_compresses_like_a_loop(self.compression_ratio, options)
                or _says_a_segment_twice(self.repeated_words, options))


def _compresses_like_a_loop(ratio: float, options: DecodingOptions) -> bool:
    return (options.compression_ratio_threshold is not None
            and ratio > options.compression_ratio_threshold)


def _says_a_segment_twice(repeated: int, options: DecodingOptions) -> bool:
    return options.repeat_min_words is not None and repeated >= options.repeat_min_words


# Tokens a row must have chosen before its text alone can doom it (`bound_to_fail`): text of
# this length (~200 bytes) compresses past Whisper's 2.4 only when it repeats itself heavily.
LOOP_MIN_TOKENS = 48


def bound_to_fail(tokens: Sequence[int], options: DecodingOptions, eot: int, ts_begin: int,
                  decode: Callable[[list[int]], str]) -> bool:
    """Whether a row's tokens so far (a prefix of its attempt) already make it fail
    `WindowResult.is_repetitive`: a segment said twice (`options.repeat_min_words`; exact, as
    whatever follows keeps the repeat), or, from `LOOP_MIN_TOKENS` tokens on, text compressing
    past `options.compression_ratio_threshold`: a loop under way. The second is a judgement,
    not a proof (new text after the loop would lower the ratio); a sampled row caught in a loop
    otherwise runs all `sample_len` steps, and its batch waits for it."""
    if options.repeat_min_words is not None and _says_a_segment_twice(
            repeated_words(tokens, ts_begin, decode), options):
        return True
    return (options.compression_ratio_threshold is not None and len(tokens) >= LOOP_MIN_TOKENS
            and _compresses_like_a_loop(compression_ratio(decode([t for t in tokens if t < eot])),
                                        options))


def repeated_words(tokens: Sequence[int], ts_begin: int, decode: Callable[[list[int]], str]) -> int:
    """Words in the longest segment of `tokens` (text and timestamp tokens of one window) whose
    text equals the segment's before it, compared as lower-case words without punctuation."""
    texts, current = [], []
    for t in tokens:
        if t >= ts_begin:
            if current:
                texts.append(current)
            current = []
        else:
            current.append(t)
    if current:
        texts.append(current)
    words = ["".join(c.lower() if c.isalnum() else " " for c in decode(t)).split() for t in texts]
    return max((len(b) for a, b in zip(words, words[1:]) if a == b), default=0)


def compression_ratio(text: str) -> float:
    """Bytes of the UTF-8 text over bytes of its zlib compression (Whisper's repetition test)."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


class _TimestampRules:
    """Host-side state of openai-whisper's `ApplyTimestampRules`, vectorized over rows."""

    def __init__(self, n_rows: int, tokenizer, vocab: int, options: DecodingOptions, blank: int):
        self.ts_begin, self.vocab = tokenizer.timestamp_begin, vocab
        self.timestamps = not options.without_timestamps
        self.text_ok = np.zeros(n_rows, bool) if self.timestamps else np.ones(n_rows, bool)
        self.eot_ok = np.zeros(n_rows, bool)
        self.ts_min = np.full(n_rows, self.ts_begin, np.int32)
        max_initial = int(round(options.max_initial_timestamp_s * 50)) if self.timestamps else -1
        self.ts_max = np.full(n_rows, self.ts_begin + max_initial if self.timestamps else -1, np.int32)
        if self.timestamps and options.max_initial_timestamp_s is None:
            self.ts_max[:] = vocab - 1
        self.ts_rule = np.full(n_rows, self.timestamps, bool)
        self.blank = np.full(n_rows, blank if options.suppress_blank else -1, np.int32)
        # openai-whisper counts a missing penultimate token as a timestamp, so the first
        # timestamp of a window opens no segment that a second one could close at once.
        self.last_ts = np.ones(n_rows, bool)
        self.penult_ts = np.ones(n_rows, bool)
        self.last_value = np.full(n_rows, -1, np.int32)

    def advance(self, chosen: np.ndarray) -> None:
        self.eot_ok[:] = True
        self.blank[:] = -1
        if not self.timestamps:
            return
        is_ts = chosen >= self.ts_begin
        self.penult_ts, self.last_ts = self.last_ts, is_ts
        self.last_value = np.where(is_ts, chosen, self.last_value).astype(np.int32)
        opening = self.last_ts & ~self.penult_ts  # a timestamp that must be closed next
        self.text_ok = ~opening
        has_ts = self.last_value >= 0
        self.ts_min = np.where(has_ts, np.where(opening, self.last_value, self.last_value + 1),
                               self.ts_begin).astype(np.int32)
        # two timestamps in a row close a segment: text must follow
        self.ts_max = np.where(self.last_ts & self.penult_ts, -1, self.vocab - 1).astype(np.int32)

    def select(self, keep: np.ndarray) -> None:
        for name in RULE_FIELDS:
            setattr(self, name, getattr(self, name)[keep])

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The state in `selection.RULE_FIELDS` order (what the device-side rules start from)."""
        return tuple(np.asarray(getattr(self, name)) for name in RULE_FIELDS)


def _suppress_mask(tokenizer, vocab: int, options: DecodingOptions) -> np.ndarray:
    mask = np.zeros(vocab, bool)
    tokens = options.suppress_tokens
    if isinstance(tokens, str):
        tokens = [int(t) for t in tokens.split(",") if t.strip()]
    tokens = list(tokens)
    if -1 in tokens:
        tokens = [t for t in tokens if t >= 0] + list(tokenizer.non_speech_tokens)
    tokens += [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev,
               tokenizer.sot_lm, tokenizer.no_timestamps]
    if tokenizer.no_speech is not None:
        tokens.append(tokenizer.no_speech)
    mask[[t for t in tokens if 0 <= t < vocab]] = True
    return mask


def prompt_tokens(tokenizer, text: str | None, n_text_ctx: int) -> list[int]:
    """The `<|startofprev|>` block for an initial prompt (or previous text), or []."""
    if not text:
        return []
    encoded = tokenizer.encode(" " + text.strip()) if isinstance(text, str) else list(text)
    return [tokenizer.sot_prev] + encoded[-(n_text_ctx // 2 - 1):]


def row_prompts(prompt: Sequence[int] | Sequence[Sequence[int]] | None, n_rows: int) -> list[list[int]]:
    """One prompt (token list) per row from `prompt`: None (no prompt), one list for all rows, or
    a list per row. The rows of one batch share their positions, so every prompt must have the
    same length."""
    if prompt is None or len(prompt) == 0:
        return [[] for _ in range(n_rows)]
    if not isinstance(prompt[0], (list, tuple, np.ndarray)):
        return [list(prompt) for _ in range(n_rows)]  # type: ignore[arg-type]
    rows = [list(p) for p in prompt]  # type: ignore[union-attr]
    if len(rows) != n_rows or len({len(p) for p in rows}) > 1:
        raise DecodingError(f"per-row prompts: {len(rows)} for {n_rows} rows, lengths "
                            f"{sorted({len(p) for p in rows})}; give one per row, all of one length.")
    return rows


def detect_languages(wm: WhisperModel, features: mx.array) -> list[tuple[str, dict[str, float]]]:
    """Most likely language per window (and all probabilities), from the <|startoftranscript|> step."""
    tokenizer = wm.tokenizer()
    state = DecoderState(wm.model.decoder, features)
    sot = mx.full((features.shape[0], 1), tokenizer.sot, dtype=mx.int32)
    logits = np.asarray(wm.model.decoder.step(sot, state)[:, 0, :])
    lang_tokens = np.asarray(tokenizer.all_language_tokens)
    codes = list(tokenizer.all_language_codes)
    sub = logits[:, lang_tokens]
    probs = np.exp(sub - sub.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return [(codes[int(p.argmax())], dict(zip(codes, p.tolist()))) for p in probs]


def compiled_step(wm: WhisperModel, probe_layers: dict | None) -> CompiledStep:
    """The model's compiled one-token step, with or without the alignment-head probe (cached)."""
    heads = tuple((layer, tuple(np.asarray(h).tolist())) for layer, h in (probe_layers or {}).items())
    key = "_compiled_probe" if probe_layers else "_compiled_plain"
    held = getattr(wm, key, None)
    if held is None or held[0] != heads:  # compiled for other heads (see `extra_heads`)
        held = (heads, CompiledStep(wm.model.decoder, probe_layers))
        setattr(wm, key, held)
    return held[1]


@dataclass(eq=False)
class JoinRow:
    """A window to decode in the rows of a pass already under way (see `decode_batch`'s
    `join`): its audio features (1, frames, C), the tokens before its start sequence
    (`<|startofprev|>` and previous text, or none), its language, and its 20 ms frames that
    hold audio (None: all). `result` is set when the pass ends; it stays None when the row ran
    out of steps before its end-of-text (its text may be cut short)."""

    features: mx.array
    prompt: list[int]
    language: str
    audio_frames: int | None = None
    result: WindowResult | None = None


# Steps a pass must have left for a row to join it: fewer, and the joined row would likely be
# cut short (and decoded again anyway).
JOIN_MIN_STEPS = 24


def decode_batch(wm: WhisperModel, features: mx.array, options: DecodingOptions, *,
                 temperature: float | Sequence[float] = 0.0, capture: bool = False,
                 languages: list[str] | None = None,
                 prompt: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 rng: np.random.Generator | None = None,
                 audio_frames: np.ndarray | None = None,
                 rungs: Sequence[tuple[int, int]] | None = None,
                 stop_failed: bool = False,
                 join: Callable[[int, WindowResult, int], JoinRow | None] | None = None,
                 settle: Callable[[list[int], list[WindowResult]], None] | None = None,
                 ) -> list[WindowResult]:
    """Decode a batch of windows' audio features (B, 1500, C) at one temperature, or at one per
    row (a sequence of B temperatures; rows at 0 are greedy).

    With `capture`, each result keeps its alignment-head attention; given `audio_frames` (per
    row, the number of 20 ms encoder frames that hold audio) also its softmax normalizers.
    `rungs`, per row (window, rung): rows that decode the same window at rising temperatures
    (rung 0 the lowest); once every row of a rung has ended, the higher rungs of the windows
    whose result there passed `WindowResult.needs_fallback` stop early, and their results are
    cut short (a caller uses only the first attempt that passes). With `stop_failed`, a row
    `bound_to_fail` (a segment said twice, or a long text that compresses like a loop) stops
    once it is among the batch's last quarter of rows still decoding, unless its temperature is
    the last of `options.temperatures` or it may yet count as silence; its result is cut short,
    and failing, so a looping row does not hold up the batch for the rest of its `sample_len`
    steps. `prompt`: the `<|startofprev|>` block (tokens) before each row's start sequence, one
    for all rows or one per row, all of one length. Tokens are chosen where
    `options.token_choice` says.

    `join(row, result, offset)`, where tokens are chosen on the device: hears of each row at
    temperature 0 that reached its end-of-text, with its result (no attention yet), while the
    pass goes on; it may answer with a `JoinRow`, a window to decode in the pass's rows from
    then on (e.g. the rest of a window whose text stopped early). Its prompt and start sequence
    are decoded at once, to end at the pass's token position `offset` (a longer prompt loses
    its oldest tokens), and the row then takes steps with the others, its positions counted
    from its own start: its tokens are those it would get decoded alone. Joined rows' results
    are left in their `JoinRow`s, not returned; a step is only as dear as its slowest row on a
    GPU, so they cost little beside a later pass of their own.

    `settle(rows, results)`, where tokens are chosen on the device and with `capture`: hears,
    while the pass goes on, of rows of the lowest rung (all rows, without `rungs`) that reached
    their end-of-text with a result that needs no fallback, with their attention, once the
    batch has let them go; a caller can take those windows' segments and words while the
    others still decode. Their results are returned as well, the same objects."""
    n_rows = features.shape[0]
    dims = wm.dims
    row_temperature = np.broadcast_to(np.asarray(temperature, np.float64), (n_rows,))
    temps = row_temperature.astype(np.float32)  # what the kernels draw with
    languages = [options.language or "en"] * n_rows if languages is None else list(languages)
    tokenizers = [wm.tokenizer(lang if wm.is_multilingual else None, options.task) for lang in languages]
    tok = tokenizers[0]
    prompts = row_prompts(prompt, n_rows)
    sot_rows = []
    for t, row_prompt in zip(tokenizers, prompts):
        seq = list(t.sot_sequence_including_notimestamps if options.without_timestamps else t.sot_sequence)
        sot_rows.append(row_prompt + seq)
    initial = np.array(sot_rows, np.int32)
    initial_rows = [tuple(int(t) for t in row) for row in initial]
    sot_index = len(prompts[0]) if prompts else 0
    sample_len = options.sample_len or dims.n_text_ctx // 2
    sample_len = min(sample_len, dims.n_text_ctx - initial.shape[1])

    probe = (AttentionProbe(wm.captured_heads, dims.n_text_head, dims.n_text_state, audio_frames)
             if capture else None)
    state = DecoderState(wm.model.decoder, features, probe.layers if probe else None)
    vocab = dims.n_vocab
    suppress = _suppress_mask(tok, vocab, options)
    rules = _TimestampRules(n_rows, tok, vocab, options, tok.encode(" ")[0])
    rng = rng or np.random.default_rng(options.seed)
    step_fn = compiled_step(wm, probe.layers if probe else None)
    tokens = _TokenLog(n_rows)

    def result(row: int, sampled: list[int], lps: np.ndarray) -> WindowResult:
        if sampled and sampled[-1] == tok.eot:
            sampled = sampled[:-1]
        text = tok.decode([t for t in sampled if t < tok.eot])
        return WindowResult(
            tokens=tuple(sampled), token_logprobs=lps, text=text,
            avg_logprob=float(lps.sum() / (len(sampled) + 1)),
            no_speech_prob=float(no_speech[row]), compression_ratio=compression_ratio(text),
            temperature=float(row_temperature[row]), language=languages[row],
            initial_tokens=initial_rows[row],
            repeated_words=repeated_words(sampled, tok.timestamp_begin, tok.decode))

    def passed(rows: np.ndarray) -> np.ndarray:
        so_far = tokens.so_far()
        return np.array([not result(int(r), *so_far[r]).needs_fallback(options) for r in rows], bool)

    def doomed(rows: np.ndarray) -> np.ndarray:
        so_far = tokens.so_far()
        return np.array([bound_to_fail(so_far[r][0], options, tok.eot, tok.timestamp_begin,
                                       tok.decode) for r in rows], bool)

    joined: list[tuple[int, JoinRow]] = []  # (row id, what joined there)
    offered: set[int] = set()
    settled: dict[int, WindowResult] = {}
    lowest = (np.ones(n_rows, bool) if rungs is None
              else np.array([rung == 0 for _, rung in rungs], bool))

    def settling(left: np.ndarray) -> None:
        """Hand `settle` the rows in `left` (ids the batch let go) whose results are final."""
        so_far = tokens.so_far()
        ready, done = [], []
        for r in left.tolist():
            if r >= n_rows or not lowest[r] or (stops is not None and stops.stopped[r]):
                continue
            sampled, lps = so_far[r]
            if not sampled or sampled[-1] != tok.eot:
                continue  # cut short
            res = result(r, sampled, lps)
            if not res.needs_fallback(options):
                ready.append(r)
                done.append(res)
        if not ready:
            return
        attention, norms = probe.ended_rows(np.array(ready), tokens.n_rows)
        done = [replace(res, attention=a, log_norm=n) for res, a, n in zip(done, attention, norms)]
        settled.update(zip(ready, done))
        settle(ready, done)

    def joining(ended: np.ndarray, offset: int, steps_left: int) -> list[_Joined]:
        """Offer the rows in `ended` (ids; not alive) that were not offered yet to `join`;
        decode the prompt and start sequence of the windows it asks for, to end at position
        `offset`. -> the new rows, in groups of one prompt length."""
        nonlocal row_temperature, no_speech
        fresh = [r for r in ended.tolist() if r not in offered]
        offered.update(fresh)
        fresh = [r for r in fresh if r < n_rows and row_temperature[r] == 0
                 and not (stops is not None and stops.stopped[r])]
        if not fresh or steps_left < JOIN_MIN_STEPS:
            return []
        so_far = tokens.so_far()
        asks = []
        for r in fresh:
            sampled, lps = so_far[r]
            if sampled and sampled[-1] == tok.eot:  # ended, not cut short
                ask = join(r, result(r, sampled, lps), offset)
                if ask is not None:
                    asks.append(ask)
        by_length: dict[int, list[tuple[JoinRow, list[int], int]]] = {}
        for ask in asks:
            t = wm.tokenizer(ask.language if wm.is_multilingual else None, options.task)
            seq = list(t.sot_sequence_including_notimestamps if options.without_timestamps
                       else t.sot_sequence)
            room = offset - len(seq)  # prompt tokens that fit before `offset`
            kept = (ask.prompt if len(ask.prompt) <= room
                    else [ask.prompt[0]] + ask.prompt[len(ask.prompt) - room + 1:] if room >= 2 else [])
            by_length.setdefault(len(kept) + len(seq), []).append((ask, kept + seq, len(kept)))
        groups = []
        for group in by_length.values():
            ids = np.arange(tokens.n_rows, tokens.n_rows + len(group))
            new = DecoderState(wm.model.decoder, mx.concatenate([a.features for a, _, _ in group]),
                               probe.layers if probe else None)
            logits = wm.model.decoder.step(mx.array([seq for _, seq, _ in group], dtype=mx.int32),
                                           new, probe, positions=(group[0][2], -1))
            pending = [logits] + (probe.end_step(ids) if probe else [])
            if probe:
                probe.add_rows(new.probe_keys, np.array(
                    [dims.n_audio_ctx if a.audio_frames is None else a.audio_frames
                     for a, _, _ in group], np.int32))
            mx.eval(*pending)
            host = np.asarray(logits)
            n = len(group)
            rules_new = _TimestampRules(n, tok, vocab, options, tok.encode(" ")[0])
            first, first_lp = np.empty(n, np.int32), np.empty(n, np.float32)
            _choose_on_host(np.ascontiguousarray(host[:, 1, :]), suppress, rules_new, tok,
                            np.zeros(n, np.float32), rng, first, first_lp)
            tokens.n_rows += n
            tokens.add(ids, np.ones(n, bool), first, first_lp)
            rules_new.advance(first)
            row_temperature = np.concatenate([row_temperature, np.zeros(n)])
            no_speech = np.concatenate([no_speech, _no_speech(host[:, 0, :], tok)])
            languages.extend(a.language for a, _, _ in group)
            initial_rows.extend(tuple(seq) for _, seq, _ in group)
            joined.extend(zip(ids.tolist(), (a for a, _, _ in group)))
            if stops is not None:
                stops.extend(n)
            groups.append(_Joined(ids, new, first, first != tok.eot, rules_new.arrays()))
        return groups

    with wm.lock:
        logits = wm.model.decoder.step(mx.array(initial), state, probe, positions=(sot_index, -1))
        pending = [logits] + (probe.end_step(np.arange(n_rows)) if probe else [])
        mx.eval(*pending)
        host = np.asarray(logits)
        no_speech = _no_speech(host[:, 0, :], tok)
        stoppable = None
        if stop_failed and (options.repeat_min_words is not None
                            or options.compression_ratio_threshold is not None):
            stoppable = row_temperature < max(options.temperatures)
            if options.no_speech_threshold is not None and options.logprob_threshold is not None:
                # A repetitive result still passes as silence (no_speech_prob over its
                # threshold and a low log-probability), which only the whole result tells.
                stoppable &= no_speech <= options.no_speech_threshold
        stops = (_Stops(n_rows, rungs, passed, stoppable, doomed)
                 if rungs is not None or stoppable is not None else None)
        first_logits = np.ascontiguousarray(host[:, 1, :])
        if options.tokens_on_device():
            _steps_on_device(step_fn, state, probe, rules, tokens, first_logits, suppress, tok,
                             temps, rng, sample_len, stops, joining if join else None,
                             settling if settle is not None and probe else None)
        else:
            _steps_on_host(step_fn, state, probe, rules, tokens, first_logits, suppress, tok,
                           temps, rng, sample_len, stops)

    n_total = tokens.n_rows
    results = [settled.get(row) or result(row, *tokens.of(row)) for row in range(n_total)]
    if probe:
        results = _with_attention(results, probe, stops if rungs is not None else None, options,
                                  settled)
    for row, ask in joined:
        ended = tokens.of(row)[0][-1:] == [tok.eot]
        ask.result = results[row] if ended else None
    return results[:n_rows]


def _no_speech(at_sot: np.ndarray, tok) -> np.ndarray:
    """Probability of <|nospeech|> at the start-of-transcript position, per row (logits (B, V))."""
    if tok.no_speech is None:
        return np.zeros(len(at_sot))
    p = np.exp(at_sot - at_sot.max(-1, keepdims=True))
    return p[:, tok.no_speech] / p.sum(-1)


@dataclass
class _Joined:
    """Rows that join a pass (`decode_batch`'s `join`): their ids, decoder state with the
    prompt and start sequence decoded, first tokens, whether those left them alive, and their
    timestamp rules' state (`RULE_FIELDS` order)."""

    ids: np.ndarray
    state: DecoderState
    first: np.ndarray
    alive: np.ndarray
    rules: tuple[np.ndarray, ...]


def _with_attention(results: list[WindowResult], probe: AttentionProbe, stops: "_Stops | None",
                    options: DecodingOptions, settled: dict[int, WindowResult]
                    ) -> list[WindowResult]:
    """`results` with each row's captured attention; given the `stops` of a pass with rungs,
    none for the attempts above one of their window that passed: never used. Rows in
    `settled` already have theirs (taken mid-pass): those results stand."""
    unused = np.zeros(len(results), bool)
    if stops is not None:
        window, rung = stops.window, stops.rung
        first_pass = {}
        for row in np.argsort(rung, kind="stable"):
            if window[row] not in first_pass and not results[row].needs_fallback(options):
                first_pass[window[row]] = rung[row]
        unused = np.array([rung[r] > first_pass.get(window[r], rung[r]) for r in range(len(results))])
    unused[list(settled)] = True
    attention, norms = probe.per_row(len(results), unused)
    return [r if i in settled else replace(r, attention=a, log_norm=n)
            for i, (r, a, n) in enumerate(zip(results, attention, norms))]


class _Stops:
    """Rows a pass stops before their end-of-text.

    Rungs: rows that decode the same windows at rising temperatures. A row is needed only while
    every lower rung of its window has failed: once all rows of the lowest unsettled rung have
    ended, `passed` judges them and the higher rungs of the windows that passed stop.
    Failed rows: among the `stoppable` rows, every `CHECK_STEPS` steps while at most a quarter
    of the batch is still decoding, those `doomed` to fail stop (and count as failed rungs)."""

    CHECK_STEPS = 16

    def __init__(self, n_rows: int, rungs: Sequence[tuple[int, int]] | None,
                 passed: Callable[[np.ndarray], np.ndarray], stoppable: np.ndarray | None,
                 doomed: Callable[[np.ndarray], np.ndarray]):
        pairs = np.asarray(rungs if rungs is not None else [(r, 0) for r in range(n_rows)],
                           np.int64).reshape(-1, 2)
        self.window, self.rung = pairs[:, 0], pairs[:, 1]
        self.top = int(self.rung.max(initial=0))
        self.passed, self.doomed = passed, doomed
        self.stoppable = stoppable if stoppable is not None else np.zeros(n_rows, bool)
        self.stopped = np.zeros(n_rows, bool)
        self.next = 0
        self.steps = 0

    def extend(self, n: int) -> None:
        """`n` rows joined the pass: windows of their own, below every rung (never judged with
        one), not stoppable."""
        first = int(self.window.max(initial=-1)) + 1
        self.window = np.concatenate([self.window, np.arange(first, first + n)])
        self.rung = np.concatenate([self.rung, np.full(n, -1)])
        self.stoppable = np.concatenate([self.stoppable, np.zeros(n, bool)])
        self.stopped = np.concatenate([self.stopped, np.zeros(n, bool)])

    def update(self, rows: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """After a step: `rows` (original ids) are the batch's rows and `alive` theirs; rows not
        in the batch have ended. -> alive with the rows stopped by now removed."""
        self.steps += 1
        alive = alive & ~self.stopped[rows]
        if (self.steps % self.CHECK_STEPS == 0 and 0 < alive.sum() <= max(1, len(self.stopped) // 4)
                and self.stoppable[rows[alive]].any()):
            check = rows[alive][self.stoppable[rows[alive]]]
            self.stopped[check[self.doomed(check)]] = True
            alive = alive & ~self.stopped[rows]
        if self.next < self.top:
            ended = np.ones(len(self.window), bool)
            ended[rows] = ~alive
            while self.next < self.top:
                at = np.flatnonzero((self.rung == self.next) & ~self.stopped)
                if not ended[at].all():
                    break
                if len(at):
                    won = self.window[at[self.passed(at)]]
                    self.stopped |= (self.rung > self.next) & np.isin(self.window, won)
                self.next += 1
            alive = alive & ~self.stopped[rows]
        return alive


class _TokenLog:
    """The tokens each row sampled, kept as one array per step and sorted into rows when asked
    (`so_far`, `of`). Steps chosen on the device are copied to the host once each, in a batch
    of the steps added since the last `so_far`."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self._steps: list[tuple[np.ndarray, object, object]] = []
        self._by_row: list[tuple[list[int], np.ndarray]] | None = None
        # the first `_copied` steps on the host, concatenated: row ids, tokens, log-probs
        self._ids = np.zeros(0, np.int64)
        self._chosen = np.zeros(0, np.int64)
        self._lps = np.zeros(0, np.float32)
        self._copied = 0

    def add(self, rows: np.ndarray, alive: np.ndarray, chosen, logprobs) -> None:
        """One step: batch rows `rows` (original ids) chose `chosen` with `logprobs` (numpy or
        MLX arrays); only rows `alive` before this step keep theirs."""
        self._steps.append((np.where(alive, rows, -1), chosen, logprobs))

    def of(self, row: int) -> tuple[list[int], np.ndarray]:
        """-> (tokens, log-probabilities (float32)) row `row` sampled, in step order."""
        if self._by_row is None:
            self._by_row = self.so_far()
        return self._by_row[row]

    def so_far(self) -> list[tuple[list[int], np.ndarray]]:
        """Every row's (tokens, log-probabilities) from the steps added so far. The decoding loop
        asks after reading the last added step's alive mask, so those steps have run and their
        copy waits for nothing queued after them (a step still running would only be waited
        for)."""
        new = self._steps[self._copied:]
        if new:
            self._ids = np.concatenate([self._ids] + [r for r, _, _ in new])
            self._chosen = np.concatenate([self._chosen, _to_host([c for _, c, _ in new])])
            self._lps = np.concatenate([self._lps, _to_host([lp for _, _, lp in new])])
            self._copied = len(self._steps)
        ids, chosen, lps = self._ids, self._chosen, self._lps
        live = np.flatnonzero(ids >= 0)
        order = live[np.argsort(ids[live], kind="stable")]
        cuts = np.cumsum(np.bincount(ids[live], minlength=self.n_rows))[:-1]
        return [(c.tolist(), lp) for c, lp in zip(np.split(chosen[order], cuts),
                                                  np.split(lps[order], cuts))]


def _to_host(parts: list) -> np.ndarray:
    """One host array of steps' outputs (numpy, or MLX arrays of steps that have run), in order,
    read off the device in one copy on the side stream (`capture.host_views`): on the default
    stream the read would wait for every step queued after them, and the device would then
    idle while the host works."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return np.concatenate(host_views([mx.array(p) for p in parts]))


def _choose_on_host(step_logits, suppress, rules, tok, temps, rng, chosen, chosen_lp):
    """Choose the batch's tokens with the host kernel; `temps` (B,) float32 per row."""
    b = step_logits.shape[0]
    uniform = rng.random(b).astype(np.float32) if temps.max() > 0 else np.zeros(b, np.float32)
    select_tokens(step_logits, suppress, rules.text_ok, rules.eot_ok, rules.ts_min,
                  rules.ts_max, rules.ts_rule, rules.blank, tok.eot, tok.timestamp_begin,
                  temps, uniform, chosen[:b], chosen_lp[:b])


def _steps_on_host(step_fn, state, probe, rules, log, step_logits, suppress, tok, temps,
                   rng, sample_len, stops=None) -> None:
    """Decode step by step, each step's logits copied to the host token kernel."""
    n_rows = step_logits.shape[0]
    rows = np.arange(n_rows)  # original row id of each batch row
    alive = np.ones(n_rows, bool)
    if probe:
        probe.open(n_rows, state.offset, sample_len - 1, state.dtype)
    chosen = np.empty(n_rows, np.int32)
    chosen_lp = np.empty(n_rows, np.float32)
    for step in range(sample_len):
        b = len(rows)
        _choose_on_host(step_logits, suppress, rules, tok, temps[rows], rng, chosen, chosen_lp)
        log.add(rows, alive, chosen[:b].copy(), chosen_lp[:b].copy())
        rules.advance(chosen[:b])
        alive &= chosen[:b] != tok.eot
        if stops is not None:
            alive = stops.update(rows, alive)
        if step == sample_len - 1 or not alive.any():
            break
        # Finished rows keep running on end-of-text until half the batch is done; then the
        # batch shrinks. Fewer distinct batch sizes means fewer compilations of the step.
        if alive.sum() <= b // 2:
            keep = np.flatnonzero(alive)
            state.select(mx.array(keep))
            rules.select(keep)
            rows, alive = rows[keep], alive[keep]
            next_tokens = chosen[:b][keep]
            if probe:
                probe.open(len(keep), state.offset, sample_len - 1 - step, state.dtype)
        else:
            next_tokens = np.where(alive, chosen[:b], tok.eot).astype(np.int32)
        logits, written = step_fn(mx.array(next_tokens[:, None]), state,
                                  *((probe.buffers, probe.base) if probe else ()))
        if probe:
            probe.buffers = written
            probe.record(rows, alive)
        mx.eval(logits, *written)
        step_logits = np.asarray(logits)


LOOKAHEAD_STEPS = 2  # steps queued on the device ahead of the one the host reads
# Whether each queued step's `async_eval` also names the probe's record buffers. MLX holds what
# an `async_eval` names until its kernels finish, so the next step queued meanwhile cannot
# update those buffers in place and copies each whole (B, steps, n_state) buffer. Left out, the
# writes stay a lazy chain of in-place updates, run when the buffers are closed
# (`AttentionProbe._close`) or collected. Same decoding and speed either way (H200 A/B,
# docs/benchmarks.md "Session 25"); lazy is the default for the copies' memory it saves.
QUEUE_RECORD_EACH_STEP = False
# More steps queued before the host hands settled rows over (`settling`): their attention
# comes off the device on a side stream, and the host's work on them (segments, the copy)
# takes longer than two steps; the device decodes the extra ones meanwhile.
SETTLE_AHEAD_STEPS = 4


def _steps_on_device(step_fn, state, probe, rules, log, step_logits, suppress, tok, temps,
                     rng, sample_len, stops=None, joining=None, settling=None) -> None:
    """Decoding with token choice (greedy or sampled) and rule updates inside the compiled step.

    The host queues `LOOKAHEAD_STEPS` steps ahead (MLX evaluates them asynchronously) and reads
    back only each step's alive mask, to stop and to shrink the batch; chosen tokens stay on the
    device until the end. While the device runs a step, the host builds the next, so a step's
    cost is the device's time, not device + host + a round trip. `joining(ended ids, offset,
    steps left)` (see `decode_batch`) may add rows as others end. `settling(ids)` hears of the
    rows each shrink of the batch dropped, once the steps after it are queued (their
    attention is then in closed probe buffers, and the device has work while the host
    reads it)."""
    n_rows = step_logits.shape[0]
    first = np.empty(n_rows, np.int32)
    first_lp = np.empty(n_rows, np.float32)
    _choose_on_host(step_logits, suppress, rules, tok, temps, rng, first, first_lp)
    rows = np.arange(n_rows)
    log.add(rows, np.ones(n_rows, bool), first, first_lp)
    rules.advance(first)
    alive = first != tok.eot
    special = (tok.eot, tok.timestamp_begin, step_logits.shape[1], bool(rules.timestamps),
               bool(temps.max() > 0))
    temps_mx = mx.array(temps)
    suppress_mx = mx.array(suppress)
    carry = (mx.array(np.where(alive, first, tok.eot).astype(np.int32)), mx.array(alive),
             tuple(mx.array(a) for a in rules.arrays()), mx.array(state.offset, dtype=mx.int32),
             mx.random.key(int(rng.integers(2**31))))
    # Issued steps the host has not read: (rows, chosen, lp, alive). The probe's buffers are
    # not among them: a reference kept to a step's buffers would make the next step copy them.
    queue: deque = deque()
    if probe:
        probe.open(n_rows, state.offset, sample_len - 1, state.dtype)

    def read_oldest(alive_before: np.ndarray) -> np.ndarray:
        """Log the oldest queued step; -> its rows' alive mask (waits for that step only)."""
        batch_rows, chosen, lp, alive_out = queue.popleft()
        log.add(batch_rows, alive_before, chosen, lp)
        if probe:
            probe.record(batch_rows, alive_before)
        alive_after = np.array(alive_out)
        if stops is None:
            return alive_after
        # Rows stopped here may still be alive in the steps queued before they were stopped.
        after = stops.update(batch_rows, alive_after)
        if (after != alive_after).any():
            nonlocal carry
            carry = (carry[0], carry[1] & mx.array(~stops.stopped[rows]), *carry[2:])
        return after

    issued = 1
    dropped: list[np.ndarray] = []  # rows the batch let go, not yet told to `settling`
    while alive.any():
        ahead = LOOKAHEAD_STEPS + (SETTLE_AHEAD_STEPS if dropped and settling is not None else 0)
        while issued < sample_len and len(queue) <= ahead:
            chosen, lp, alive_out, next_tokens, rules_out, offset, key, written = step_fn.choose(
                *carry, temps_mx, state, suppress_mx, special,
                *((probe.buffers, probe.base) if probe else ()))
            if probe:
                probe.buffers = written
            carry = (next_tokens, alive_out, rules_out, offset, key)
            mx.async_eval(chosen, lp, next_tokens, alive_out, *rules_out, offset, key, state.keys,
                          state.values, *(written if QUEUE_RECORD_EACH_STEP else ()))
            queue.append((rows, chosen, lp, alive_out))
            issued += 1
        if dropped and settling is not None:
            settling(np.concatenate(dropped))
            dropped.clear()
        if not queue:
            break
        alive = read_oldest(alive)
        if joining is not None and not alive.all():
            joins = joining(rows[~alive], state.offset, sample_len - issued)
            if joins:
                # The new rows' prompts end at the next step's position: read the queued steps
                # (their rows may end too, and join as well), then keep the rows still alive.
                while queue:
                    alive = read_oldest(alive)
                joins += joining(rows[~alive], state.offset, sample_len - issued)
                keep_mx = mx.array(np.flatnonzero(alive))
                state.select(keep_mx)
                for part in joins:
                    state.append(part.state)
                carry = (mx.concatenate([carry[0][keep_mx]] + [mx.array(p.first) for p in joins]),
                         mx.concatenate([carry[1][keep_mx]] + [mx.array(p.alive) for p in joins]),
                         tuple(mx.concatenate([a[keep_mx]] + [mx.array(p.rules[i]) for p in joins])
                               for i, a in enumerate(carry[2])),
                         carry[3], carry[4])
                temps_mx = mx.concatenate([temps_mx[keep_mx]]
                                          + [mx.zeros(len(p.ids), mx.float32) for p in joins])
                dropped.append(rows[~alive])
                rows = np.concatenate([rows[alive]] + [p.ids for p in joins])
                alive = np.concatenate([alive[alive]] + [p.alive for p in joins])
                if probe:
                    probe.open(len(rows), state.offset, sample_len - issued, state.dtype)
                continue
        if alive.any() and alive.sum() <= len(rows) // 2:
            # Shrink: read the queued steps first (they ran on the full batch), then keep the
            # rows still alive after the last of them.
            while queue:
                alive = read_oldest(alive)
            if not alive.any():
                break
            keep = np.flatnonzero(alive)
            keep_mx = mx.array(keep)
            state.select(keep_mx)
            carry = (carry[0][keep_mx], carry[1][keep_mx], tuple(a[keep_mx] for a in carry[2]),
                     carry[3], carry[4])
            temps_mx = temps_mx[keep_mx]
            dropped.append(rows[~alive])
            rows, alive = rows[keep], alive[keep]
            if probe:
                probe.open(len(keep), state.offset, sample_len - issued, state.dtype)


def best_attempt(attempts: list[WindowResult], options: DecodingOptions) -> WindowResult:
    """The attempt to keep when all failed: the highest mean log-probability among those that
    are not repetitive (`WindowResult.is_repetitive`), or among all when each is."""
    plain = [a for a in attempts if not a.is_repetitive(options)]
    return max(plain or attempts, key=lambda a: a.avg_logprob)


def _join_first_attempts(join, window: np.ndarray, rung: np.ndarray, row: int,
                         result: WindowResult, offset: int) -> JoinRow | None:
    """`decode_batch`'s `join` for a pass of windows x rungs: only a window's lowest rung asks."""
    return join(int(window[row]), result, offset) if rung[row] == 0 else None


def decode_with_fallback(wm: WhisperModel, features: mx.array, options: DecodingOptions, *,
                         capture: bool = False,
                         prompt: Sequence[int] | Sequence[Sequence[int]] | None = None,
                         audio_frames: np.ndarray | None = None,
                         on_final: Callable[[list[int], list[WindowResult]], None] | None = None,
                         spare_rows: int = 0,
                         join: Callable[[int, WindowResult, int], JoinRow | None] | None = None,
                         ) -> list[WindowResult]:
    """Decode a batch of windows; re-decode failing windows at rising temperatures.
    `audio_frames`: per window, its number of 20 ms encoder frames holding audio (see
    `decode_batch`). `on_final(rows, results)`, when given, hears about windows as soon as
    their result is final (after each pass, or during it where `decode_batch` can `settle`
    them), so a caller can use them while the others are decoded. `spare_rows`: rows the caller's batch leaves free, in which the next
    temperatures are decoded ahead (`DecodingOptions.fallback_ahead`). `prompt`: one for all
    windows or one per window (see `decode_batch`). `join(window, result, offset)`: as
    `decode_batch`'s, for the windows' first attempts at temperature 0."""
    n_rows = features.shape[0]
    prompts = row_prompts(prompt, n_rows)
    languages = None
    if wm.is_multilingual and options.language is None:
        languages = [code for code, _ in detect_languages(wm, features)]
    elif options.language:
        languages = [options.language] * n_rows
    rng = np.random.default_rng(options.seed)
    temperatures = options.temperatures
    attempts: list[list[WindowResult]] = [[] for _ in range(n_rows)]
    todo = np.arange(n_rows)
    level = 0  # every window still to do has failed the temperatures before this one
    told: set[int] = set()  # windows `on_final` heard of while their pass went on

    def settle(window: np.ndarray, rows: list[int], results: list[WindowResult]) -> None:
        windows = [int(window[r]) for r in rows]
        told.update(windows)
        on_final(windows, results)

    while len(todo) and level < len(temperatures):
        ahead = options.attempts_ahead(len(todo), n_rows + max(0, spare_rows),
                                       len(temperatures) - level)
        window = np.tile(todo, ahead + 1)
        rung = np.repeat(np.arange(ahead + 1), len(todo))
        rows = features if len(window) == n_rows and ahead == 0 else features[mx.array(window)]
        decoded = decode_batch(
            wm, rows, options, temperature=[temperatures[level + r] for r in rung],
            capture=capture, languages=[languages[i] for i in window] if languages else None,
            prompt=[prompts[i] for i in window], rng=rng,
            audio_frames=None if audio_frames is None else np.asarray(audio_frames)[window],
            rungs=list(zip(window.tolist(), rung.tolist())) if ahead else None, stop_failed=True,
            join=None if join is None or level else partial(_join_first_attempts, join, window, rung),
            settle=partial(settle, window) if on_final is not None and capture else None)
        failed, passed = [], []
        for i, row in enumerate(todo):
            for r in range(ahead + 1):  # in temperature order; higher rungs of a pass stopped
                result = decoded[r * len(todo) + i]
                attempts[row].append(result)
                if not result.needs_fallback(options):
                    passed.append(int(row))
                    break
            else:
                failed.append(int(row))
        passed = [row for row in passed if row not in told]
        if on_final is not None and passed:
            on_final(passed, [attempts[row][-1] for row in passed])
        todo = np.array(failed, dtype=np.int64)
        level += ahead + 1
    results = [tried[-1] for tried in attempts]
    if options.on_all_failed == "best":
        for row in todo:
            results[row] = best_attempt(attempts[row], options)
    if on_final is not None and len(todo):
        on_final(todo.tolist(), [results[row] for row in todo])
    return results  # type: ignore[return-value]
