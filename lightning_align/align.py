"""Lazy word alignment: words for the segments asked for, from captured attention when cached.

For each selected segment the alignment-head attention comes from the attention cache (captured
while decoding: no model work at all) or, on a miss, from one forced decoder pass that replays
the tokens the decoder had seen. Then: softmax weights -> standardize each frame over tokens ->
median filter over frames -> mean over heads (`kernels.alignment_matrix`, as openai-whisper)
-> DTW -> token start times -> words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .audio import SAMPLE_RATE, AudioInput, load_audio
from .backend import mx
from .calibration import CALIBRATION_FILE, Calibration, calibration  # noqa: F401  (public)
from .capture import CAPTURE_MARGIN_S, CapturedAttention, ForcedProbe, scores_and_normalizers
from .errors import AlignmentError
from .interop import as_segment_dicts
from .kernels import alignment_matrix, dtw_batch, token_contrast
from .mel import TOKENS_PER_SECOND, log_mel_window
from .model import DecoderState
from .models import WhisperModel, load_model
from .transcript import Segment, SegmentSource
from .onepass import Plan, align_plans
from .refine import (FINE_HOP_S, RefineOptions, onset_costs, snap_to_dips, snap_words,
                     speech_spans)
from .words import (WordTiming, apply_heuristics, shift_words, split_words, to_dicts,
                    word_timings)

METHODS = ("onepass", "reference")
MAX_WINDOW_S = 30.0
MAX_TOKEN_ID = 51866  # the largest Whisper vocabulary (large-v3)
PLAIN_MARGIN_S = 1.0  # audio around a plain {"start", "end", "text"} segment for its forced pass

T = TypeVar("T")
Which = Any  # None | "all" | int | slice | Iterable[int] | Callable[[dict], bool]


@dataclass(frozen=True)
class AlignOptions:
    """Corrections the one-pass method applies on top of openai-whisper's DTW, each switchable
    (docs/accuracy.md measures each on its own). `method="reference"` ignores them all.

    head_weights: use the heads and weights calibrated per model on generated speech
        (`data/timing_calibration.json`; see `calibration`) instead of averaging the curated
        alignment heads.
    lag: remove the systematic lag of starts and of ends (calibrated seconds per model).
    anchors: the decoded segment timestamps bound the DTW: frames before the segment's start
        timestamp (and after its end) less `anchor_slack_s` are not aligned to (this keeps a
        segment's first word out of the previous segment's speech, which the token contrast
        would otherwise reach for). Segments of a transcript only: a plain {"start", "end",
        "text"} segment's times are the caller's, which may not cover its speech, so it is not
        bound by them.
    refine: move boundaries in or next to a pause to the pause's edges, found from the
        signal's energy (`refine.snap_words`); fixes words stretched over silence.
    calibration: use this `Calibration` instead of the shipped one (its heads must be among
        the model's `captured_heads`).
    dips: move each boundary between two words inside continuous speech (not at a pause that
        `refine` snapped to) to the quietest point of the signal within
        `refine_options.dip_reach_s` (`refine.snap_to_dips`).
    onset_cost: what the DTW pays to start a word (other than the segment's first) at a frame,
        in units of the matrix's standardized attention: `onset_cost` x the signal's level
        there, 0 at the segment's floor and 1 at its peak (`refine.onset_costs`); word starts
        then prefer quiet frames where the attention leaves them a choice. 0 turns it off.
    token_contrast: before the DTW, each text token's row of the matrix gains `token_contrast`
        x its excess over the text tokens next to it (`kernels.token_contrast`), so a token
        is placed where it is attended more than its neighbours, not merely where it is
        attended (a short word then keeps less of the next one). 0 turns it off.
    attention_power: the matrix is built from the attention weights raised to this power
        (> 0; 1 is openai-whisper's matrix). Below 1 it flattens each row's peak, so the path
        follows where a token's attention lies as a whole rather than its sharpest frames,
        and the onset cost decides more where the attention is broad.
    Defaults are the switches that won on the calibration sets and then held on the evaluation
    and real-speech sets (docs/accuracy.md).
    """

    head_weights: bool = True
    lag: bool = False
    anchors: bool = True
    refine: bool = True
    anchor_slack_s: float = 0.05
    refine_options: RefineOptions = field(default_factory=RefineOptions)
    calibration: "Calibration | None" = None
    dips: bool = True
    onset_cost: float = 1.0
    token_contrast: float = 0.5
    attention_power: float = 1.0

    def __post_init__(self):
        for name, zero_ok, hint in (("onset_cost", True, "0 turns it off"),
                                    ("token_contrast", True, "0 turns it off"),
                                    ("attention_power", False, "1 is openai-whisper's matrix")):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and value < float("inf") and (value > 0 or zero_ok and value == 0)):
                raise AlignmentError(f"{name}={value!r}: give a finite number "
                                     f"{'>=' if zero_ok else '>'} 0 ({hint}).")

    @classmethod
    def plain(cls) -> "AlignOptions":
        """openai-whisper's DTW on the captured attention, with no correction."""
        return cls(head_weights=False, lag=False, anchors=False, refine=False, dips=False,
                   onset_cost=0.0, token_contrast=0.0, attention_power=1.0)


@dataclass(frozen=True)
class Alignment:
    """What the alignment of one segment saw, for plots and research (times in seconds).

    `matrix` (rows, frames) is the filtered, head-averaged attention the DTW ran on, after the
    token contrast (higher is more attention), `row_tokens` the token each row predicts,
    `path` the DTW path as (row, frame) index arrays, `frame0_s` the time of frame 0 (frames
    are 20 ms), `words` the result.
    """

    segment: int
    method: str
    matrix: np.ndarray
    row_tokens: tuple[int, ...]
    path: tuple[np.ndarray, np.ndarray]
    frame0_s: float
    words: list[dict]
    weights: np.ndarray | None = None  # (heads, rows, frames) softmax weights before filtering
    heads: tuple[tuple[int, int], ...] = ()  # the (layer, head) of each row of `weights`


def align(segments: Sequence[dict], which: Which = None, *, audio: AudioInput | None = None,
          model: WhisperModel | str | None = None, method: str = "onepass",
          medfilt_width: int = 7, heuristics: bool = True, force: bool = False,
          return_attention: bool = False,
          options: AlignOptions | None = None) -> Sequence[dict] | list[Alignment]:
    """Add `words` ([{"word", "start", "end", "probability"}], seconds) to the selected segments.

    `which` selects segments: None or "all", an index, a slice, indices, or a predicate on the
    segment dict. Segments that already have words are skipped unless `force`. Segments from
    `transcribe` use the attention captured while decoding; others (evicted from the cache,
    from another engine, or a human transcript with `start`, `end`, `text`) take one forced
    decoder pass over their text, which needs `audio` (and `model` if not the default).
    `method="reference"` is openai-whisper's algorithm (a forced pass without timestamps).
    `options` switches the one-pass method's corrections (default `AlignOptions()`; pass
    `AlignOptions.plain()` for openai-whisper's DTW on the captured attention alone).
    Returns `segments`, or with `return_attention` one `Alignment` per aligned segment.
    """
    if method not in METHODS:
        raise AlignmentError(f"method {method!r}: choose one of {', '.join(METHODS)}.")
    if isinstance(medfilt_width, bool) or not isinstance(medfilt_width, int) or \
            medfilt_width < 1 or medfilt_width % 2 == 0:
        raise AlignmentError(f"medfilt_width={medfilt_width!r}: use an odd number of frames >= 1 "
                             "(openai-whisper uses 7).")
    segments = as_segment_dicts(segments)
    indices = select(segments, which)
    todo = [i for i in indices if force or return_attention or "words" not in segments[i]]
    if not todo:
        return [] if return_attention else segments
    if options is None or method == "reference":
        options = AlignOptions() if method == "onepass" else AlignOptions.plain()
    jobs = [_Job(i, segments[i], _segment_text_tokens(segments[i], i)) for i in todo]
    _gather_attention(jobs, segments, method, audio, model, medfilt_width)
    if method == "onepass" and not return_attention and _packable(jobs, options):
        _solve_packed(jobs, medfilt_width, heuristics, options, audio)
        return segments
    results = _solve(jobs, method, medfilt_width, heuristics, segments, options, audio)
    return results if return_attention else segments


def select(segments: Sequence[dict], which: Which) -> list[int]:
    """Resolve `which` into sorted, unique segment indices (see `align`)."""
    n = len(segments)
    if which is None or (isinstance(which, str) and which == "all"):
        return list(range(n))
    if isinstance(which, bool):
        raise AlignmentError("which=True/False is ambiguous: pass None for all segments, an index, "
                             "a slice, indices, or a predicate.")
    if isinstance(which, (int, np.integer)):
        return [_check_index(int(which), n)]
    if isinstance(which, slice):
        return list(range(n))[which]
    if callable(which):
        return [i for i, seg in enumerate(segments) if which(seg)]
    if isinstance(which, (str, bytes, dict)):
        raise AlignmentError(f"which={which!r}: expected None, 'all', an index, a slice, "
                             "indices, or a predicate on the segment dict.")
    try:
        items = list(which)
    except TypeError:
        raise AlignmentError(f"which of type {type(which).__name__}: expected None, 'all', an "
                             "index, a slice, indices, or a predicate.") from None
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items):
        raise AlignmentError(f"which={items!r}: every index must be an integer.")
    return sorted({_check_index(int(i), n) for i in items})


def _check_index(i: int, n: int) -> int:
    if not -n <= i < n:
        raise AlignmentError(f"segment index {i} is out of range: there are {n} segments.")
    return i % n


@dataclass(eq=False)
class _Group:
    """One DTW problem: a segment (one-pass) or the segments of one window (reference)."""

    frame0_s: float = 0.0
    matrix: np.ndarray | None = None
    weights: np.ndarray | None = None
    row_tokens: tuple[int, ...] = ()
    path: tuple[np.ndarray, np.ndarray] | None = None
    heads: tuple[tuple[int, int], ...] = ()


@dataclass(eq=False)
class _Job:
    index: int
    segment: dict
    text_tokens: list[int] | None
    entry: CapturedAttention | None = None
    group: _Group | None = None
    rows_for_text: np.ndarray | None = None  # group row predicting each text token, then the end
    token_logprobs: np.ndarray | None = None  # of the text tokens
    model: WhisperModel | None = None
    window0_s: float = 0.0  # start of the window a forced pass ran on (s)


def _segment_text_tokens(seg: dict, index: int) -> list[int] | None:
    if "tokens" in seg and seg["tokens"] is not None:
        raw = seg["tokens"]
        if isinstance(raw, (str, bytes)) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in raw):
            raise AlignmentError(f"segment {index}: 'tokens' must be a list of Whisper token ids "
                                 f"(integers), got {raw!r:.60}; drop the key to align the text.")
        tokens = [int(t) for t in raw]
        if any(t < 0 or t >= MAX_TOKEN_ID for t in tokens):
            raise AlignmentError(f"segment {index}: token ids outside Whisper's vocabulary "
                                 f"(0..{MAX_TOKEN_ID - 1}); were these tokens made by another "
                                 "tokenizer? Drop 'tokens' to align the text instead.")
        if tokens:
            return tokens
    text = seg.get("text")
    if not isinstance(text, str):
        raise AlignmentError(f"segment {index} has neither 'tokens' nor 'text'; nothing to align.")
    if not text.strip():
        raise AlignmentError(f"segment {index} has empty text; there are no words to align.")
    return None


def _source(seg: dict) -> SegmentSource | None:
    return seg.source if isinstance(seg, Segment) else None


def _gather_attention(jobs: list[_Job], segments, method, audio, model, width: int) -> None:
    """Fill each job's `entry`: from the cache when possible, else by forced passes."""
    misses = []
    for job in jobs:
        src = _source(job.segment)
        job.model = src.context.model if src is not None else (
            model if isinstance(model, WhisperModel) else load_model(model))
        if method == "onepass" and src is not None and src.context.cache is not None:
            job.entry = src.context.cache.get(src.key)
        if job.entry is None:
            misses.append(job)
    if not misses:
        return
    by_window: dict[tuple, list[_Job]] = {}
    for job in misses:
        wm, samples, window = _forced_inputs(job, segments, audio, model)
        by_window.setdefault((id(wm), id(samples), window), []).append((job, wm, samples))
    for (_, _, (w0, w1)), items in by_window.items():
        wm, samples = items[0][1], items[0][2]
        start, end = int(round(w0 * SAMPLE_RATE)), int(round(w1 * SAMPLE_RATE))
        mel = log_mel_window(samples[start:end], wm.dims.n_mels)
        with wm.lock:
            features = wm.model.embed_audio(mx.array(mel[None]))
            if method == "reference":
                _reference_pass([job for job, _, _ in items], wm, features, end - start, width, w0)
                continue
            for job, _, _ in items:
                job.window0_s = w0
                job.entry = _replay_pass(job, wm, features, w0, w1, end - start)
                src = _source(job.segment)
                if src is not None and src.context.cache is not None:
                    src.context.cache.put(src.key, job.entry)


def _forced_inputs(job: _Job, segments, audio, model):
    seg, src = job.segment, _source(job.segment)
    wm = job.model
    samples = None
    if audio is not None:
        samples = _load_cached(audio)
    elif src is not None:
        samples = src.context.samples()
    if samples is None:
        raise AlignmentError(
            f"segment {job.index} has no captured attention (not from this transcript, evicted "
            "from the cache, or a plain dict), so it needs a forced pass over the audio: pass "
            "audio=<path or samples> to align().")
    duration = len(samples) / SAMPLE_RATE
    if src is not None:
        window = (src.window_start_s, src.window_end_s)
    else:
        try:
            start, end = float(seg["start"]), float(seg["end"])
        except (KeyError, TypeError, ValueError):
            raise AlignmentError(f"segment {job.index} needs numeric 'start' and 'end' (seconds) "
                                 "for a forced pass.") from None
        if not 0 <= start <= end:
            raise AlignmentError(f"segment {job.index}: start {start} / end {end} s are not a "
                                 "valid time range.")
        if start > duration:
            raise AlignmentError(f"segment {job.index} starts at {start:.2f} s, after the end of "
                                 f"the audio ({duration:.2f} s): is it from another recording?")
        if end > duration + PLAIN_MARGIN_S:
            raise AlignmentError(f"segment {job.index} ends at {end:.2f} s, past the end of the "
                                 f"audio ({duration:.2f} s): is it from another recording, or are "
                                 "its times in another unit than seconds?")
        window = (max(0.0, start - PLAIN_MARGIN_S), min(duration, end + PLAIN_MARGIN_S))
        if window[1] - window[0] > MAX_WINDOW_S:
            raise AlignmentError(f"segment {job.index} spans {end - start:.1f} s; Whisper aligns "
                                 f"at most {MAX_WINDOW_S:.0f} s at a time. Split it first.")
        if job.text_tokens is None:
            text = seg["text"] if seg["text"].startswith(" ") else " " + seg["text"]
            job.text_tokens = wm.tokenizer().encode(text)
    return wm, samples, window


_audio_memo: dict[int, tuple[Any, np.ndarray]] = {}


def _load_cached(audio: AudioInput) -> np.ndarray:
    if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1:
        return audio
    key = id(audio)
    held = _audio_memo.get(key)
    if held is not None and held[0] is audio:
        return held[1]
    samples = load_audio(audio)
    _audio_memo.clear()
    _audio_memo[key] = (audio, samples)
    return samples


def _forced(wm: WhisperModel, features, tokens: list[int]):
    """One forced pass: (scores (heads, positions, 1500), log-probabilities (positions, vocab))."""
    probe = ForcedProbe(wm.captured_heads)
    state = DecoderState(wm.model.decoder, features, probe.layers)
    logits = wm.model.decoder.step(mx.array([tokens]), state, probe, positions=range(len(tokens)))
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    scores = probe.result()
    mx.eval(scores, logprobs)
    return np.asarray(scores[0]), np.asarray(logprobs[0])


def _replay_pass(job: _Job, wm, features, w0: float, w1: float, n_samples: int) -> CapturedAttention:
    """Recompute what capture would have stored, by replaying the decoder's own tokens."""
    tok = wm.tokenizer()
    src = _source(job.segment)
    audio_frames = int(np.ceil(n_samples / SAMPLE_RATE * TOKENS_PER_SECOND))
    seg_start = float(job.segment.get("start", w0)) - w0
    seg_end = float(job.segment.get("end", w1)) - w0
    if src is not None and src.prefix and job.segment.get("tokens"):
        prefix = list(src.prefix)
        seg_tokens = [int(t) for t in job.segment["tokens"]]
    else:  # plain text: lay it out as a decoded segment, between its two timestamps
        prefix = list(tok.sot_sequence)
        stamp = lambda s: tok.timestamp_begin + int(round(min(max(s, 0.0), 30.0) / 0.02))  # noqa: E731
        seg_tokens = [stamp(seg_start)] + [t for t in job.text_tokens if t < tok.eot] + [stamp(seg_end)]
    tokens = prefix + seg_tokens
    scores, logprobs = _forced(wm, features, tokens)
    rows = np.arange(len(prefix) - 1, len(tokens))  # queries predicting seg tokens, then the next
    predicted = seg_tokens + [-1]
    f0 = max(0, int((seg_start - CAPTURE_MARGIN_S) * TOKENS_PER_SECOND))
    f1 = min(audio_frames, int(np.ceil((seg_end + CAPTURE_MARGIN_S) * TOKENS_PER_SECOND)))
    f1 = max(f1, f0 + 1)
    # exactly what capture stores: float16 scores minus their max, and their normalizers
    picked16, log_norm = scores_and_normalizers(
        mx.array(scores[:, rows, :].transpose(1, 0, 2)), mx.full((len(rows),), audio_frames, mx.int32))
    picked16, log_norm = np.asarray(picked16), np.asarray(log_norm)
    lps = np.array([logprobs[r, t] if t >= 0 else 0.0 for r, t in zip(rows, predicted)], np.float32)
    return CapturedAttention(
        scores=np.ascontiguousarray(picked16[:, :, f0:f1]),
        log_norm=log_norm,
        frame_offset=f0, tokens=tuple(predicted),
        is_timestamp=np.array([t >= tok.timestamp_begin for t in predicted], bool),
        token_logprobs=lps)


def _reference_pass(jobs: list[_Job], wm, features, n_samples: int, width: int, w0: float) -> None:
    """openai-whisper's `find_alignment` over the text of a window's segments together:
    [sot, no_timestamps, text..., eot], attention over all frames of the window's audio."""
    tok = wm.tokenizer()
    texts = [[t for t in job.text_tokens if t < tok.eot] for job in jobs]
    text = [t for part in texts for t in part]
    sot = list(tok.sot_sequence)
    tokens = sot + [tok.no_timestamps] + text + [tok.eot]
    scores, logprobs = _forced(wm, features, tokens)
    curated = tuple(map(tuple, wm.alignment_heads.pairs))
    n_frames = (n_samples // 160) // 2  # openai: num_frames // 2 of the mel window
    w = scores[_head_rows(wm, curated), :, :n_frames]
    w = np.exp(w - w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    group = _Group(w0, alignment_matrix(w.astype(np.float32), width)[len(sot) : -1], w,
                   tuple([tok.no_timestamps] + text), heads=curated)
    text_lp = logprobs[len(sot) : len(sot) + len(text), : tok.eot]
    text_lp = text_lp - np.log(np.exp(text_lp).sum(-1, keepdims=True))
    offset = 0
    for job, part in zip(jobs, texts):
        job.group = group
        job.rows_for_text = offset + np.arange(len(part) + 1)
        job.token_logprobs = text_lp[offset + np.arange(len(part)), part]
        offset += len(part)


def _onepass_group(job: _Job, width: int, eot: int, options: AlignOptions) -> None:
    entry = job.entry
    wm = _model_of(job)
    src = _source(job.segment)
    frame0 = (src.window_start_s if src else job.window0_s) + entry.frame_offset / TOKENS_PER_SECOND
    cal = _calibration_of(job, options) if options.head_weights else None
    heads = cal.heads if cal is not None else tuple(map(tuple, wm.alignment_heads.pairs))
    # (heads, rows, frames) softmax weights of the heads this alignment uses
    rows = _head_rows(wm, heads)
    weights = entry.weights(rows)
    power = options.attention_power
    # standardization and median are per head; the calibrated weights scale each head's part
    matrix = alignment_matrix(weights if power == 1 else entry.weights(rows, power), width,
                              None if cal is None else cal.head_weights)
    if options.anchors and src is not None:  # a plain segment's times are the caller's
        matrix = _anchored(matrix, job, frame0, options.anchor_slack_s)
    text_rows = [r for r, t in enumerate(entry.tokens) if 0 <= t < eot]
    if options.token_contrast > 0:
        matrix = token_contrast(matrix, np.array(text_rows, np.int64), options.token_contrast)
    job.group = _Group(frame0, matrix, weights, entry.tokens, heads=heads)
    after = text_rows[-1] + 1 if text_rows else 0
    job.rows_for_text = np.array(text_rows + [min(after, len(entry.tokens) - 1)])
    job.token_logprobs = entry.token_logprobs[text_rows]


def _calibration_of(job: _Job, options: AlignOptions) -> Calibration | None:
    if options.calibration is not None:
        return options.calibration
    return _model_of(job).timing_calibration


def _head_rows(wm: WhisperModel, heads) -> list[int]:
    """Positions of `heads` among the heads the decoder captures (`wm.captured_heads`)."""
    captured = wm.captured_heads
    missing = [h for h in heads if tuple(h) not in captured]
    if missing:
        raise AlignmentError(f"heads {missing} are not captured by {wm.name} (it captures "
                             f"{list(captured)}); a custom calibration may only weight those.")
    return [captured.index(tuple(h)) for h in heads]


def _anchored(matrix: np.ndarray, job: _Job, frame0: float, slack_s: float) -> np.ndarray:
    """Make frames outside the decoded segment span (plus slack) unattractive to the DTW."""
    start, end = _decoded_bounds(job.segment, ())
    t = frame0 + np.arange(matrix.shape[1]) / TOKENS_PER_SECOND
    outside = (t < start - slack_s) | (t > end + slack_s)
    if not outside.any() or outside.all():
        return matrix
    out = matrix.copy()
    out[:, outside] = matrix.min() - 1.0
    return out


def _solve(jobs: list[_Job], method: str, width: int, heuristics: bool, segments,
           options: AlignOptions, audio) -> list[Alignment]:
    for job in jobs:
        if job.group is None:
            _onepass_group(job, width, _model_of(job).tokenizer().eot, options)
    groups = list({id(job.group): job.group for job in jobs}.values())
    # Each job's samples, fetched once per call and held for its length: transcripts of files
    # remember their samples only by weak reference, so the onset costs and the refinement
    # below read the same decoded audio. Each job's text is split into words once too: the
    # onset costs' rows and the words both need it.
    samples_of = _once_per_job(lambda job: _samples_for(job, audio))
    split_of = _once_per_job(_split_text)
    entries = None
    if method == "onepass" and options.onset_cost > 0:
        job_of = {id(job.group): job for job in jobs}  # one group per job in one pass
        entries = []
        for g in groups:
            job = job_of[id(g)]
            _, (_, word_tokens) = split_of(job)
            entries.append(_word_starts(job, options, samples_of(job), word_tokens))
    paths = dtw_batch([-g.matrix.astype(np.float64) for g in groups], entries)
    entered = {}
    for group, (rows, cols) in zip(groups, paths):
        group.path = (rows, cols)
        # the frame at which the path first enters each row, in seconds
        first = np.zeros(group.matrix.shape[0], np.int64)
        first[rows[::-1]] = cols[::-1]
        entered[id(group)] = group.frame0_s + first / TOKENS_PER_SECOND
    out = []
    for job in jobs:
        enter = entered[id(job.group)]
        text, split = split_of(job)
        timings = word_timings(_model_of(job).tokenizer(), text, np.exp(job.token_logprobs),
                               enter[job.rows_for_text[:-1]], enter[job.rows_for_text[-1]], split)
        seg = job.segment
        start, end = _decoded_bounds(seg, timings)
        if options.lag and timings:
            cal = _calibration_of(job, options)
            if cal is not None:
                shift_words(timings, -cal.start_lag_s, -cal.end_lag_s)
        if heuristics and timings:
            previous = segments[job.index - 1] if job.index > 0 else None
            src = _source(seg)
            if src is not None:  # window-local, so batches can be aligned apart and in any order
                last_speech = src.prev_end_s
            else:
                last_speech = _decoded_bounds(previous, timings)[1] if isinstance(previous, dict) else 0.0
            timings, start, end = apply_heuristics(timings, start, end, last_speech)
        if (options.refine or options.dips) and timings:
            samples = samples_of(job)
            if samples is not None:
                start, end = _refine(timings, samples, options, start, end)
        words = to_dicts(timings)
        seg["words"] = words
        if heuristics and words:
            seg["start"], seg["end"] = round(start, 3), round(end, 3)
        g = job.group
        out.append(Alignment(job.index, method, g.matrix, g.row_tokens, g.path, g.frame0_s, words,
                             g.weights, g.heads))
    return out


def _packable(jobs: list[_Job], options: AlignOptions) -> bool:
    """Can `onepass.align_plans` align these jobs: segments of transcripts (not plain dicts),
    with the dip search on the recording's envelope (its default frames)?"""
    ropts = options.refine_options
    default_dips = ropts.dip_hop_s == FINE_HOP_S and ropts.dip_window_s == 2 * FINE_HOP_S
    return (default_dips or not options.dips) and all(
        _source(job.segment) is not None and job.entry is not None for job in jobs)


def _solve_packed(jobs: list[_Job], width: int, heuristics: bool, options: AlignOptions,
                  audio) -> None:
    """`_solve` for the one-pass method on segments of transcripts, in one kernel call per
    recording (`onepass.align_plans`); the same words."""
    plans = []
    for job in jobs:
        src, entry, wm = _source(job.segment), job.entry, _model_of(job)
        cal = _calibration_of(job, options)
        weighted = cal if options.head_weights else None
        heads = weighted.heads if weighted is not None else tuple(map(tuple, wm.alignment_heads.pairs))
        start, end = src.start_s, src.end_s
        slack = options.anchor_slack_s
        plans.append(Plan(
            job.index, entry, wm.tokenizer(),
            src.window_start_s + entry.frame_offset / TOKENS_PER_SECOND,
            tuple(_head_rows(wm, heads)), weighted.head_weights if weighted is not None else None,
            (start, end), src.prev_end_s,
            (-cal.start_lag_s, -cal.end_lag_s) if options.lag and cal is not None else None,
            (start - slack, end + slack) if options.anchors else None,
            _samples_for(job, audio)))
    results = align_plans(plans, width, heuristics, options.onset_cost, options.refine,
                          options.dips, options.refine_options, options.token_contrast,
                          options.attention_power)
    for job, (words, start, end) in zip(jobs, results):
        job.segment["words"] = words
        if heuristics and words:
            job.segment["start"], job.segment["end"] = round(start, 3), round(end, 3)


def _once_per_job(fn: Callable[[_Job], T]) -> Callable[[_Job], T]:
    """`fn`, computed once per job (a `_Job` hashes by identity) for one `_solve` call."""
    memo: dict[_Job, T] = {}

    def get(job: _Job) -> T:
        if job not in memo:
            memo[job] = fn(job)
        return memo[job]
    return get


def _split_text(job: _Job) -> tuple[list[int], tuple[list[str], list[list[int]]]]:
    """(text tokens, (words, their tokens)) of a job's segment."""
    tok = _model_of(job).tokenizer()
    text = _text_of(job, tok.eot)
    return text, split_words(tok, text) if text else ([], [])


def _word_starts(job: _Job, options: AlignOptions, samples: np.ndarray | None,
                 word_tokens: list[list[int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The DTW entry for a one-pass job (`kernels.dtw`): the matrix rows where a word other
    than the first begins (`word_tokens`: the job's text tokens split into words), and what
    starting one at each frame of `samples` costs (`refine.onset_costs`); None without samples
    or text."""
    if samples is None or not word_tokens:
        return None
    firsts = np.cumsum([len(t) for t in word_tokens[:-1]], dtype=np.int64)
    rows = np.zeros(job.group.matrix.shape[0], bool)
    rows[job.rows_for_text[firsts]] = True
    return rows, onset_costs(samples, job.group.frame0_s, job.group.matrix.shape[1],
                             options.onset_cost, options.refine_options.floor_percentile)


def _samples_for(job: _Job, audio) -> np.ndarray | None:
    if audio is not None:
        return _load_cached(audio)
    src = _source(job.segment)
    return src.context.samples() if src is not None else None


def _refine(timings: list[WordTiming], samples: np.ndarray, options: AlignOptions,
            start: float, end: float) -> tuple[float, float]:
    """Snap the words' boundaries to pauses in the signal (`options.refine`), then the others
    to energy dips (`options.dips`), in place; returns the segment's (start, end) moved with
    its first and last word."""
    ropts = options.refine_options
    starts0 = np.array([w.start for w in timings])
    ends0 = np.array([w.end for w in timings])
    starts, ends = starts0, ends0
    if options.refine:
        t0 = max(0.0, timings[0].start - ropts.context_s)
        t1 = min(len(samples) / SAMPLE_RATE, timings[-1].end + ropts.context_s)
        starts, ends = snap_words(starts0, ends0, speech_spans(samples, t0, t1, ropts), ropts)
    if options.dips:
        # boundaries a pause decided stay; so do those where the words do not touch
        fixed = (np.abs(ends[:-1] - ends0[:-1]) > 1e-9) | (np.abs(starts[1:] - starts0[1:]) > 1e-9) \
            | (np.abs(ends[:-1] - starts[1:]) > 1e-9)
        starts, ends = snap_to_dips(starts, ends, fixed, samples, ropts)
    duration = len(samples) / SAMPLE_RATE
    for w, a, b in zip(timings, starts, ends):
        w.end = float(min(b, duration))
        w.start = float(min(a, w.end))
    return timings[0].start, timings[-1].end


def _decoded_bounds(seg: dict, timings) -> tuple[float, float]:
    """A segment's times before any alignment refined them, so that aligning segments in any
    order, or concurrently, gives the same words."""
    src = _source(seg)
    if src is not None:
        return src.start_s, src.end_s
    return (float(seg.get("start", timings[0].start if timings else 0.0)),
            float(seg.get("end", timings[-1].end if timings else 0.0)))


def _model_of(job: _Job) -> WhisperModel:
    return job.model


def _text_of(job: _Job, eot: int) -> list[int]:
    if job.entry is not None and job.entry.tokens:
        return [t for t in job.entry.tokens if 0 <= t < eot]
    return [t for t in job.text_tokens if t < eot]
