"""The (tokens x frames) alignment matrix openai-whisper builds from cross-attention weights.

openai-whisper (`timing.find_alignment`) turns the alignment heads' attention weights into the
matrix whose negation DTW walks: standardize with `torch.std_mean(w, dim=-2,
unbiased=False)` -- dim -2 is the *token* axis, so each (head, frame) column is standardized
over tokens -- then median-filter along frames, then average the heads. This does the three
steps in two passes over the weights, one (token) row at a time, so nothing the size of the
input is ever written back to memory. numba has no float16, and numpy's float16 -> float32 cast
takes longer than this whole function, so float16 input is passed as its bit patterns and
converted inside the loops (one vcvtph2ps per 8 values where the CPU has F16C).
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .median import _check_width, _median_network, _median_row, _reflect_edges

__all__ = ["alignment_matrix", "token_contrast"]


def _native_half_conversion() -> bool:
    """Can LLVM convert float16 -> float32 in hardware for numba's compilation target?

    Without hardware support LLVM would call a compiler-rt helper that numba's JIT may not be
    able to link, so the bit-manipulation fallback is used instead.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return True
    if machine not in ("x86_64", "amd64"):
        return False
    if numba.config.CPU_NAME:  # an explicit (e.g. portable "generic") numba target
        return "+f16c" in (numba.config.CPU_FEATURES or "")
    try:
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except Exception:  # any doubt: take the always-available path
        return False


# Read by the kernels at compile time; numba keys its on-disk cache on the CPU model and
# features, so a cached kernel never runs on a CPU it was not compiled for.
_NATIVE_HALF = _native_half_conversion()


@intrinsic
def _fpext_half(typingctx, bits):
    """float16 bit pattern (uint16) -> float32 via LLVM's fpext (vcvtph2ps / fcvt)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret a uint32 as the float32 with that bit pattern."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, nogil=True, inline="always")
def _half_to_float32_soft(bits):
    """Exact float16 -> float32 from the bit pattern, branch-free so loops still vectorize."""
    h = np.uint32(bits)
    em = h & np.uint32(0x7FFF)
    # Re-bias the exponent (15 -> 127); inf/NaN (exponent 31) need it all ones instead.
    b = (em << np.uint32(13)) + np.uint32(0x38000000)
    b += np.uint32(0x38000000) if em >= np.uint32(0x7C00) else np.uint32(0)
    v = _bits_as_float32(np.uint32(b))
    # Zero and subnormals are mantissa * 2**-24, computed in floats so that a
    # flush-to-zero/denormals-are-zero FPU mode can't turn small weights into 0.
    small = np.float32(em) * np.float32(2.0**-24)
    v = small if em < np.uint32(0x400) else v
    return -v if h & np.uint32(0x8000) else v


@njit(cache=True, nogil=True, inline="always")
def _half_to_float32(bits):
    if _NATIVE_HALF:
        return _fpext_half(bits)
    return _half_to_float32_soft(bits)


def _load(a, i):
    """a[i] as float32, where a holds float32 values or float16 bit patterns (uint16)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_load)
def _load_impl(a, i):
    if isinstance(a, types.Array) and a.dtype == types.uint16:
        return lambda a, i: _half_to_float32(a[i])
    if isinstance(a, types.Array) and a.dtype == types.float32:
        return lambda a, i: a[i]
    return None


