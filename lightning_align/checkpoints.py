"""Read model files of other Whisper tools into mlx-whisper-named numpy weights.

- MLX directories (mlx-community layout): `config.json` + `weights.safetensors` / `weights.npz`.
- OpenAI `.pt` checkpoints, read without PyTorch: a `.pt` is a zip of a pickle whose tensors are
  raw storages; a restricted unpickler maps them to numpy and refuses every other class, so a
  checkpoint cannot run code.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .backend import mx
from .errors import ModelError

_STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
DIMENSION_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                  "n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")


def _rebuild_tensor(storage, offset, size, stride, *_args):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view)


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise ModelError(f"{self.path}: the checkpoint refers to {module}.{name}, which a Whisper "
                         "checkpoint never needs; refusing to load it.")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        if _STORAGE_DTYPES[storage_type] == "bfloat16":
            return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, _STORAGE_DTYPES[storage_type])


def read_openai_checkpoint(path: str | Path) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Read an OpenAI Whisper `.pt` checkpoint into (dims, mlx-whisper-named weights)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({e}). OpenAI checkpoints "
                         "are zip files saved by torch.save; download or copy it again.") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise ModelError(f"{path}: no data.pkl inside; not a torch.save checkpoint.")
        prefix = pickles[0][: -len("/data.pkl")]
        try:
            with archive.open(pickles[0]) as f:
                checkpoint = _CheckpointUnpickler(f, archive, prefix, path).load()
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise ModelError(f"{path}: the checkpoint is corrupt ({e}).") from None
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise ModelError(f"{path}: not an OpenAI Whisper checkpoint (no 'dims' and "
                         "'model_state_dict'); for Hugging Face transformers checkpoints convert "
                         "them with mlx-examples' convert.py first.")
    dims = check_dimensions(checkpoint["dims"], path)
    weights = {}
    for name, value in checkpoint["model_state_dict"].items():
        if name == "encoder.positional_embedding":
            continue  # fixed sinusoids, recomputed by the model
        name = name.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")
        if name in ("encoder.conv1.weight", "encoder.conv2.weight"):
            value = np.ascontiguousarray(value.transpose(0, 2, 1))  # (out, in, k) -> (out, k, in)
        weights[name] = value
    check_weights(dims, weights, path)
    return dims, weights


def check_dimensions(config, path: Path) -> dict[str, int]:
    """The model dimensions in `config` as positive ints, or a `ModelError` naming `path`."""
    dims = {}
    for key in DIMENSION_KEYS:
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ModelError(f"{path}: dimension {key}={value!r} is not a positive integer; the "
                             "config is corrupt or not a Whisper model's.")
        dims[key] = int(value)
    return dims


def expected_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every parameter name of a Whisper model of `dims`, with its shape. MLX builds the
    parameters lazily, so this allocates no weights even for large models."""
    from mlx.utils import tree_flatten

    from .model import ModelDimensions, Whisper

    return {k: tuple(v.shape) for k, v in tree_flatten(Whisper(ModelDimensions(**dims)).parameters())}


def check_weights(dims: dict[str, int], weights: dict, path: Path) -> None:
    """Refuse weights that do not fit a Whisper model of `dims` (missing, extra or misshapen
    arrays), before MLX would fail on them deep inside a forward pass."""
    expected = expected_shapes(dims)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {expected[k]})"
             for k in sorted(set(expected) & set(weights)) if tuple(weights[k].shape) != expected[k]]
    if missing or extra or wrong:
        parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", extra),
                                      ("wrong shape:", wrong)) if items]
        raise ModelError(f"{path}: the weights do not match a Whisper model of the declared "
                         f"dimensions ({'; '.join(parts)}); the model is incomplete, mismatched "
                         "with its config, or of another architecture.")


def read_mlx_directory(path: str | Path) -> tuple[dict[str, int], dict[str, np.ndarray | mx.array], dict]:
    """Read an mlx-community Whisper directory into (dims, weights, config)."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path / 'config.json'}: cannot read it ({e}).") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path / 'config.json'}: holds a {type(config).__name__}, not the "
                         "mlx-whisper config object; restore the model's config.json.")
    if config.get("quantization"):
        raise ModelError(f"{path}: quantized MLX models are not supported; use a float16 or "
                         "float32 conversion of the model.")
    missing = [k for k in DIMENSION_KEYS if k not in config]
    if missing:
        raise ModelError(f"{path / 'config.json'}: missing {', '.join(missing)}; this is not an "
                         "mlx-whisper config.")
    for name in ("weights.safetensors", "weights.npz"):
        if (path / name).exists():
            try:
                weights = mx.load(str(path / name))
            except (RuntimeError, ValueError) as e:
                raise ModelError(f"{path / name}: cannot read the weights ({e}); the file is "
                                 "truncated or corrupt.") from None
            dims = check_dimensions(config, path / "config.json")
            check_weights(dims, weights, path / name)
            return dims, weights, config
    raise ModelError(f"{path}: no weights.safetensors or weights.npz next to config.json.")


def write_mlx_directory(path: str | Path, dims: dict[str, int], weights: dict, extra: dict | None = None) -> Path:
    """Write weights in the mlx-community layout (loads in mlx-whisper and here)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in weights.items()}
    tmp = path / "weights.tmp.safetensors"
    mx.save_safetensors(str(tmp), arrays)
    tmp.replace(path / "weights.safetensors")
    config = {"model_type": "whisper", **dims, **(extra or {})}
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path
