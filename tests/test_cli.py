"""The `transcribe` command in batch use: one bad file costs only itself."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_align as la
from lightning_align.cli import main, output_stems

from .test_errors import write_speech_files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    files = write_speech_files(d)
    (d / "notes.txt").write_text("not audio\n" * 20)
    data = files["wav"].read_bytes()
    (d / "cut.wav").write_bytes(data[: len(data) // 2])
    return {"good": files["wav"], "good_mp3": files["mp3"], "text": d / "notes.txt",
            "cut": d / "cut.wav", "missing": d / "missing.wav"}


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FAILED")]


@pytest.mark.parametrize("files_per_batch", ["1", "5"])
def test_bad_files_fail_alone(inputs, tmp_path, capsys, model, files_per_batch):
    """One file a batch (CPU's default), or all five together (as on a GPU): the bad ones
    fail alone, the good ones are written with the same text."""
    order = ["text", "good", "missing", "cut", "good_mp3"]
    rc = main(["transcribe", *(str(inputs[k]) for k in order), "-o", str(tmp_path),
               "-f", "json,srt", "--quiet", "--files-per-batch", files_per_batch])
    err = capsys.readouterr().err
    assert rc == 1
    failed = failed_lines(err)
    assert len(failed) == 3, err
    for key, fragment in (("text", "not readable as audio"), ("missing", "no such file"),
                          ("cut", "truncated")):
        assert any(str(inputs[key]) in line and fragment in line for line in failed), err
    assert "3 of 5 file(s) failed" in err
    assert "Traceback" not in err
    # both good files are written, under distinct names although both are called "speech"
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["speech-2.json", "speech-2.srt", "speech.json", "speech.srt"]
    for name, key in (("speech.json", "good"), ("speech-2.json", "good_mp3")):
        result = json.loads((tmp_path / name).read_text())
        assert result["segments"] and all(s["words"] for s in result["segments"])
        assert result["text"] == la.transcribe(str(inputs[key]), model=model)["text"]


def test_files_per_batch_must_be_positive(inputs, tmp_path, capsys):
    assert main(["transcribe", str(inputs["good"]), "-o", str(tmp_path), "-q",
                 "--files-per-batch", "0"]) == 2
    assert "--files-per-batch 0" in capsys.readouterr().err


def test_seed_must_not_be_negative(inputs, tmp_path, capsys):
    assert main(["transcribe", str(inputs["good"]), "-o", str(tmp_path), "-q",
                 "--seed", "-1"]) == 2
    assert "--seed -1" in capsys.readouterr().err


def test_an_option_wrong_for_every_file_exits_two(inputs, tmp_path, capsys, model):
    """Not a traceback: the library's message on one line, nothing written."""
    assert main(["transcribe", str(inputs["good"]), "-o", str(tmp_path), "-q",
                 "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "batch_size=0" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_all_good_exits_zero(inputs, tmp_path, capsys, model):
    assert main(["transcribe", str(inputs["good"]), "-o", str(tmp_path), "-f", "txt", "-q",
                 "--no-word-timestamps"]) == 0
    assert "lazy dog" in (tmp_path / "speech.txt").read_text().lower()
    assert failed_lines(capsys.readouterr().err) == []


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-condition-on-previous-text"], False)])
def test_condition_on_previous_text_reaches_the_decoder(inputs, tmp_path, monkeypatch, flag, expected):
    seen = {}

    def fake(paths, **kwargs):
        seen.update(kwargs)
        return [ValueError("not decoded in this test")] * len(paths)

    monkeypatch.setattr(la, "transcribe_many", fake)
    main(["transcribe", str(inputs["good"]), "-o", str(tmp_path), "-q"] + flag)
    assert seen["condition_on_previous_text"] is expected


def test_unwritable_output_dir_fails_each_file(inputs, tmp_path, capsys, model):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output directory should be")
    rc = main(["transcribe", str(inputs["good"]), "-o", str(blocker / "out"), "-f", "txt", "-q",
               "--no-word-timestamps"])
    err = capsys.readouterr().err
    assert rc == 1 and len(failed_lines(err)) == 1 and "cannot write outputs" in err, err


def test_bad_model_exits_two(inputs, tmp_path, capsys):
    rc = main(["transcribe", str(inputs["good"]), "--model", str(tmp_path / "nomodel"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "nomodel" in err and "Offline choices" in err


def test_output_stems_never_collide():
    paths = ["a/talk.wav", "b/talk.mp3", "talk-2.wav", "c/talk.flac", "talk.wav"]
    stems = output_stems(paths)
    assert stems[0] == "talk" and len(set(stems)) == len(stems)


def test_subprocess(inputs, tmp_path):
    """The installed entry point, in its own process: exit status and stderr as a shell sees them."""
    proc = subprocess.run([sys.executable, "-m", "lightning_align.cli", "transcribe",
                           str(inputs["good"]), str(inputs["text"]), "-o", str(tmp_path),
                           "-f", "vtt", "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert len(failed_lines(proc.stderr)) == 1 and "notes.txt" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "speech.vtt").read_text().startswith("WEBVTT")
    assert not [p for p in tmp_path.iterdir() if p.name != "speech.vtt"]  # no temp files left


def test_console_script_exists():
    assert shutil.which("lightning-align") is not None


def test_a_file_that_breaks_the_shared_decode_fails_alone(inputs, tmp_path, capsys, model,
                                                          monkeypatch):
    """Should decoding a group raise, each file is decoded alone: only the one that raises
    fails (here the MP3, through a wrapped batched decoder)."""
    tr = importlib.import_module("lightning_align.transcribe")  # the name `transcribe` is the function

    real = tr._batched

    def breaks_on_mp3(wm, jobs, *args, **kwargs):
        if any(str(job.context.audio).endswith(".mp3") for job in jobs):
            raise RuntimeError("decoder exploded")
        return real(wm, jobs, *args, **kwargs)

    monkeypatch.setattr(tr, "_batched", breaks_on_mp3)
    rc = main(["transcribe", str(inputs["good"]), str(inputs["good_mp3"]), "-o", str(tmp_path),
               "-f", "txt", "-q", "--no-word-timestamps", "--files-per-batch", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    failed = failed_lines(err)
    assert len(failed) == 1 and str(inputs["good_mp3"]) in failed[0]
    assert "unexpected RuntimeError: decoder exploded" in failed[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.txt"]


def test_warm_up_command(capsys, monkeypatch, tmp_path):
    """`lightning-align warm-up` runs `warm_up` with the batches asked (forced on a CPU), says
    where the kernels went, and answers a bad model or batch list with exit status 2."""
    from lightning_align import warmup

    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(tmp_path / "ptx"))
    rows = []
    real = warmup.decode_batch
    monkeypatch.setattr(warmup, "decode_batch",
                        lambda wm, features, options, **kw: (rows.append(features.shape[0]),
                                                             real(wm, features, options, **kw))[1])
    assert main(["warm-up", "--batch-sizes", "2", "--force"]) == 0
    out = capsys.readouterr().out
    assert "warmed up" in out and str(tmp_path / "ptx") in out
    assert rows and set(rows) == {2}
    if not la.backend.gpu_available():
        rows.clear()
        assert main(["warm-up"]) == 0 and not rows
        assert "no GPU" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["warm-up", "--batch-sizes", "0,x"])
    assert bad.value.code == 2 and "whole numbers" in capsys.readouterr().err
    assert main(["warm-up", "--model", str(tmp_path / "nomodel")]) == 2
    assert "nomodel" in capsys.readouterr().err