# error_model="numpy": Python's ZeroDivisionError check on every float division would keep
# the standardization loop scalar (measured 6x slower); no divisor here can be 0 anyway.
@njit(cache=True, nogil=True, error_model="numpy")
def _alignment(w, width, net_lo, net_hi, net_mode, head_w, total, out):
    """Fill out (tokens x frames) from w (heads, tokens, frames), float32 or float16 bits
    (uint16), heads weighted by head_w and the sum divided by total; returns False if the
    weights hold NaN or inf."""
    n_heads, n_tokens, n_frames = w.shape

    # Pass 1: per (head, frame) mean and std over tokens. Accumulate in float64 (as torch does
    # on CPU) around the first token's value, which keeps the one-pass variance from cancelling
    # when a column is nearly constant.
    mean = np.empty((n_heads, n_frames), np.float32)
    scale = np.empty((n_heads, n_frames), np.float32)
    shift = np.empty(n_frames, np.float64)
    s1 = np.empty(n_frames, np.float64)
    s2 = np.empty(n_frames, np.float64)
    finite = True
    for h in range(n_heads):
        s1[:] = 0.0
        s2[:] = 0.0
        src = w[h, 0]
        for f in range(n_frames):
            shift[f] = _load(src, f)
        for t in range(n_tokens):
            src = w[h, t]
            for f in range(n_frames):
                d = np.float64(_load(src, f)) - shift[f]
                s1[f] += d
                s2[f] += d * d
        for f in range(n_frames):
            mu = s1[f] / n_tokens
            var = max(s2[f] / n_tokens - mu * mu, 0.0)
            m = shift[f] + mu
            sd = np.sqrt(var)
            # Any NaN/inf weight leaves a NaN/inf here, so this is the whole input check.
            finite &= (m - m) == 0 and (sd - sd) == 0
            mean[h, f] = np.float32(m)
            sd32 = np.float32(sd)
            # A constant column would give 0/0 = NaN (as in openai-whisper) and poison the
            # median and the DTW; dividing by inf makes it 0 instead.
            scale[h, f] = sd32 if sd32 > 0 else np.float32(np.inf)
    if not finite:
        return False

    # Pass 2: for each token, standardize each head's row (float32, as torch does), median
    # filter it and add it into the head sum.
    pad = width // 2
    filtered = width > 1 and n_frames > pad
    buf = np.empty(n_frames + 2 * pad, np.float32)
    core = buf[pad : pad + n_frames]  # a view keeps the index provably >= 0 (vectorizes)
    med = np.empty(n_frames, np.float32)
    acc = np.empty(n_frames, np.float32)
    lanes = np.empty((width, n_frames), np.float32)
    for t in range(n_tokens):
        acc[:] = 0.0
        for h in range(n_heads):
            src = w[h, t]
            mh = mean[h]
            sh = scale[h]
            for f in range(n_frames):
                core[f] = (_load(src, f) - mh[f]) / sh[f]
            if filtered:
                _reflect_edges(buf, n_frames, pad)
                _median_row(buf, med, n_frames, width, net_lo, net_hi, net_mode, lanes)
                for f in range(n_frames):
                    acc[f] += head_w[h] * med[f]
            else:
                for f in range(n_frames):
                    acc[f] += head_w[h] * core[f]
        o = out[t]
        # Sum heads in order, then divide: with unit weights the same float32 result as
        # numpy's mean(axis=0) (1 * x is x exactly, and total is the head count).
        for f in range(n_frames):
            o[f] = acc[f] / total
    return True


