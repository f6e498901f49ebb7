"""The accuracy harness's metrics and signal refinement: no model needed, fast."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.accuracy import metrics
from bench.accuracy.metrics import TimedWord, score
from lightning_align.refine import (Envelope, RefineOptions, fine_levels, onset_costs, percentile,
                                    snap_to_dips, snap_words, speech_spans)
from lightning_align.synth import concatenate, synthesize

REF = [TimedWord("the", 0.50, 0.62), TimedWord("quick", 0.62, 0.95), TimedWord("brown", 0.95, 1.30),
       TimedWord("fox", 1.80, 2.20)]


def test_perfect_hypothesis_scores_zero_and_f1_one():
    hyp = [{"word": " The", "start": w.start, "end": w.end} for w in REF[:1]] + \
          [(w.word.capitalize() + ",", w.start, w.end) for w in REF[1:]]
    s = score([(REF, hyp)])
    assert s.matched == 4 and s.dropped == 0 and s.inserted == 0
    for b in (s.starts, s.ends):
        assert b.mae_ms == pytest.approx(0.0, abs=1e-9)
        assert b.f1[20] == b.f1[50] == 1.0 and b.within[20] == 1.0


def test_shift_of_30_ms_scores_exactly_30():
    hyp = [(w.word, w.start + 0.030, w.end + 0.030) for w in REF]
    s = score([(REF, hyp)])
    assert s.starts.mae_ms == pytest.approx(30.0) and s.ends.mae_ms == pytest.approx(30.0)
    assert s.starts.mean_signed_ms == pytest.approx(30.0)
    assert s.starts.within[20] == 0.0 and s.starts.within[50] == 1.0
    assert s.starts.f1[20] == 0.0 and s.starts.f1[50] == 1.0
    early = score([(REF, [(w.word, w.start - 0.030, w.end) for w in REF])])
    assert early.starts.mean_signed_ms == pytest.approx(-30.0) and early.ends.mae_ms == pytest.approx(0)


def test_dropped_and_inserted_words_are_counted_not_matched():
    # "quick" dropped, "red" inserted where "brown" was: the neighbours must not be paired
    hyp = [("the", 0.5, 0.62), ("red", 0.62, 1.30), ("fox", 1.80, 2.20)]
    s = score([(REF, hyp)])
    assert s.matched == 2 and s.dropped == 2 and s.inserted == 1
    assert s.starts.mae_ms == pytest.approx(0.0, abs=1e-9)
    # recall counts the two missing words, precision the inserted one
    assert s.starts.recall[50] == pytest.approx(2 / 4) and s.starts.precision[50] == pytest.approx(2 / 3)
    assert s.starts.f1[50] == pytest.approx(2 * (0.5 * 2 / 3) / (0.5 + 2 / 3))


def test_a_misrecognized_stretch_is_substitutions_not_a_far_namesake():
    # Clip evalb41 of the evaluation-b set (tiny.en at 10 dB SNR): "does the pharmacy on King
    # Street open Peter dropped the plate" heard as "does that armacy bomb king's tree open The
    # dropped -map plate". Longest matching blocks (difflib) paired the reference's "the" at
    # 8.46 s with the hypothesis's "The" at 11.90 s, a 3.4 s "timing error"; an edit-distance
    # alignment makes the stretch substitutions and pairs only words in corresponding places.
    ref_words = "does the pharmacy on king street open peter dropped the plate".split()
    hyp_words = "does that armacy bomb king's tree open the dropped -map plate".split()
    ref = [TimedWord(w, 8.19 + 0.4 * k, 8.5 + 0.4 * k) for k, w in enumerate(ref_words)]
    hyp = [TimedWord(w, 8.19 + 0.4 * k, 8.5 + 0.4 * k) for k, w in enumerate(hyp_words)]
    m = metrics.match_words(ref, hyp)
    assert [(ref_words[i], hyp_words[j]) for i, j in m.pairs] == [
        ("does", "does"), ("open", "open"), ("dropped", "dropped"), ("plate", "plate")]
    assert all(i == j for i, j in m.pairs)
    # Among alignments with equally few edits, the one with the most equal words wins.
    assert metrics.match_words([TimedWord(w, 0, 1) for w in "x the y".split()],
                               [TimedWord(w, 0, 1) for w in "the p q".split()]).pairs == ((1, 0),)
    assert metrics.match_words([], ref).pairs == () and metrics.match_words(ref, []).n_ref == 11


def test_numbers_in_digits_match_spelled_words():
    ref = [TimedWord("at", 0.0, 0.2), TimedWord("forty", 0.2, 0.5), TimedWord("two", 0.5, 0.8)]
    s = score([(ref, [("at", 0.0, 0.2), ("42.", 0.2, 0.8)])])
    assert s.matched == 3 and s.starts.n == 2 and s.ends.n == 2  # inner boundary not scored
    assert s.starts.mae_ms == pytest.approx(0.0, abs=1e-9)
    assert metrics.spell_number(1984) == ["nineteen", "eighty", "four"]


def test_bad_spans_and_words_in_silence():
    s = score([(REF, [("the", 0.5, 0.5), ("quick", 0.7, 0.6)])])
    assert s.bad_spans == 2
    ref = [TimedWord("a", 0.0, 0.3), TimedWord("b", 2.0, 2.3)]
    assert metrics.words_in_silences([("b", 0.5, 1.5)], ref) == 1
    assert metrics.words_in_silences([("b", 0.2, 1.5)], ref) == 0


@pytest.fixture(scope="module")
def paused_speech():
    a = synthesize("Good morning everyone.", voice="en-us", lead_in_s=1.2, seed=1)
    b = synthesize("Let us begin.", voice="en-us", tail_s=0.5, seed=2)
    return concatenate([a, b], 1.5)


def test_speech_spans_find_the_pauses(paused_speech):
    spans = speech_spans(paused_speech.audio, 0.0, paused_speech.duration)
    w = paused_speech.words
    assert abs(spans[0][0] - w[0].start) <= 0.02  # onset after the lead-in
    pause = [(a, b) for a, b in zip(spans[:-1, 1], spans[1:, 0]) if b - a > 1.0]
    assert len(pause) == 1
    assert abs(pause[0][0] - w[2].end) <= 0.02 and abs(pause[0][1] - w[3].start) <= 0.02


def test_snap_words_moves_boundaries_out_of_silence(paused_speech):
    w = paused_speech.words
    spans = speech_spans(paused_speech.audio, 0.0, paused_speech.duration)
    # the DTW's typical mistakes: first word from 0.0 s, a word stretched over the pause
    starts = np.array([0.0, w[1].start, w[2].start, w[3].start - 0.9, w[4].start, w[5].start])
    ends = np.array([w[1].start, w[2].start, w[3].start - 0.9, w[4].start, w[5].start, w[5].end + 0.4])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert abs(s[0] - w[0].start) <= 0.02
    assert abs(e[2] - w[2].end) <= 0.02 and abs(s[3] - w[3].start) <= 0.02
    assert abs(e[-1] - w[-1].end) <= 0.02
    assert np.all(e > s) and np.all(s[1:] >= e[:-1])


def test_a_word_the_attention_put_inside_a_long_pause_goes_to_the_speech(paused_speech):
    """A segment's last word placed wholly inside the > 1 s pause after it, near its start,
    goes back to the offset; a first word placed near the pause's end goes on to the onset;
    one in the middle of a pause shorter than 1 s stays (nothing says which side it is)."""
    from tests import refine_reference as ref

    w = paused_speech.words
    spans = speech_spans(paused_speech.audio, 0.0, paused_speech.duration)
    off, on = w[2].end, w[3].start
    opts = RefineOptions()
    starts = np.array([w[0].start, w[1].start, off + 0.25])
    ends = np.array([w[1].start, off + 0.25, off + 0.3])
    s, e = snap_words(starts, ends, spans, opts)
    assert abs(e[2] - off) <= 0.02 and abs(s[2] - (e[2] - opts.min_word_s)) < 1e-9
    assert e[1] <= s[2] and abs(e[0] - w[1].start) < 0.05
    starts = np.array([on - 0.3, on - 0.2, w[4].start])
    ends = np.array([on - 0.2, w[4].start, w[5].end])
    s, e = snap_words(starts, ends, spans, opts)
    assert abs(s[0] - on) <= 0.02 and abs(e[0] - (s[0] + opts.min_word_s)) < 1e-9
    assert s[1] >= e[0]
    for case in ((starts, ends), (np.array([off + 0.25, w[4].start]), np.array([off + 0.3, w[5].end]))):
        got, want = snap_words(*case, spans, opts), ref.snap_words(*case, spans, opts)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    short = np.array([[0.0, 1.0], [1.6, 2.0]])  # a 0.6 s pause
    s, e = snap_words(np.array([0.2, 1.25]), np.array([1.25, 1.35]), short, opts)
    assert s[1] == 1.25 and e[1] == 1.35


def test_a_quiet_stretch_inside_a_word_does_not_take_the_boundary_before_it():
    """evaluation-b's "garden gate" (20 dB): the DTW put the boundary at the truth, 12.01 s, and
    a 40 ms closure inside "gate" lay 0.18 s later, within reach; snapping to it handed 0.18 s
    of "gate"'s 0.24 s of speech to "garden" (start +220 ms). A boundary moves to a pause only
    if neither word loses more than `max_speech_moved` of its speech; a boundary 50 ms before
    a real pause still moves (the next word loses 50 ms of its 0.45 s)."""
    from tests import refine_reference as ref

    opts = RefineOptions()
    closure = np.array([[0.0, 0.98], [1.02, 2.0]])
    starts, ends = np.array([0.5, 0.8]), np.array([0.8, 1.1])
    for o in (opts, replace(opts, max_speech_moved=1.0)):
        got, want = snap_words(starts, ends, closure, o), ref.snap_words(starts, ends, closure, o)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    s, e = snap_words(starts, ends, closure, opts)
    assert (e[0], s[1]) == (0.8, 0.8)
    s, e = snap_words(starts, ends, closure, replace(opts, max_speech_moved=1.0))
    assert (e[0], s[1]) == (0.98, 1.02)  # without the check: the closure's edges
    pause = np.array([[0.0, 1.0], [1.5, 2.0]])
    s, e = snap_words(np.array([0.5, 0.95]), np.array([0.95, 1.9]), pause, opts)
    assert (e[0], s[1]) == (1.0, 1.5)


def test_words_the_attention_put_inside_a_long_pause_go_to_its_nearer_edge(paused_speech):
    """Words with no speech of their own, placed wholly in the 1.5 s pause (evaluation-b's clip
    evalb0: a hallucinated "I mean..." 0.2 s into a 2.1 s pause): near the pause's start they
    go back to the offset, near its end on to the onset, each `min_word_s` long and in order,
    the neighbour giving way; the numpy formulation agrees."""
    from tests import refine_reference as ref

    w = paused_speech.words  # good(0) morning(1) everyone(2) | pause | let(3) us(4) begin(5)
    spans = speech_spans(paused_speech.audio, 0.0, paused_speech.duration)
    off, on = w[2].end, w[3].start
    mw = RefineOptions().min_word_s
    cases = []
    # two words 0.2 s into the pause, between "everyone" and "let"
    starts = np.array([w[0].start, w[1].start, w[2].start, off + 0.2, off + 0.24, w[3].start])
    ends = np.array([w[1].start, w[2].start, off, off + 0.24, off + 0.28, w[3].end])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert abs(e[4] - off) <= 0.02 and np.allclose(e[3:5] - s[3:5], mw)
    assert s[4] == e[3] and e[2] <= s[3] and e[2] > s[2] + mw
    cases.append((starts, ends))
    # one word 0.15 s before the pause ends: on to the onset, "let" starting after it
    starts = np.array([w[1].start, w[2].start, on - 0.15, w[4].start])
    ends = np.array([w[2].start, off, on - 0.12, w[4].end])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert abs(s[2] - on) <= 0.02 and abs(e[2] - s[2] - mw) < 1e-9 and s[3] >= e[2]
    cases.append((starts, ends))
    # the same two words ending the segment (evalb0's segment ends "... map, I mean..."): back
    starts = np.array([w[1].start, w[2].start, off + 0.2, off + 0.24])
    ends = np.array([w[2].start, off, off + 0.24, off + 0.28])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert abs(e[3] - off) <= 0.02 and s[3] == e[2] and e[1] <= s[2]
    cases.append((starts, ends))
    # ... but a segment's first word near the pause's start stays, and so does its last word
    # near the pause's end (the speech beyond is another segment's)
    starts, ends = np.array([off + 0.2, w[3].start]), np.array([off + 0.3, w[3].end])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert (s[0], e[0]) == (starts[0], ends[0])
    cases.append((starts, ends))
    starts, ends = np.array([w[2].start, on - 0.2]), np.array([off, on - 0.1])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert (s[1], e[1]) == (starts[1], ends[1])
    cases.append((starts, ends))
    # the word before has no room to give: nothing moves
    starts = np.array([off - 0.05, off + 0.2, w[3].start])
    ends = np.array([off + 0.2, off + 0.3, w[3].end])
    s, e = snap_words(starts, ends, spans, RefineOptions())
    assert s[1] == off + 0.2
    cases.append((starts, ends))
    for case in cases:
        got, want = snap_words(*case, spans, RefineOptions()), ref.snap_words(*case, spans, RefineOptions())
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_a_refilled_buffer_is_a_new_recording(paused_speech):
    """Envelopes are remembered per recording: the same array refilled with other audio must
    not reuse the old one."""
    buffer = paused_speech.audio.copy()
    before = speech_spans(buffer, 0.0, paused_speech.duration)
    buffer[:16000] = 0.0  # the same speech, one second later
    buffer[16000:] = paused_speech.audio[:-16000]
    after = speech_spans(buffer, 0.0, paused_speech.duration)
    assert abs(after[0][0] - (before[0][0] + 1.0)) <= 0.02


def test_spans_stay_inside_the_audio():
    speech = synthesize("Yes.", voice="en-gb")  # speech from the very first sample
    spans = speech_spans(speech.audio, 0.0, speech.duration)
    assert spans.min() >= 0.0 and spans.max() <= speech.duration


def test_fine_levels_equal_a_direct_computation(paused_speech):
    x = paused_speech.audio
    for t0, t1 in ((0.0, 0.3), (1.2345, 2.0), (paused_speech.duration - 0.1, paused_speech.duration)):
        origin, db = fine_levels(x, t0, t1, 0.005, 0.01)
        k0 = int(round(origin / 0.005))
        assert origin >= t0 - 1e-9 and origin - t0 < 0.005
        for k, level in enumerate(db):
            c = (k0 + k) * 80  # frame centre in samples; the frame is [c - 80, c + 80), zeros outside
            frame = np.zeros(160)
            lo, hi = max(0, c - 80), min(len(x), c + 80)
            frame[lo - (c - 80) : hi - (c - 80)] = x[lo:hi]
            assert level == pytest.approx(10 * np.log10(np.mean(frame**2) + 1e-10), abs=1e-3)


def test_envelope_levels_equal_a_direct_computation(paused_speech):
    """The 20 ms / 10 ms frames, summed from 5 ms blocks: frame k is the mean square of
    samples [160 k - 160, 160 k + 160), zeros outside, for any length."""
    for x in (paused_speech.audio, paused_speech.audio[:-37], paused_speech.audio[:1000]):
        db = Envelope(x).db
        assert len(db) == len(x) // 160
        for k in range(0, len(db), 7):
            frame = np.zeros(320)
            lo, hi = max(0, 160 * k - 160), min(len(x), 160 * k + 160)
            frame[lo - (160 * k - 160) : hi - (160 * k - 160)] = x[lo:hi]
            assert db[k] == pytest.approx(10 * np.log10(np.mean(frame.astype(np.float64) ** 2)
                                                        + 1e-10), abs=1e-3)


def test_envelope_fine_levels_equal_fine_levels(paused_speech):
    """The dip search reads 5 ms block energies computed once per recording: the same levels
    as `fine_levels` over the samples, at the edges (zeros outside) and for a length that is
    not a whole number of blocks."""
    for x in (paused_speech.audio, paused_speech.audio[:-37]):
        env = Envelope(x)
        end = len(x) / 16000
        for t0, t1 in ((0.0, 0.3), (1.2345, 2.0), (end - 0.1, end + 0.05), (0.5, 0.5)):
            want_origin, want = fine_levels(x, t0, t1, 0.005, 0.01)
            origin, got = env.fine_levels(t0, t1)
            assert origin == want_origin and got.shape == want.shape
            assert np.allclose(got, want, atol=1e-3)


@pytest.fixture(scope="module")
def connected_speech():
    return synthesize("He polished the great lens and watched the ships pass through the "
                      "narrow channel.", voice="en-us", rate_wpm=165, lead_in_s=0.3, tail_s=0.3)


def test_dips_move_only_free_boundaries_and_only_within_reach(connected_speech):
    w = connected_speech.words
    shift = np.resize([0.03, -0.03, 0.05, -0.05], len(w) - 1)
    bounds = np.array([b.start for b in w[1:]]) + shift
    starts = np.concatenate([[w[0].start], bounds])
    ends = np.concatenate([bounds, [w[-1].end]])
    fixed = np.arange(len(w) - 1) % 3 == 0
    options = RefineOptions()
    s, e = snap_to_dips(starts, ends, fixed, connected_speech.audio, options)
    assert np.array_equal(s[1:][fixed], starts[1:][fixed]) and np.array_equal(e[:-1][fixed], ends[:-1][fixed])
    free = ~fixed
    assert np.all(np.abs(s[1:][free] - bounds[free]) <= options.dip_reach_s + options.dip_window_s)
    assert np.all(np.abs(e[:-1][free] - bounds[free]) <= options.dip_reach_s + options.dip_window_s)
    assert s[0] == starts[0] and e[-1] == ends[-1]
    assert np.all(e - s >= options.min_word_s - 1e-9) and np.all(s[1:] >= e[:-1] - 1e-9)


def test_a_boundary_near_a_stop_closure_moves_into_it(connected_speech):
    """Word-initial stops are silent closures in espeak-ng's audio (the word starts at the
    burst): a boundary placed near one lands in the closure, the quietest stretch around it."""
    x, w = connected_speech.audio, connected_speech.words
    hop = RefineOptions().dip_hop_s
    checked = 0
    for i in range(len(w) - 1):
        gap = w[i + 1].start - w[i].end
        if not 0.01 < gap < RefineOptions().min_pause_s:  # a closure too short to be a pause
            continue
        a, b = int(w[i].end * 16000), int(w[i + 1].start * 16000)
        if np.max(np.abs(x[a:b])) > 1e-3 * np.max(np.abs(x)):
            continue
        for offset in (-0.04, 0.04):
            t = w[i + 1].start + offset
            starts = np.array([w[i].start, t])
            ends = np.array([t, w[i + 1].end])
            s, e = snap_to_dips(starts, ends, np.array([False]), x)
            assert w[i].end - hop <= e[0] <= s[1] <= w[i + 1].start + hop
        checked += 1
    assert checked >= 1


def test_onset_costs_are_low_in_pauses_and_high_in_speech(paused_speech):
    """The DTW's cost of starting a word at each 20 ms frame: 0..scale, low where the signal is
    at its floor (the pauses `speech_spans` finds), high inside speech."""
    x = paused_speech.audio
    n = int(paused_speech.duration / 0.02)
    cost = onset_costs(x, 0.0, n, 2.0)
    assert cost.shape == (n,) and cost.min() >= 0.0 and cost.max() == pytest.approx(2.0)
    t = np.arange(n) * 0.02
    spans = speech_spans(x, 0.0, paused_speech.duration)
    inside = np.zeros(n, bool)
    for a, b in spans:
        inside |= (t >= a + 0.05) & (t < b - 0.05)
    assert np.median(cost[inside]) > 4 * np.median(cost[~inside]) + 0.1
    assert np.array_equal(onset_costs(x, 0.5, 10, 1.0), onset_costs(x, 0.5, 10, 1.0))
    assert onset_costs(x[:100], 0.0, 5, 1.0).tolist() == [0.0] * 5  # shorter than one frame


@pytest.mark.parametrize("n", [1, 2, 3, 8, 751])
def test_percentile_equals_numpy(paused_speech, n):
    """The onset costs' floor: numpy's default percentile, bit for bit, on real levels (ties
    included) and on random values, for the quantiles the options allow."""
    db = Envelope(paused_speech.audio).db.astype(np.float64)
    rng = np.random.default_rng(n)
    for x in (db[:n], np.round(db[-n:]), rng.standard_normal(n) * 20):
        for q in (0.0, 5.0, 12.5, 50.0, 99.0, 100.0):
            assert percentile(x, q) == np.percentile(x, q)


def test_calibration_and_evaluation_texts_are_disjoint():
    """Nothing is tuned on the evaluation sets: their texts appear in no calibration clip."""
    from bench.accuracy import datasets

    calibration = set(datasets.CALIBRATION_TEXTS) | set(datasets.EXTRA_CALIBRATION_TEXTS)
    assert not calibration & set(datasets.EVALUATION_TEXTS)
    assert not calibration & set(datasets.EVALUATION_TEXTS_B)
    assert not set(datasets.EVALUATION_TEXTS) & set(datasets.EVALUATION_TEXTS_B)


def test_real_texts_are_spelled_as_the_aligner_dictionary_spells_them():
    from bench.accuracy.datasets import _aligner_text

    assert (_aligner_text('the Gutenberg, or "forty-two line Bible" -- I\'m sure.')
            == "the gutenberg or forty two line bible i'm sure")


def test_real_clips_at_other_rates_are_resampled_to_16_khz(tmp_path):
    """LJSpeech's 22.05 kHz clips: same duration and tone at 16 kHz."""
    import soundfile as sf

    from bench.accuracy.datasets import _load_real

    t = np.arange(22050 * 2) / 22050
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 22050)
    x = _load_real(tmp_path / "a.wav")
    assert x.dtype == np.float32 and len(x) == 32000
    spectrum = np.abs(np.fft.rfft(x[4000:-4000]))
    assert abs(np.argmax(spectrum) * 16000 / len(x[4000:-4000]) - 440) < 2


