"""Read CTranslate2 (faster-whisper) Whisper models and convert them to MLX-Whisper weights.

`model.bin` layout (CTranslate2 spec version 6): u32 version, string spec name, u32 revision,
u32 variable count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte
count, raw bytes; then u32 alias count and (alias, target) string pairs. A string is a u16 length
(NUL included), the bytes, and the NUL.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from .checkpoints import check_dimensions, check_weights
from .errors import ModelError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelError(
                f"{self.path}: the file ends early (wanted {n} bytes at offset {self.pos} of "
                f"{len(self.data)}); it is truncated or not a CTranslate2 model. Copy it again."
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = self.take(self.u16())
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{self.path}: a variable name at offset {self.pos} is not UTF-8; "
                             "the file is corrupt.") from None


def read_model_bin(path: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` into numpy arrays (aliases resolved).

    bfloat16 variables are widened to float32; int8-quantized models are refused with a clear
    error because their scales are model-specific.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model file ({e.strerror}).") from None
    r = _Reader(data, path)
    version = r.u32()
    if version < 5 or version > 6:
        raise ModelError(
            f"{path}: unsupported CTranslate2 model version {version} (expected 5 or 6); it is not "
            "a faster-whisper model directory, or was written by an incompatible CTranslate2."
        )
    spec = r.string()
    if spec and "Whisper" not in spec:
        raise ModelError(f"{path}: the model spec is {spec!r}, not a Whisper model.")
    r.u32()  # revision
    count = r.u32()
    if count > 100_000:
        raise ModelError(f"{path}: implausible variable count {count}; the file is corrupt.")
    out: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        rank = r.u8()
        dims = [r.u32() for _ in range(rank)]
        dtype = r.u8()
        nbytes = r.u32()
        raw = r.take(nbytes)
        if dtype != _BF16 and dtype not in _DTYPES:
            raise ModelError(f"{path}: variable {name!r} has unknown dtype code {dtype}; the file "
                             "is corrupt or from a newer CTranslate2.")
        itemsize = 2 if dtype == _BF16 else np.dtype(_DTYPES[dtype]).itemsize
        # Python ints: a corrupt shape must not overflow into a size that happens to match.
        if nbytes != itemsize * math.prod(dims):
            raise ModelError(f"{path}: variable {name!r} has {nbytes} bytes for shape {dims} of "
                             f"{itemsize}-byte values; the file is corrupt.")
        if dtype == _BF16:
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, _DTYPES[dtype])
        out[name] = arr.reshape(dims)
    if r.pos < len(data):
        for _ in range(r.u32()):
            alias, target = r.string(), r.string()
            if target in out:
                out[alias] = out[target]
    return out


def _dims_from_vars(v: dict[str, np.ndarray], n_heads: tuple[int, int]) -> dict[str, int]:
    def count(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        return n

    emb = v["decoder/embeddings/weight"]
    return {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(v["encoder/conv1/weight"].shape[0]),
        "n_audio_head": n_heads[0],
        "n_audio_layer": count("encoder"),
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": n_heads[1],
        "n_text_layer": count("decoder"),
    }


def convert(model_dir: str | Path) -> tuple[dict[str, int], dict[str, np.ndarray], dict]:
    """Convert a CTranslate2 Whisper directory into (dims, mlx-whisper weights, config.json).

    Weight names follow `mlx_whisper.whisper.Whisper`, so the result loads into our model and
    into mlx-whisper alike. Arrays keep the file's dtype (float16 for faster-whisper models).
    """
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    except (OSError, ValueError) as e:
        raise ModelError(f"{cfg_path}: not valid JSON ({e}); restore the model's config.json.") from None
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_path}: holds a {type(config).__name__}, not a CTranslate2 config "
                         "object; restore the model's config.json.")
    bin_path = model_dir / "model.bin"
    v = read_model_bin(bin_path)
    try:
        dims, weights, config = _convert_vars(v, config)
    except KeyError as e:
        raise ModelError(f"{bin_path}: variable {e} is missing; this is not a complete "
                         "CTranslate2 Whisper model.") from None
    except (IndexError, ValueError, TypeError) as e:
        # misshapen variables (wrong rank, uneven fused projections)
        raise ModelError(f"{bin_path}: a variable has an unexpected shape ({e}); the file is "
                         "corrupt or not a Whisper model.") from None
    check_weights(check_dimensions(dims, bin_path), weights, bin_path)
    return dims, weights, config


def _convert_vars(v: dict[str, np.ndarray], config: dict) -> tuple[dict[str, int], dict, dict]:
    n_state = v["encoder/conv1/weight"].shape[0]
    n_text_state = v["decoder/embeddings/weight"].shape[1]
    # Older CT2 specs do not store head counts; Whisper always uses 64-dimensional heads.
    heads = tuple(int(v[f"{part}/num_heads"]) if f"{part}/num_heads" in v else state // 64
                  for part, state in (("encoder", n_state), ("decoder", n_text_state)))
    dims = _dims_from_vars(v, heads)
    w: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        w[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            w[f"{dst}.bias"] = v[f"{src}/bias"]

    def layer_norm(dst: str, src: str) -> None:
        w[f"{dst}.weight"] = v[f"{src}/gamma"]
        w[f"{dst}.bias"] = v[f"{src}/beta"]

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        weight = np.split(v[f"{src}/weight"], len(names))
        bias = np.split(v[f"{src}/bias"], len(names))
        for name, wt, b in zip(names, weight, bias):
            w[f"{dst}.{name}.weight"] = wt
            if name != "key":  # Whisper's key projection has no bias (CT2 stores zeros)
                w[f"{dst}.{name}.bias"] = b

    for i in (1, 2):
        # CT2 stores conv weights as (out, in, k); MLX wants (out, k, in).
        w[f"encoder.conv{i}.weight"] = np.ascontiguousarray(
            v[f"encoder/conv{i}/weight"].transpose(0, 2, 1))
        w[f"encoder.conv{i}.bias"] = v[f"encoder/conv{i}/bias"]
    for i in range(dims["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        layer_norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.mlp1", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp2", f"{src}/ffn/linear_1")
        layer_norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    layer_norm("encoder.ln_post", "encoder/layer_norm")

    w["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    w["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(dims["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        layer_norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        layer_norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp1", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp2", f"{src}/ffn/linear_1")
        layer_norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    layer_norm("decoder.ln", "decoder/layer_norm")
    return dims, w, config