def alignment_matrix(weights: np.ndarray, width: int,
                     head_weights: np.ndarray | None = None) -> np.ndarray:
    """openai-whisper's alignment matrix: standardize, median filter, average over heads.

    weights: (heads, tokens, frames) cross-attention weights of the alignment heads (after the
    softmax over frames), float16 or float32 (float64 is rounded to float32 first).
    width: odd median filter width in frames (openai-whisper's `medfilt_width`, default 7).

    Each (head, frame) column is standardized over the tokens axis ((w - mean) / std with
    ddof=0, statistics accumulated in float64 and rounded to float32, arithmetic in float32),
    exactly the axis openai-whisper and mlx-whisper use; each (head, token) row is then
    median-filtered over frames like `median_filter`; heads are averaged, or with
    `head_weights` (one non-negative weight per head, positive sum) summed in head order with
    those weights and divided by the weights' float32 sum.
    Returns the (tokens, frames) float32 matrix; DTW runs on its negation. openai-whisper
    then drops the SOT-sequence and EOT rows -- that slicing is the caller's.

    Differs from openai-whisper only where it would produce NaN: a column whose tokens all have
    the same weight (std 0, e.g. a single token) standardizes to 0 instead of 0/0.
    Raises ValueError for a wrong ndim, an empty array, an even or non-positive width, an
    unsupported dtype, NaN/inf weights, or head weights that do not fit.
    """
    w = np.asarray(weights)
    width = _check_width(width)
    if w.ndim != 3:
        raise ValueError(
            f"alignment_matrix needs (heads, tokens, frames) weights, got shape {w.shape}"
        )
    if w.size == 0:
        raise ValueError(f"alignment_matrix got empty weights of shape {w.shape}")
    if w.dtype == np.float16:
        w = np.ascontiguousarray(w).view(np.uint16)
    elif w.dtype in (np.float32, np.float64):
        w = np.ascontiguousarray(w, dtype=np.float32)
    else:
        raise ValueError(f"alignment_matrix needs float16/32/64 weights, got dtype {w.dtype}")
    if head_weights is None:
        hw = np.ones(w.shape[0], np.float32)
    else:
        hw = np.asarray(head_weights, np.float32).reshape(-1)
        if len(hw) != w.shape[0] or not np.all(np.isfinite(hw)) or np.any(hw < 0) or hw.sum() <= 0:
            raise ValueError(f"alignment_matrix: head_weights {hw.tolist()} for {w.shape[0]} "
                             "heads; give one finite weight >= 0 per head, with a positive sum")
    out = np.empty(w.shape[1:], np.float32)
    lo, hi, mode = _median_network(width)
    if not _alignment(w, width, lo, hi, mode, hw, np.float32(hw.sum()), out):
        raise ValueError("alignment_matrix weights contain NaN or inf")
    return out


@njit(cache=True, nogil=True)
def _contrast(matrix, rows, amount, out):
    """`token_contrast` into `out` (a copy of `matrix`): the rows listed in `rows` (ascending)
    gain `amount` x their excess over each listed row next to them."""
    for k in range(len(rows)):
        r = rows[k]
        o = out[r]
        m = matrix[r]
        if k > 0 and rows[k - 1] == r - 1:
            p = matrix[r - 1]
            for f in range(matrix.shape[1]):
                o[f] += amount * (m[f] - p[f])
        if k + 1 < len(rows) and rows[k + 1] == r + 1:
            n = matrix[r + 1]
            for f in range(matrix.shape[1]):
                o[f] += amount * (m[f] - n[f])


def token_contrast(matrix: np.ndarray, rows: np.ndarray, amount: float) -> np.ndarray:
    """Sharpen an alignment matrix (tokens x frames) along its token axis.

    Each row r listed in `rows` (ascending row indices: a segment's text tokens) becomes
    m[r] + amount * sum over its listed neighbours q = r - 1, r + 1 of (m[r] - m[q]), read from
    the input, so a token scores highest at the frames it is attended *more than the tokens
    beside it*, not merely where it is attended; rows not listed (timestamps, the row after
    the text) neither change nor count as neighbours. amount = 0 returns a copy.
    Returns a new float32 matrix; the input is not modified.
    """
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    r = np.ascontiguousarray(rows, dtype=np.int64)
    if m.ndim != 2:
        raise ValueError(f"token_contrast needs a (tokens, frames) matrix, got shape {m.shape}")
    if r.ndim != 1 or (len(r) and (r.min() < 0 or r.max() >= m.shape[0]
                                   or np.any(np.diff(r) <= 0))):
        raise ValueError(f"token_contrast: rows must be ascending indices below {m.shape[0]}")
    out = m.copy()
    if amount != 0 and len(r) > 1:
        _contrast(m, r, np.float32(amount), out)
    return out
