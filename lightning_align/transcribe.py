"""Transcribe audio: the batched ("Lightning") path, and openai-whisper's sequential seek path."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .audio import SAMPLE_RATE, AudioInput, load_audio
from .backend import gpu_available, mx
from .cache import AttentionCache
from .capture import CAPTURE_MARGIN_S, CapturedAttention, host_views
from .decoding import DecodingOptions, JoinRow, WindowResult, decode_with_fallback, prompt_tokens
from .errors import DecodingError
from .mel import CHUNK_SAMPLES, TOKENS_PER_SECOND, log_mel_batch, log_mel_window
from .models import WhisperModel, load_model
from .refine import ENVELOPES_KEPT, envelope_of
from .transcript import Segment, SegmentSource, Transcript, TranscriptContext
from .windows import Window, frame_power, is_silent, plan_windows

log = logging.getLogger("lightning_align")

SECONDS_PER_TIMESTAMP = 0.02
TAIL_S = 2.0  # an untranscribed window tail this long (s) with speech in it is decoded again
MAX_TAIL_ROUNDS = 2
SPEECH_RMS = 0.01  # 20 ms frames above -40 dBFS count as possible speech
MIN_SPEECH_FRAMES = 10
# A segment over this much speech (s) with fewer text tokens per second of it than this has
# skipped speech: its closing timestamp jumped past words it never wrote (speech carries
# 2-5 tokens per second; the one jump found in five 7.5 min recordings had 0.5).
SKIP_MIN_SPEECH_S = 4.0
SKIP_TOKENS_PER_S = 1.0
# Tokens of previous text that prompt a window decoded again (openai-whisper: up to 223). On
# five generated recordings of 7.5 min (CPU), 32 / 64 / 128 / 223 gave 24.8 / 24.9 / 24.8 / 25.0 %
# WER (25.7 % without): a short prompt serves, and costs the re-decodes less.
PROMPT_TOKENS = 64


def default_batch_size() -> int:
    """Windows decoded together: large on a GPU, where batching is nearly free, small on CPU."""
    return 64 if gpu_available() else 8


MIN_WINDOW_S = 10.0


def transcribe(
    audio: AudioInput,
    *,
    model: WhisperModel | str | None = None,
    batch_size: int | None = None,
    window_s: float | None = None,
    word_timestamps: bool = False,
    keep_attention: bool = True,
    language: str | None = None,
    task: str = "transcribe",
    initial_prompt: str | None = None,
    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold: float | None = 2.4,
    repeat_min_words: int | None = 4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    fallback_ahead: int | str = "auto",
    seed: int = 0,
    sequential: bool = False,
    condition_on_previous_text: bool = True,
    cache: AttentionCache | None = None,
    progress: bool = False,
    verbose: bool = False,
    name: str | None = None,
) -> Transcript:
    """Transcribe `audio` (path, bytes or 16 kHz samples) into a WhisperX-format `Transcript`.

    Windows of <= 30 s are decoded `batch_size` at a time (default 64 on GPU, 8 on CPU); with
    `sequential=True` one window at a time, advancing as openai-whisper does (for parity).
    `window_s` caps the batched mode's window length (10-30 s, default 30; shorter windows were
    measured slower on an H100 even when they fill a batch: docs/benchmarks.md).
    `keep_attention` captures the alignment heads' attention while decoding, so that `align`
    later needs no second pass; `word_timestamps=True` aligns every segment at once. Segment
    times are in seconds. `cache` bounds the captured attention (default: 512 MiB).
    `fallback_ahead`: on a GPU, rows a batch leaves free decode the next temperatures beside
    each window, so the fallback costs no extra passes ("auto"; 0 turns it off; see
    `DecodingOptions.fallback_ahead`). `seed` seeds the samples drawn at fallback temperatures:
    a window that fails greedy decoding gets the same text again for the same seed (on one
    backend), another draw for another. `condition_on_previous_text` prompts windows with the
    text before them: all of them with `sequential=True`; in batched mode those decoded again
    (text that stopped early, timestamps that jumped over speech), the only ones whose previous
    text is known when they are decoded.
    Many short recordings: `transcribe_many` decodes their windows in shared batches.
    """
    return transcribe_many(
        [audio], names=[name], model=model, batch_size=batch_size, window_s=window_s,
        word_timestamps=word_timestamps, keep_attention=keep_attention, language=language,
        task=task, initial_prompt=initial_prompt, temperature=temperature,
        compression_ratio_threshold=compression_ratio_threshold,
        repeat_min_words=repeat_min_words, logprob_threshold=logprob_threshold,
        no_speech_threshold=no_speech_threshold, fallback_ahead=fallback_ahead, seed=seed,
        sequential=sequential,
        condition_on_previous_text=condition_on_previous_text, cache=cache, progress=progress,
        verbose=verbose)[0]


def transcribe_many(
    audios: Sequence[AudioInput],
    *,
    names: Sequence[str | None] | None = None,
    model: WhisperModel | str | None = None,
    batch_size: int | None = None,
    window_s: float | None = None,
    word_timestamps: bool = False,
    keep_attention: bool = True,
    language: str | None = None,
    task: str = "transcribe",
    initial_prompt: str | None = None,
    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold: float | None = 2.4,
    repeat_min_words: int | None = 4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    fallback_ahead: int | str = "auto",
    seed: int = 0,
    sequential: bool = False,
    condition_on_previous_text: bool = True,
    cache: AttentionCache | None = None,
    progress: bool = False,
    verbose: bool = False,
    return_exceptions: bool = False,
) -> list[Transcript | Exception]:
    """Transcribe several recordings, one `Transcript` each (in order), with `transcribe`'s
    options; `names` label them in error messages.

    The windows of all recordings are decoded together, `batch_size` at a time: on a GPU a
    recording of a minute or two fills 2-4 of the 64 rows of a batch, so a service or a corpus
    of short files decodes many recordings in the time of one. Each transcript is the same as
    `transcribe` gives for its recording alone (the same windows, decoded the same way), apart
    from samples drawn at fallback temperatures. All recordings are loaded (and checked) before
    any is decoded; their captured attention shares one cache (`cache`, default 512 MiB).

    `return_exceptions=True` (as `asyncio.gather`): a recording that cannot be read, decoded
    or aligned gets its exception in its place in the list, and the others their transcripts.
    When a shared decode fails, its recordings are decoded again one at a time, so that the
    exception lands on the recording that caused it. Options that are wrong for all
    recordings (a bad `batch_size`, an unknown `language`) still raise.
    """
    if isinstance(audios, (str, bytes, np.ndarray)) or not isinstance(audios, Sequence):
        raise DecodingError("transcribe_many takes a list of recordings (paths, bytes or "
                            "sample arrays); for one recording use transcribe.")
    names = list(names) if names is not None else [None] * len(audios)
    if len(names) != len(audios):
        raise DecodingError(f"names: {len(names)} given for {len(audios)} recordings.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise DecodingError(f"batch_size={batch_size!r}: give a whole number of windows >= 1, "
                            "or None for the default.")
    if window_s is not None and (isinstance(window_s, bool) or not isinstance(window_s, (int, float))
                                 or not MIN_WINDOW_S <= window_s <= 30):
        raise DecodingError(f"window_s={window_s!r}: give seconds between {MIN_WINDOW_S:g} and 30 "
                            "(Whisper sees at most 30 s), or None for the default.")
    wm = model if isinstance(model, WhisperModel) else load_model(model)
    language = _check_language(wm, language)
    temps = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
    options = DecodingOptions(
        task=task, language=language, temperatures=temps, initial_prompt=initial_prompt,
        compression_ratio_threshold=compression_ratio_threshold, repeat_min_words=repeat_min_words,
        logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
        fallback_ahead=fallback_ahead, seed=seed)
    capture = keep_attention or word_timestamps
    if capture and cache is None:
        cache = AttentionCache()

    def job_of(audio: AudioInput, samples: np.ndarray) -> _Job:
        """A fresh job (nothing decoded yet) for `audio`, already loaded as `samples`."""
        context = TranscriptContext(wm, cache if capture else None,
                                    audio if not isinstance(audio, bytes) else samples,
                                    len(samples) / SAMPLE_RATE)
        if isinstance(audio, np.ndarray):
            context._samples = samples
        else:
            context.remember(samples)
        return _Job(samples, context)

    def decode(group: list[_Job]) -> None:
        if sequential:
            for job in group:
                job.segments, language_out = _sequential(
                    wm, job.samples, options, job.context, capture, condition_on_previous_text,
                    progress, verbose)
                job.languages.append(language_out)
        else:
            with _prompt_gil_handoff(word_timestamps and gpu_available()):
                _batched(wm, group, options, capture, batch_size or default_batch_size(),
                         progress, verbose, word_timestamps, float(window_s or 30.0),
                         condition_on_previous_text)

    def finish(job: _Job) -> Transcript:
        languages = job.languages
        language_out = (max(set(languages), key=languages.count) if languages
                        else (options.language or "en"))
        result = Transcript(segments=job.segments, text="".join(s["text"] for s in job.segments),
                            language=language_out, context=job.context)
        if word_timestamps:
            result.align()
        return result

    if not return_exceptions:
        jobs = [job_of(audio, load_audio(audio, name=name)) for audio, name in zip(audios, names)]
        decode(jobs)
        return [finish(job) for job in jobs]

    results: list[Transcript | Exception | None] = [None] * len(audios)
    pending: dict[int, _Job] = {}
    for i, (audio, name) in enumerate(zip(audios, names)):
        try:
            pending[i] = job_of(audio, load_audio(audio, name=name))
        except Exception as e:  # noqa: BLE001  one unreadable recording must not fail the rest
            results[i] = e
    try:
        decode(list(pending.values()))
    except Exception as e:  # noqa: BLE001  find the recording that broke the shared decode
        if len(pending) == 1:
            results[next(iter(pending))] = e
        else:
            log.debug("shared decode failed; one recording at a time", exc_info=True)
            for i in pending:
                try:  # a fresh job drops what the failed decode left; the samples stay loaded
                    pending[i] = job_of(audios[i], pending[i].samples)
                    decode([pending[i]])
                except Exception as err:  # noqa: BLE001
                    results[i] = err
    for i, job in pending.items():
        if results[i] is None:
            try:
                results[i] = finish(job)
            except Exception as err:  # noqa: BLE001
                results[i] = err
    return results  # type: ignore[return-value]


def _check_language(wm: WhisperModel, language: str | None) -> str | None:
    if language is not None and wm.is_multilingual:
        from mlx_whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

        code = TO_LANGUAGE_CODE.get(str(language).lower(), str(language).lower())
        if code not in LANGUAGES:
            raise DecodingError(f"language {language!r} is not one Whisper knows; use a code such "
                                "as 'en', 'de', 'ja', or a name such as 'german'.")
        return code
    if language not in (None, "en", "english", "English") and not wm.is_multilingual:
        raise DecodingError(f"language {language!r}: {wm.name} is an English-only model; load a "
                            "multilingual model (e.g. 'base') for other languages.")
    return language


# Python's thread switch interval while words are aligned beside a GPU decoding loop (s):
# 10 us, chosen on an H200 among 200 / 50 / 10 us (docs/benchmarks.md, "The GIL between ...").
ALIGN_SWITCH_S = 0.00001


@contextlib.contextmanager
def _prompt_gil_handoff(enabled: bool):
    """A short thread switch interval while `enabled` (words are aligned). The host worker's
    Python work holds the GIL; each time the decoding loop wants it back (after every GPU step,
    ~1 ms) it waits up to the switch interval (5 ms by default) while the GPU, two steps ahead
    at most, runs dry. Capture alone leaves the default: the worker's cache copies release the
    GIL, and the short interval measured +1-2 % on capture alone (gpu-h200-28-words-parts.txt,
    one process; within the noise). The interval is process-wide: restored on exit."""
    if not enabled:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, ALIGN_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@dataclass(eq=False)
class _Job:
    """One recording being transcribed: its samples, context, and what was decoded so far."""

    samples: np.ndarray
    context: TranscriptContext
    segments: list[Segment] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)


def _encode(wm: WhisperModel, windows: list[tuple[np.ndarray, int, int]]) -> mx.array:
    """Audio features of windows given as (recording samples, first sample, end sample)."""
    if gpu_available():
        mels = log_mel_batch(windows, wm.dims.n_mels)
    else:
        mels = mx.array(np.stack([log_mel_window(x[a:b], wm.dims.n_mels) for x, a, b in windows]))
    with wm.lock:
        features = wm.model.embed_audio(mels)
        mx.eval(features)
    return features


def _batched(wm, jobs: list[_Job], options, capture, batch_size, progress, verbose,
             word_timestamps=False, window_s=30.0, condition=True):
    """Decode the windows of all `jobs` in batches, filling each job's segments and languages.
    A window whose text ends (end-of-text) more than `TAIL_S` before its end while speech
    follows, or whose timestamps jump over speech (`_first_skip`), is decoded again from where
    its text stopped, in a later round of batches: the batched counterpart of openai-whisper's
    seek. With `condition`, those re-decodes are prompted with the text before them, as
    openai-whisper's `condition_on_previous_text` prompts every window."""
    tokenizer = wm.tokenizer(options.language, options.task)
    prompt = prompt_tokens(tokenizer, options.initial_prompt, wm.dims.n_text_ctx)
    pending = [(job, w, prompt) for job in jobs
               for w in plan_windows(job.samples, max_s=window_s, search_s=min(5.0, window_s / 4))
               if not is_silent(job.samples[w.start : w.end])]
    bar = _progress(len(pending), progress)
    # Host work on what the device decoded -- copying segments' attention into the cache and
    # aligning words (numba, numpy) -- runs in a worker thread as soon as windows are final:
    # while the batch's failing windows are decoded again at a higher temperature, and the
    # next batch (MLX releases the GIL while the device computes).
    worker = ThreadPoolExecutor(max_workers=1) if capture else None
    queued = []
    if word_timestamps:  # the signal refinement's energy envelopes, while the GPU decodes
        queued += [worker.submit(envelope_of, job.samples) for job in jobs[:ENVELOPES_KEPT]]

    def queue_host_work(segments: list[Segment], cuts: list[tuple]) -> None:
        if cuts:
            queued.append(worker.submit(fetch_attention(cuts)))
        if word_timestamps and segments:
            queued.append(worker.submit(_align_segments, segments))

    for round_ in range(MAX_TAIL_ROUNDS + 1):
        tails: list[tuple[_Job, Window]] = []
        last_round = round_ == MAX_TAIL_ROUNDS
        for batch, prompts in _batches(pending, batch_size):
            features = _encode(wm, [(job.samples, w.start, w.end) for job, w in batch])
            by_window: dict[int, list[Segment]] = {}
            joins: dict[int, tuple[Window, JoinRow]] = {}

            def accept(rows, results, batch=batch, by_window=by_window, last_round=last_round):
                # Windows final after this pass: their segments (and words, in the
                # worker thread) while the failing windows are decoded again.
                accepted, cuts = [], []
                for row, result in zip(rows, results):
                    job, window = batch[row]
                    by_window[row] = _take_window(wm, job, window, result, options, cuts, last_round)
                    accepted.extend(by_window[row])
                queue_host_work(accepted, cuts)

            def join(row, result, offset, batch=batch, joins=joins):
                # A window whose text stopped early: the rest of it decodes in the rows of
                # this pass, from where the text stopped, instead of in a later round.
                job, window = batch[row]
                if result.needs_fallback(options):
                    return None
                kept = _kept_segments(wm, job, window, result, options)
                tail = _untranscribed_tail(window, kept, job.samples)
                if tail is None:
                    return None
                history = [t for seg in kept for t in seg["tokens"]]
                ask = JoinRow(_encode(wm, [(job.samples, tail.start, tail.end)]),
                              _join_prompt(prompt, history, tokenizer.sot_prev) if condition else prompt,
                              result.language, _audio_frames(tail))
                joins[row] = (tail, ask)
                return ask

            results = decode_with_fallback(wm, features, options, capture=capture,
                                           prompt=prompts,
                                           audio_frames=[_audio_frames(w) for _, w in batch],
                                           on_final=accept, spare_rows=batch_size - len(batch),
                                           join=join if round_ < MAX_TAIL_ROUNDS - 1 else None)
            del features
            joined, cuts = [], []
            for row, ((job, window), result) in enumerate(zip(batch, results)):
                job.languages.append(result.language)
                _report(by_window[row], verbose)
                tail = _untranscribed_tail(window, by_window[row], job.samples)
                if tail is None:
                    continue
                asked, ask = joins.get(row, (None, None))
                if asked != tail or ask.result is None or ask.result.needs_fallback(options):
                    tails.append((job, tail))  # decoded (again) in the next round
                    continue
                job.languages.append(ask.result.language)
                new = _take_window(wm, job, tail, ask.result, options, cuts, last_round)
                _report(new, verbose)
                joined.extend(new)
                rest = _untranscribed_tail(tail, new, job.samples)
                if rest is not None:
                    tails.append((job, rest))
            queue_host_work(joined, cuts)
            if bar:
                bar.update(len(batch))
        if not tails:
            break
        pending = [(job, tail, _previous_text(job, tail, prompt, tokenizer.sot_prev)
                    if condition else prompt) for job, tail in tails]
        if bar:
            bar.total += len(tails)
    if bar:
        bar.close()
    if worker is not None:
        for future in queued:
            future.result()
        worker.shutdown()
    for job in jobs:
        job.segments.sort(key=lambda seg: (seg["start"], seg["end"]))
        for i, seg in enumerate(job.segments):
            seg["id"] = i


