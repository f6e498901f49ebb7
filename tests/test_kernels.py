"""Kernels against slow, obviously-correct references (scipy, numpy, a plain-Python DTW)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numba
from numba import njit

from lightning_align.kernels import alignment_matrix, dtw, dtw_batch, median_filter, token_contrast
from lightning_align.kernels.activations import gelu, softmax_rows
from lightning_align.kernels.matrix import _half_to_float32, _half_to_float32_soft
from lightning_align.kernels.median import _median_network

WIDTHS = (1, 3, 5, 7, 9, 11)
HYPO = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- references


def median_reference(x: np.ndarray, width: int) -> np.ndarray:
    pad = width // 2
    if width == 1 or x.shape[-1] <= pad:
        return x.copy()
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    size = (1,) * (x.ndim - 1) + (width,)
    return scipy.ndimage.median_filter(padded, size=size)[..., pad : pad + x.shape[-1]]


def dtw_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai-whisper's dtw_cpu + backtrace, transcribed loop for loop (float64 input, float32
    cost table, trace 0 = diagonal, 1 = up, 2 = left)."""
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int64)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        elif t == 2:
            j -= 1
        else:
            raise AssertionError("unexpected trace value")
    path = np.array(path[::-1], dtype=np.int64)
    return path[:, 0], path[:, 1]


def alignment_reference(w: np.ndarray, width: int) -> np.ndarray:
    w = w.astype(np.float32)
    w64 = w.astype(np.float64)
    mean = w64.mean(axis=1, keepdims=True).astype(np.float32)
    std = w64.std(axis=1, keepdims=True).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (w - mean) / std
    z = np.where(std == 0, np.float32(0), z)  # the documented deviation from openai (0/0)
    return median_reference(z, width).mean(axis=0)


def assert_path_equal(got, want):
    assert got[0].dtype == np.int64 and got[1].dtype == np.int64
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def assert_valid_path(ti: np.ndarray, tj: np.ndarray, n: int, m: int):
    assert len(ti) == len(tj) >= max(n, m)
    assert (ti[0], tj[0]) == (0, 0)
    assert (ti[-1], tj[-1]) == (n - 1, m - 1)
    di, dj = np.diff(ti), np.diff(tj)
    assert np.all((di >= 0) & (di <= 1) & (dj >= 0) & (dj <= 1))
    assert np.all(di + dj >= 1)


# ---------------------------------------------------------------- median_filter

SHAPES = [
    (1,), (2,), (3,), (4,), (5,), (6,), (13,), (3, 1), (2, 7), (4, 33), (2, 3, 64), (2, 2, 2, 19)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", WIDTHS)
def test_median_matches_scipy(width, dtype):
    rng = np.random.default_rng(width)
    for shape in SHAPES:
        for x in (
            rng.standard_normal(shape),
            rng.integers(-2, 3, shape),  # many ties
            np.where(  # +-inf sprinkled in
                rng.random(shape) < 0.2, np.inf * rng.choice([-1, 1], shape), rng.random(shape)
            ),
        ):
            x = x.astype(dtype)
            got = median_filter(x, width)
            assert got.dtype == x.dtype and got.shape == x.shape
            np.testing.assert_array_equal(got, median_reference(x, width), err_msg=f"{shape}")


def test_median_openai_sizes():
    x = np.random.default_rng(0).standard_normal((8, 100, 1500)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(x, 7), median_reference(x, 7))


@pytest.mark.parametrize("width", (3, 5, 7, 9, 11, 13, 15, 17))
def test_median_network_on_every_01_input(width):
    # 0-1 principle: a comparator network selects the median of every input iff it does so
    # for every 0/1 input. Each row is one input; its middle output sees exactly that window.
    pad = width // 2
    rows = np.array(list(itertools.product((0.0, 1.0), repeat=width)), dtype=np.float32)
    got = median_filter(rows, width)[:, pad]
    np.testing.assert_array_equal(got, (rows.sum(axis=1) > pad).astype(np.float32))


def test_median_network_prunes_to_few_exchanges():
    for width in (9, 11, 31):
        lo, hi, mode = _median_network(width)
        assert len(lo) == len(hi) == len(mode) > 0
        assert np.all(lo < hi) and np.all(hi < width)


def test_median_every_permutation_of_7():
    perms = np.array(list(itertools.permutations(range(7))), dtype=np.float64)
    np.testing.assert_array_equal(median_filter(perms, 7)[:, 3], np.full(len(perms), 3.0))


def test_median_short_axis_returned_unchanged():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for width in (7, 9):  # 3 frames <= width // 2: openai returns x as is
        got = median_filter(x, width)
        np.testing.assert_array_equal(got, x)
        assert got is not x


def test_median_float16_and_noncontiguous():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 40)).astype(np.float16)
    np.testing.assert_array_equal(median_filter(x, 5), median_reference(x.astype(np.float32), 5))
    assert median_filter(x, 5).dtype == np.float16
    y = rng.standard_normal((40, 6))
    want = median_reference(np.ascontiguousarray(y.T), 7)
    np.testing.assert_array_equal(median_filter(y.T, 7), want)