@pytest.fixture(scope="module")
def noisy_speech():
    a = synthesize("Seventeen ships left the harbour at dawn.", voice="en-gb", rate_wpm=190,
                   lead_in_s=0.6, seed=3, noise_snr_db=20)
    b = synthesize("Nobody saw them again.", voice="en-us+f3", seed=4, noise_snr_db=20, tail_s=0.4)
    return concatenate([a, b], 0.7)


def test_compiled_refinement_equals_the_numpy_formulation(paused_speech, connected_speech,
                                                           noisy_speech):
    """`kernels.boundaries` against the numpy code it replaced (tests/refine_reference.py), on
    real speech with boundaries scattered around the true ones, as the DTW leaves them."""
    from tests import refine_reference as ref

    rng = np.random.default_rng(0)
    options = [RefineOptions(), RefineOptions(speech_db=12.0, min_pause_s=0.1, reach_s=0.1),
               RefineOptions(dip_hop_s=0.01, dip_window_s=0.02, dip_tolerance_db=1.0)]
    cases = 0
    for clip in (paused_speech, connected_speech, noisy_speech):
        x, w = clip.audio, clip.words
        for opts in options:
            for t0, t1 in ((0.0, clip.duration), (0.35, clip.duration - 0.4), (1.0, 1.01)):
                np.testing.assert_array_equal(speech_spans(x, t0, t1, opts),
                                              ref.speech_spans(x, t0, t1, opts))
            spans = speech_spans(x, 0.0, clip.duration, opts)
            for _ in range(20):
                jitter = rng.normal(0.0, 0.06, len(w) + 1)
                bounds = np.sort(np.clip(np.array([v.start for v in w] + [w[-1].end]) + jitter,
                                         0.0, clip.duration))
                starts, ends = bounds[:-1], bounds[1:]
                got = snap_words(starts, ends, spans, opts)
                want = ref.snap_words(starts, ends, spans, opts)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                fixed = rng.random(len(w) - 1) < 0.3
                got = snap_to_dips(starts, ends, fixed, x, opts)
                want = ref.snap_to_dips(starts, ends, fixed, x, opts)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                cases += 1
    assert cases == 180
    # inputs stay untouched (the numpy code copied them)
    s0, e0 = np.array([0.1, 0.5]), np.array([0.5, 0.9])
    snap_words(s0, e0, np.array([[0.0, 0.3], [0.6, 1.0]]))
    snap_to_dips(s0, e0, np.array([False]), connected_speech.audio)
    assert s0.tolist() == [0.1, 0.5] and e0.tolist() == [0.5, 0.9]