def _take_window(wm, job: _Job, window: Window, result: WindowResult, options, cuts: list,
                 last_round: bool) -> list[Segment]:
    """Add the segments of `window`'s final `result` to `job` (their attention cuts to
    `cuts`), up to a timestamp that jumped over speech (`_first_skip`; not in the last round):
    the window is decoded again from there. -> the segments added."""
    window_cuts: list[tuple] = []
    new = window_segments(wm, window, result, options, job.context, len(job.segments),
                          final=True, pending_cuts=window_cuts)
    skip = None if last_round else _first_skip(
        new, job.samples, wm.tokenizer(result.language, options.task).eot)
    if skip is not None:
        # Drop the segment that jumped over speech and all after it; their attention too
        new = new[:skip]
        kept = {seg.source.key for seg in new}
        window_cuts = [cut for cut in window_cuts if cut[1] in kept]
    cuts.extend(window_cuts)
    job.segments.extend(new)
    return new


def _kept_segments(wm, job: _Job, window: Window, result: WindowResult, options) -> list[Segment]:
    """The segments `_take_window` will keep of `result`, without taking them (or attention)."""
    new = window_segments(wm, window, replace(result, attention=None), options, job.context, 0,
                          final=True, pending_cuts=[])
    skip = _first_skip(new, job.samples, wm.tokenizer(result.language, options.task).eot)
    return new if skip is None else new[:skip]