def test_median_does_not_modify_input():
    x = np.random.default_rng(2).standard_normal((3, 50)).astype(np.float32)
    before = x.copy()
    median_filter(x, 7)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "x, width, match",
    [
        (np.zeros(10), 4, "odd"),
        (np.zeros(10), 0, "odd"),
        (np.zeros(10), -3, "odd"),
        (np.zeros(10), 7.0, "int"),
        (np.zeros(10), True, "int"),
        (np.zeros((3, 0)), 7, "empty"),
        (np.float32(1.0), 7, "at least one axis"),
        (np.arange(10), 7, "dtype"),
        (np.array([1.0, np.nan, 2.0, 3.0, 4.0]), 3, "NaN"),
        (np.array([1.0, np.nan]), 1, "NaN"),
    ],
)
def test_median_rejects_bad_input(x, width, match):
    with pytest.raises(ValueError, match=match):
        median_filter(x, width)


@HYPO
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=24),
        elements=st.floats(allow_nan=False, allow_infinity=True, width=32),
    ),
    width=st.sampled_from([1, 3, 5, 7, 9, 11, 13]),
)
def test_median_property_matches_scipy(x, width):
    np.testing.assert_array_equal(median_filter(x, width), median_reference(x, width))


# ---------------------------------------------------------------- dtw

DTW_SHAPES = [
    (1, 1), (1, 2), (2, 1), (1, 17), (17, 1), (2, 2), (3, 7), (7, 3), (12, 40), (40, 12), (25, 25)
]


@pytest.mark.parametrize("shape", DTW_SHAPES)
def test_dtw_matches_openai_reference(shape):
    rng = np.random.default_rng(sum(shape))
    cases = [
        rng.standard_normal(shape).astype(np.float32),
        rng.standard_normal(shape),  # float64 path
        rng.integers(-2, 3, shape).astype(np.float32),  # ties everywhere
        rng.integers(-1, 2, shape),  # integer input, ties
        np.zeros(shape, np.float32),  # all ties
        (rng.standard_normal(shape) * 1e6).astype(np.float32),
    ]
    for x in cases:
        assert_path_equal(dtw(x), dtw_reference(x))


def test_dtw_float32_and_float64_agree_on_float32_values():
    # float32 input runs in float32; openai widens to float64 first. Same path either way.
    rng = np.random.default_rng(5)
    for _ in range(30):
        x = (rng.standard_normal((30, 60)) * rng.choice([1e-3, 1, 1e3])).astype(np.float32)
        assert_path_equal(dtw(x), dtw(x.astype(np.float64)))


def test_dtw_long_matrix():
    x = np.random.default_rng(6).standard_normal((60, 300)).astype(np.float32)
    ti, tj = dtw(x)
    assert_path_equal((ti, tj), dtw_reference(x))
    assert_valid_path(ti, tj, 60, 300)


@HYPO
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20),
        elements=st.floats(-1e6, 1e6, allow_nan=False, width=32),
    )
)
def test_dtw_property_path(x):
    n, m = x.shape
    ti, tj = dtw(x)
    assert_valid_path(ti, tj, n, m)
    assert_path_equal((ti, tj), dtw_reference(x))


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros(5), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((0, 4)), "empty"),
        (np.zeros((4, 0)), "empty"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or inf"),
        (np.array([[1.0, 2.0], [np.inf, 1.0]], np.float32), "NaN or inf"),
        (np.array([["a", "b"]]), "real-valued"),
    ],
)
def test_dtw_rejects_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        dtw(x)