def test_a_run_of_one_model_keeps_the_other_models_sections(tmp_path):
    from bench.accuracy.report import BEGIN, END, keep_other_models

    old = "\n".join([BEGIN, "Regenerate: ... Measured 2026-12-01 at commit abc1234, ...", "",
                     "### tiny.en", "", "#### Set", "| old tiny row |", "",
                     "### base", "", "#### Set", "| base row |", "", END, "after"])
    path = tmp_path / "benchmarks.md"
    path.write_text(old)
    new = "Regenerate: ...\n\n### tiny.en\n\nMeasured 2026-12-03 at commit def5678.\n\n| new tiny row |"
    out = keep_other_models(new, path)
    assert "| new tiny row |" in out and "| old tiny row |" not in out
    base = out[out.index("### base"):]
    assert "Measured 2026-12-01 at commit abc1234." in base and "| base row |" in base
    assert keep_other_models(new, tmp_path / "missing.md") == new


def test_a_run_of_the_second_model_keeps_the_order_and_each_models_own_peers(tmp_path):
    """Rewriting base alone leaves tiny.en's section first and untouched, and tiny.en's peer
    rows (measured on tiny.en's weights) never land in base's table."""
    from bench.accuracy.report import BEGIN, END, keep_other_models, keep_peer_rows

    path = tmp_path / "benchmarks.md"
    path.write_text("\n".join([
        "before", BEGIN, "Regenerate: ...", "",
        "### tiny.en", "", "Measured 2026-12-03 at commit abc1234.", "", "#### Set", "",
        "| system | x |", "|---|---|", "| lightning-align tiny | 1 |", "| faster-whisper | 2 |", "",
        "### base", "", "Measured 2026-12-01 at commit abc1234.", "", "#### Set", "",
        "| system | x |", "|---|---|", "| lightning-align base old | 3 |", "", END, "after"]))
    new = ("Regenerate: ...\n\n### base\n\nMeasured 2026-12-04 at commit def5678.\n\n#### Set\n\n"
           "| system | x |\n|---|---|\n| lightning-align base new | 4 |")
    out = keep_other_models(keep_peer_rows(new, path), path)
    tiny, base = out.index("### tiny.en"), out.index("### base")
    assert tiny < base
    assert "| faster-whisper | 2 |" in out[tiny:base] and "faster-whisper" not in out[base:]
    assert "| lightning-align base new | 4 |" in out[base:] and "base old" not in out
    assert "Measured 2026-12-03 at commit abc1234." in out[tiny:base]