def _join_prompt(prompt: list[int], history: list[int], sot_prev: int) -> list[int]:
    """The prompt of the rest of a window decoded beside its pass (`JoinRow`): `prompt`'s own
    text and the window's text before that rest, at most `PROMPT_TOKENS` of them. Only the
    window's own text: the windows before it may still be decoding."""
    text = list(prompt[1:]) + history
    return [sot_prev] + text[-PROMPT_TOKENS:] if text else prompt


def _align_segments(segments: list[Segment]) -> None:
    from .align import align

    align(segments)


def _batches(pending: list[tuple[_Job, Window, list[int]]], batch_size: int):
    """(windows, prompts) of at most `batch_size` rows, in order, each of one prompt length:
    the rows of a batch share their positions. Batches never depend on prompts' content, so a
    recording's text does not depend on the recordings beside it."""
    by_length: dict[int, list[tuple[_Job, Window, list[int]]]] = {}
    for item in pending:
        by_length.setdefault(len(item[2]), []).append(item)
    for items in by_length.values():
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            yield [(job, w) for job, w, _ in chunk], [p for _, _, p in chunk]


def _previous_text(job: _Job, tail: Window, prompt: list[int], sot_prev: int) -> list[int]:
    """The prompt for a window decoded again: `<|startofprev|>` and the last `PROMPT_TOKENS`
    tokens decoded before it in its recording (after `prompt`'s own), as openai-whisper
    conditions on previous text, text from a temperature of 0.5 or more left out as it does.
    Fewer tokens than that: `prompt` itself (one length for all conditioned rows, so that they
    share batches; see `_batches`)."""
    history = list(prompt[1:])
    for seg in sorted(job.segments, key=lambda seg: seg.source.start_s):
        if seg.source.end_s > tail.start_s + 1e-6:
            break
        if seg["temperature"] >= 0.5:
            history = []
        else:
            history.extend(seg["tokens"])
    return [sot_prev] + history[-PROMPT_TOKENS:] if len(history) >= PROMPT_TOKENS else prompt