@pytest.fixture(params=[1, 2], ids=["serial", "parallel"])
def numba_threads(request):
    """dtw_batch runs matrices in turn on one thread and packs them for prange on more."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


def test_dtw_batch_equals_dtw(numba_threads):
    rng = np.random.default_rng(7)
    shapes = [(1, 1), (1, 9), (9, 1), (5, 30), (30, 5), (17, 17), (40, 200), (3, 4)]
    f32 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mixed = [
        rng.standard_normal(s) if k % 2 else rng.integers(-1, 2, s).astype(np.float32)
        for k, s in enumerate(shapes)
    ]
    for costs in (f32, mixed, f32[3:4]):
        got = dtw_batch(costs)
        assert len(got) == len(costs)
        for g, c in zip(got, costs):
            assert_path_equal(g, dtw(c))
    assert dtw_batch([]) == []


def test_entry_costs_move_the_boundary_and_zero_costs_change_nothing(numba_threads):
    """An entry cost is paid when the path enters a marked row at a frame: the boundary goes to
    the cheap frame when the attention cannot tell; zero costs, or no marked row, give openai's
    path bit for bit; dtw_batch with entries equals dtw with each."""
    rng = np.random.default_rng(3)
    flat = rng.standard_normal((2, 10)) * 1e-3  # attention without an opinion
    cost = np.ones(10)
    cost[6] = 0.0
    ti, tj = dtw(flat, (np.array([False, True]), cost))
    assert tj[np.argmax(ti == 1)] == 6
    # a clear attention boundary (row 1 from frame 3) outweighs a small cost
    clear = np.zeros((2, 10))
    clear[0, :3], clear[1, 3:] = -1.0, -1.0
    ti, tj = dtw(clear + flat, (np.array([False, True]), 0.2 * cost))
    assert tj[np.argmax(ti == 1)] == 3
    costs = [rng.standard_normal(s) for s in [(5, 30), (8, 40), (3, 9), (40, 200)]]
    for c in costs:
        assert_path_equal(dtw(c, (np.ones(len(c), bool), np.zeros(c.shape[1]))), dtw(c))
        assert_path_equal(dtw(c, (np.zeros(len(c), bool), rng.random(c.shape[1]))), dtw(c))
    entries = [(rng.random(len(c)) < 0.5, rng.random(c.shape[1])) for c in costs]
    entries[2] = None
    for g, c, e in zip(dtw_batch(costs, entries), costs, entries):
        assert_path_equal(g, dtw(c, e))
    with pytest.raises(ValueError, match=r"entries\[1\].*shape"):
        dtw_batch(costs[:2], [None, (np.ones(3, bool), np.ones(40))])
    with pytest.raises(ValueError, match="NaN or inf"):
        dtw(costs[0], (np.ones(5, bool), np.full(30, np.nan)))


def test_dtw_batch_names_the_bad_matrix(numba_threads):
    good = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"costs\[2\].*NaN or inf"):
        dtw_batch([good, good, np.full((2, 2), np.nan, np.float32)])
    with pytest.raises(ValueError, match=r"costs\[1\].*2-D"):
        dtw_batch([good, np.zeros(3)])


# ---------------------------------------------------------------- alignment_matrix


@pytest.mark.parametrize("width", (1, 3, 7, 9))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_alignment_matches_numpy_reference(width, dtype):
    rng = np.random.default_rng(width)
    for shape in [(1, 2, 1), (2, 3, 2), (3, 5, 4), (2, 7, 9), (6, 20, 150)]:
        w = rng.random(shape).astype(dtype)
        got = alignment_matrix(w, width)
        assert got.dtype == np.float32 and got.shape == shape[1:]
        np.testing.assert_allclose(got, alignment_reference(w, width), rtol=1e-5, atol=1e-5)


def test_alignment_openai_sizes_softmax_weights():
    rng = np.random.default_rng(8)
    scores = rng.standard_normal((6, 40, 1500)).astype(np.float32) * 3
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    for dtype in (np.float32, np.float16):
        wd = w.astype(dtype)
        want = alignment_reference(wd, 7)
        np.testing.assert_allclose(alignment_matrix(wd, 7), want, rtol=1e-5, atol=1e-5)
    # float16 is decoded exactly inside the kernel:
    w16 = w.astype(np.float16)
    want = alignment_matrix(w16.astype(np.float32), 7)
    np.testing.assert_array_equal(alignment_matrix(w16, 7), want)


def test_softmax_weights_raised_to_a_power():
    """The power is taken inside the exponent: exp(p (s - n)) is (exp(s - n)) ** p to float32
    rounding, and p = 1 gives the default's softmax weights bit for bit."""
    from lightning_align.kernels.onepass import softmax_weights

    rng = np.random.default_rng(12)
    raw = rng.standard_normal((5, 6, 300)).astype(np.float32) * 4
    scores = (raw - raw.max(-1, keepdims=True)).astype(np.float16)
    log_norm = np.log(np.exp(scores.astype(np.float32)).sum(-1)).astype(np.float32)
    heads = np.array([4, 0, 2])
    w = softmax_weights(scores, log_norm, heads)
    want = np.exp(scores.astype(np.float32) - log_norm[..., None])[:, heads].transpose(1, 0, 2)
    np.testing.assert_allclose(w, want, rtol=1e-6)  # numba's exp and numpy's: a few ulp
    np.testing.assert_array_equal(softmax_weights(scores, log_norm, heads, 1.0), w)
    for p in (0.5, 0.7, 2.0):
        np.testing.assert_allclose(softmax_weights(scores, log_norm, heads, p),
                                   w.astype(np.float64) ** p, rtol=2e-6, atol=1e-30)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="power"):
            softmax_weights(scores, log_norm, heads, bad)


def test_alignment_constant_columns_are_zero():
    w = np.ones((2, 4, 10), np.float32)
    np.testing.assert_array_equal(alignment_matrix(w, 7), np.zeros((4, 10), np.float32))
    one_token = np.random.default_rng(9).random((3, 1, 12)).astype(np.float32)
    np.testing.assert_array_equal(alignment_matrix(one_token, 3), np.zeros((1, 12), np.float32))


def test_alignment_head_weights_weight_each_heads_filtered_matrix():
    """Weighted heads: the sum of each head's own (standardized, filtered) matrix times its
    weight, over the weights' sum; unit weights are the plain average, bit for bit."""
    rng = np.random.default_rng(11)
    w = rng.random((4, 30, 200)).astype(np.float16)
    np.testing.assert_array_equal(alignment_matrix(w, 7, [1.0] * 4), alignment_matrix(w, 7))
    hw = np.array([0.5, 2.0, 0.0, 1.25], np.float32)
    want = sum(hw[h] * alignment_matrix(w[h : h + 1], 7) for h in range(4) if hw[h]) / hw.sum()
    np.testing.assert_array_equal(alignment_matrix(w, 7, hw), want)
    for bad in ([1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [0.0] * 4, [np.nan, 1.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="head_weights"):
            alignment_matrix(w, 7, bad)


def test_alignment_feeds_dtw():
    w = np.random.default_rng(10).random((4, 12, 80)).astype(np.float16)
    ti, tj = dtw(-alignment_matrix(w, 7))
    assert_valid_path(ti, tj, 12, 80)


@pytest.mark.parametrize(
    "w, width, match",
    [
        (np.zeros((3, 4)), 7, "heads, tokens, frames"),
        (np.zeros((2, 0, 5)), 7, "empty"),
        (np.zeros((2, 3, 5)), 6, "odd"),
        (np.zeros((2, 3, 5), np.int32), 7, "dtype"),
        (np.array([[[0.5, np.nan], [0.1, 0.2]]], np.float32), 1, "NaN or inf"),
        (np.array([[[0.5, np.inf], [0.1, 0.2]]], np.float16), 3, "NaN or inf"),
        (np.array([[[0.5, 0.3], [0.1, -np.inf]]]), 3, "NaN or inf"),
    ],
)
def test_alignment_rejects_bad_input(w, width, match):
    with pytest.raises(ValueError, match=match):
        alignment_matrix(w, width)



def _contrast_reference(m, rows, amount):
    """token_contrast written out: each listed row plus amount x (row - listed neighbour)."""
    listed = set(int(r) for r in rows)
    out = m.astype(np.float64).copy()
    for r in listed:
        for q in (r - 1, r + 1):
            if q in listed:
                out[r] += amount * (m[r].astype(np.float64) - m[q])
    return out


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4, 5], [1, 2, 3, 5, 6], [2], []])
@pytest.mark.parametrize("amount", [0.15, 1.0])
def test_token_contrast_matches_reference(rows, amount):
    m = alignment_matrix(np.random.default_rng(12).random((3, 8, 40)).astype(np.float32), 7)
    before = m.copy()
    out = token_contrast(m, np.array(rows), amount)
    np.testing.assert_allclose(out, _contrast_reference(m, rows, amount), rtol=0, atol=1e-5)
    assert np.array_equal(m, before)  # the input is left alone
    unlisted = [r for r in range(8) if r not in rows]
    assert np.array_equal(out[unlisted], m[unlisted])
    assert np.array_equal(token_contrast(m, np.array(rows), 0.0), m)