def _speech_frames(samples: np.ndarray) -> int:
    """20 ms frames of `samples` loud enough to be speech (RMS above `SPEECH_RMS`)."""
    return int(np.count_nonzero(np.sqrt(frame_power(samples)) > SPEECH_RMS))


def _first_skip(segments: list[Segment], samples: np.ndarray, eot: int) -> int | None:
    """Index of the first of a window's `segments` whose decoded span holds at least
    `SKIP_MIN_SPEECH_S` of speech but fewer than `SKIP_TOKENS_PER_S` text tokens per second
    of it (a timestamp that jumped past words, e.g. "while the San" over 12 s of a sentence).
    The window is then decoded again from the decoded end of the segment before it; a first
    segment never counts, so that no window is decoded again from its own start (without a
    prompt, the same input gives the same text). Text tokens are those below `eot`. None when
    there is no such segment."""
    for i, seg in enumerate(segments[1:], 1):
        span_s = seg.source.end_s - seg.source.start_s
        text_tokens = sum(1 for t in seg["tokens"] if t < eot)
        if span_s < SKIP_MIN_SPEECH_S or text_tokens >= SKIP_TOKENS_PER_S * span_s:
            continue  # cannot hold enough speech for too few tokens: no need to measure it
        a, b = (int(round(t * SAMPLE_RATE)) for t in (seg.source.start_s, seg.source.end_s))
        speech_s = _speech_frames(samples[a:b]) * 0.02
        if speech_s >= SKIP_MIN_SPEECH_S and text_tokens < SKIP_TOKENS_PER_S * speech_s:
            return i
    return None