@pytest.mark.parametrize("m, rows, match", [
    (np.zeros(5, np.float32), [0], "tokens, frames"),
    (np.zeros((3, 5), np.float32), [0, 3], "ascending indices below 3"),
    (np.zeros((3, 5), np.float32), [1, 0], "ascending"),
    (np.zeros((3, 5), np.float32), [-1, 0], "ascending"),
])
def test_token_contrast_rejects_bad_input(m, rows, match):
    with pytest.raises(ValueError, match=match):
        token_contrast(m, np.array(rows), 0.5)

@njit
def _decode_soft(bits, out):
    for k in range(bits.shape[0]):
        out[k] = _half_to_float32_soft(bits[k])


@njit
def _decode(bits, out):
    for k in range(bits.shape[0]):
        out[k] = _half_to_float32(bits[k])


@pytest.mark.parametrize("decode", [_decode_soft, _decode], ids=["soft", "native-or-soft"])
def test_half_decoding_is_exact_for_every_bit_pattern(decode):
    bits = np.arange(2**16, dtype=np.uint16)
    want = bits.view(np.float16).astype(np.float32)
    got = np.empty(2**16, np.float32)
    decode(bits, got)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert np.isnan(got[nan]).all()


# ------------------------------------------------------ encoder activations


def test_softmax_rows_matches_scipy():
    """Rows of Whisper's encoder size (1500) and odd ones, large and negative scores: scipy's
    softmax in float64 within float32 rounding; in place, rows sum to 1."""
    rng = np.random.default_rng(0)
    for shape, spread in (((2, 3, 1500), 8.0), ((5, 7), 30.0), ((1, 1), 1.0), ((4, 3), 1e4)):
        x = (rng.standard_normal(shape) * spread).astype(np.float32)
        expected = scipy.special.softmax(x.astype(np.float64), axis=-1)
        out = softmax_rows(x)
        assert out is x
        np.testing.assert_allclose(out, expected, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_gelu_matches_exact_erf_gelu():
    """x * Phi(x) with scipy's erf in float64, over the range a GELU sees in Whisper."""
    x = np.linspace(-12, 12, 10_001, dtype=np.float32).reshape(1, 10_001)
    expected = x.astype(np.float64) * 0.5 * (1 + scipy.special.erf(x.astype(np.float64) / np.sqrt(2)))
    np.testing.assert_allclose(gelu(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [softmax_rows, gelu])
def test_activations_reject_what_they_would_misread(kernel):
    with pytest.raises(TypeError, match="float32"):
        kernel(np.zeros((3, 4), np.float64))
    with pytest.raises(TypeError, match="strided"):
        kernel(np.zeros((4, 3), np.float32).T)


def test_cached_kernels_are_dropped_when_any_kernel_source_changes(tmp_path, monkeypatch):
    """numba ties a cached kernel to its own file only; `drop_stale_cache` ties the whole cache
    to every kernel source, so an edit to one file never leaves another's stale code running."""
    from lightning_align.kernels import drop_stale_cache

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()

    def cached():
        (cache / "a.f-1.py311.nbi").write_bytes(b"index")
        (cache / "a.f-1.py311.1.nbc").write_bytes(b"code")
        (cache / "a.cpython-311.pyc").write_bytes(b"bytecode")

    cached()
    assert drop_stale_cache(tmp_path)  # no stamp yet: whatever is there may be stale
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", "kernel-sources.sha256"]
    cached()
    assert not drop_stale_cache(tmp_path)  # same sources: the cache stays
    assert len(list(cache.glob("*.nb[ic]"))) == 2
    (tmp_path / "b.py").write_text("y = 3\n")  # a kernel the cached one may call
    assert drop_stale_cache(tmp_path)
    assert not list(cache.glob("*.nb[ic]"))
    assert not drop_stale_cache(tmp_path)