def _untranscribed_tail(window: Window, segments: list[Segment], samples: np.ndarray) -> Window | None:
    # the decoded end, not segment["end"]: the worker thread may have refined it already
    covered = segments[-1].source.end_s if segments else window.start_s
    start = int(round(covered * SAMPLE_RATE))
    if window.end - start < TAIL_S * SAMPLE_RATE:
        return None
    if _speech_frames(samples[start : window.end]) < MIN_SPEECH_FRAMES:
        return None  # silence or near-silence: nothing was missed
    return Window(window.index, start, window.end)


def _sequential(wm, samples, options, context, capture, condition, progress, verbose):
    """openai-whisper's loop: decode the window at `seek`, then move `seek` to the last
    complete segment's end (or the window's end)."""
    n = len(samples)
    seek = 0
    segments: list[Segment] = []
    tokenizer = wm.tokenizer(options.language, options.task)
    history: list[int] = prompt_tokens(tokenizer, options.initial_prompt, wm.dims.n_text_ctx)[1:]
    language = options.language
    bar = _progress(n, progress)
    while seek < n:
        window = Window(len(segments), seek, min(n, seek + CHUNK_SAMPLES))
        if window.end - window.start < SAMPLE_RATE // 100:
            break
        if is_silent(samples[window.start : window.end]):
            seek = window.end
            continue
        features = _encode(wm, [(samples, window.start, window.end)])
        prompt = [tokenizer.sot_prev] + history[-(wm.dims.n_text_ctx // 2 - 1):] if history else None
        opts = replace(options, language=language) if language else options
        result = decode_with_fallback(wm, features, opts, capture=capture, prompt=prompt,
                                      audio_frames=[_audio_frames(window)],
                                      spare_rows=len(opts.temperatures) - 1)[0]
        language = language or result.language
        new = window_segments(wm, window, result, opts, context, len(segments), final=False)
        advance = _seek_advance(result, tokenizer.timestamp_begin, window)
        _report(new, verbose)
        segments.extend(new)
        if condition and result.temperature < 0.5:
            history.extend(t for s in new for t in s["tokens"])
        else:
            history = []
        if bar:
            bar.update(min(advance, n - seek))
        seek += advance
    if bar:
        bar.close()
    return segments, language or "en"


def _seek_advance(result: WindowResult, ts_begin: int, window: Window) -> int:
    tokens = np.array(result.tokens, dtype=np.int64)
    size = window.end - window.start
    if len(tokens) == 0:
        return size
    is_ts = tokens >= ts_begin
    single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
    consecutive = np.flatnonzero(is_ts[:-1] & is_ts[1:]) + 1
    if len(consecutive) and not single_ending:
        last = int(tokens[consecutive[-1] - 1]) - ts_begin
        return max(1, min(size, int(last * SECONDS_PER_TIMESTAMP * SAMPLE_RATE)))
    return size


def split_tokens(tokens: tuple[int, ...], ts_begin: int, final: bool) -> list[tuple[int, int]]:
    """Token ranges [i0, i1) of a window's segments, as openai-whisper splits them at
    consecutive timestamp pairs. With `final`, text after the last complete segment becomes a
    segment of its own (the batched path never re-decodes it); otherwise it is left out."""
    n = len(tokens)
    if n == 0:
        return []
    is_ts = np.array(tokens) >= ts_begin
    consecutive = (np.flatnonzero(is_ts[:-1] & is_ts[1:]) + 1).tolist()
    single_ending = n >= 2 and not is_ts[-2] and is_ts[-1]
    if not consecutive:
        return [(0, n)]
    if single_ending:
        consecutive.append(n)
    ranges, last = [], 0
    for cut in consecutive:
        ranges.append((last, cut))
        last = cut
    if final and last < n and (~is_ts[last:]).any():
        ranges.append((last, n))
    return ranges


def _audio_frames(window: Window) -> int:
    """Encoder frames (20 ms) of `window` that hold audio; the rest is padding."""
    return int(np.ceil((window.end - window.start) / SAMPLE_RATE * TOKENS_PER_SECOND))


def window_segments(wm: WhisperModel, window: Window, result: WindowResult,
                    options: DecodingOptions, context: TranscriptContext, first_id: int,
                    final: bool, pending_cuts: list | None = None) -> list[Segment]:
    """Segments of one decoded window, with their captured attention put in the cache; or,
    given `pending_cuts`, left there for one `store_attention` call for many windows."""
    if (options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold
            and not (options.logprob_threshold is not None and result.avg_logprob > options.logprob_threshold)):
        return []
    tokenizer = wm.tokenizer(result.language, options.task)
    ts_begin = tokenizer.timestamp_begin
    tokens = result.tokens
    window_len = window.end_s - window.start_s
    audio_frames = _audio_frames(window)
    segments, boxes = [], []
    serial = first_id
    for i0, i1 in split_tokens(tokens, ts_begin, final):
        seg_tokens = tokens[i0:i1]
        text_tokens = [t for t in seg_tokens if t < tokenizer.eot]
        text = tokenizer.decode(text_tokens)
        if not text.strip():
            continue
        stamps = [t - ts_begin for t in seg_tokens if t >= ts_begin]
        start_rel = stamps[0] * SECONDS_PER_TIMESTAMP if seg_tokens[0] >= ts_begin else 0.0
        has_close = len(seg_tokens) > 1 and seg_tokens[-1] >= ts_begin
        end_rel = stamps[-1] * SECONDS_PER_TIMESTAMP if has_close else window_len
        start_rel = min(start_rel, window_len)
        end_rel = min(max(end_rel, start_rel), window_len)
        index = serial
        serial += 1
        start_s, end_s = round(window.start_s + start_rel, 3), round(window.start_s + end_rel, 3)
        source = SegmentSource(context, index, window.start_s, window.end_s,
                               result.initial_tokens + tuple(tokens[:i0]), start_s, end_s,
                               segments[-1]["end"] if segments else window.start_s)
        seg = Segment(
            id=index, seek=window.seek, start=start_s, end=end_s,
            text=text, tokens=list(seg_tokens), avg_logprob=result.avg_logprob,
            compression_ratio=result.compression_ratio, no_speech_prob=result.no_speech_prob,
            temperature=result.temperature, source=source)
        if result.attention is not None and context.cache is not None:
            boxes.append((source.key, _attention_box(result, i0, i1, start_rel, end_rel, audio_frames)))
        segments.append(seg)
    cuts = [(context.cache, key, result, box, ts_begin) for key, box in boxes]
    if pending_cuts is None:
        store_attention(cuts)
    else:
        pending_cuts.extend(cuts)
    return segments


def store_attention(cuts: list[tuple]) -> None:
    """Put segments' attention in their cache: `cuts` as `window_segments` leaves them in
    `pending_cuts`, cut out of their windows' scores in one copy off the device."""
    fetch_attention(cuts)()


def fetch_attention(cuts: list[tuple]) -> Callable[[], None]:
    """`store_attention` in two halves: this one cuts the segments' attention out of their
    windows' scores on the device and waits for it; the function it returns copies each
    segment's part to memory of its own and puts it in its cache. That half makes no MLX
    call, so a worker thread can do it while the decoding loop goes on (at 30 min on an H200,
    ~16 of the ~30 ms the cache took)."""
    views = host_views([result.attention.part(*box) for _, _, result, box, _ in cuts])

    def put() -> None:
        for (cache, key, result, box, ts_begin), view in zip(cuts, views):
            cache.put(key, _segment_attention(result, box, np.array(view), ts_begin))
    return put


def _attention_box(result, i0, i1, start_rel, end_rel, audio_frames) -> tuple[int, int, int, int]:
    """(first row, end row, first frame, end frame) of a segment's attention: the rows
    predicting its tokens (and the token after it), the frames around it."""
    f0 = max(0, int((start_rel - CAPTURE_MARGIN_S) * TOKENS_PER_SECOND))
    f1 = min(audio_frames, int(np.ceil((end_rel + CAPTURE_MARGIN_S) * TOKENS_PER_SECOND)))
    return i0, min(i1 + 1, result.attention.shape[0]), f0, max(f1, f0 + 1)


def _segment_attention(result, box, scores: np.ndarray, ts_begin: int) -> CapturedAttention:
    r0, r1, f0, _ = box
    predicted = list(result.tokens[r0:r1]) + [-1] * (r1 - r0 - len(result.tokens[r0:r1]))
    return CapturedAttention(
        scores=scores,
        log_norm=np.ascontiguousarray(result.log_norm[r0:r1]),
        frame_offset=f0,
        tokens=tuple(predicted),
        is_timestamp=np.array([t >= ts_begin for t in predicted], bool),
        token_logprobs=np.asarray(result.token_logprobs[r0:r1], np.float32),
    )


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:  # nothing to decode (every file failed or is silent): no bar
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="window" if total < 10_000 else "sample", leave=False)


def _report(segments: list[Segment], verbose: bool) -> None:
    if verbose:
        for s in segments:
            print(f"[{s['start']:8.2f} --> {s['end']:8.2f}] {s['text'].strip()}", flush=True)
