"""Corpus runs on a local Ray: outputs equal in-process `transcribe`, bad files become error rows,
dead workers are replaced, a killed driver loses nothing (real weights, generated speech)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import lightning_align as la
from lightning_align import corpus
from lightning_align.synth import synthesize

from .conftest import SENTENCES

WORDS = ("red", "green", "blue", "seven", "river", "window", "music", "garden", "yellow", "winter")


def _clip_text(i: int) -> str:
    if i < len(SENTENCES):
        return SENTENCES[i]
    return f"The {WORDS[i % 10]} {WORDS[(i * 3 + 1) % 10]} is near the {WORDS[(i * 7 + 2) % 10]} house."


def write_clips(folder: Path, n: int, prefix: str = "clip") -> list[Path]:
    """`n` generated speech clips of ~2-4 s as 16-bit WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        speech = synthesize(_clip_text(i), voice=("en-us", "en-gb")[i % 2], rate_wpm=190, seed=i)
        path = folder / f"{prefix}{i:02d}.wav"
        sf.write(path, speech.audio, 16000, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # The crash hook makes every worker exit before any input named "poison" (see CRASH_ENV).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {corpus.CRASH_ENV: "poison"}})
    yield ray
    ray.shutdown()


def _json(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_discover_folders_globs_and_manifests(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b" / "deep"
    for folder in (a, b):
        folder.mkdir(parents=True)
        (folder / "talk.wav").write_bytes(b"x")
    (a / "notes.pdf").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# comment\na/talk.wav\n\n")
    (tmp_path / "list.csv").write_text("path,text\nb/deep/talk.wav,hello there\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "a/talk.wav"}) + "\n")

    folder_items = corpus.discover([tmp_path / "b"])
    assert [i.name for i in folder_items] == ["deep/talk"]
    both = corpus.discover([str(tmp_path / "**" / "*.wav")])
    assert len(both) == 2 and len({i.name for i in both}) == 2  # same stem: disambiguated
    assert all(i.name.startswith("talk.") for i in both)
    assert corpus.discover([tmp_path / "list.txt"])[0].path == str((a / "talk.wav").resolve())
    assert corpus.discover([tmp_path / "list.csv"])[0].text == "hello there"
    assert corpus.discover([tmp_path / "list.jsonl", a / "talk.wav"]) == \
        [corpus.CorpusItem(str((a / "talk.wav").resolve()), "talk")]
    with pytest.raises(corpus.CorpusError, match="no such file"):
        corpus.discover([tmp_path / "missing.wav"])
    (tmp_path / "bad.csv").write_text("file\nx.wav\n")
    with pytest.raises(corpus.CorpusError, match="'path'"):
        corpus.discover([tmp_path / "bad.csv"])


def test_corpus_matches_in_process_and_reports_bad_files(local_ray, tmp_path, model):
    """Files go to the worker 6 at a time (their windows share decoder batches, as on a GPU),
    broken ones among them; each output equals in-process `transcribe` of its file alone."""
    inp, out = tmp_path / "in", tmp_path / "out"
    good = write_clips(inp, 16)
    sf.write(inp / "silent.wav", np.zeros(32000, np.float32), 16000)
    (inp / "empty.wav").write_bytes(b"")
    (inp / "garbage.mp3").write_bytes(b"this is not audio at all " * 50)
    (inp / "truncated.wav").write_bytes((inp / "clip00.wav").read_bytes()[:44])  # header only

    summary = corpus.run([inp], out, workers=1, output_formats=("json", "srt"), progress=False,
                         files_per_batch=6)

    assert len(summary.results) == 20
    failed = {Path(r.input).name: r.error for r in summary.failed}
    assert set(failed) == {"empty.wav", "garbage.mp3", "truncated.wav"}, failed
    assert "empty" in failed["empty.wav"] and "garbage.mp3" in failed["garbage.mp3"]
    assert not summary.ok
    for path in good:
        got, want = _json(out, path.stem), la.transcribe(path, model=model, word_timestamps=True)
        assert got["text"] == want["text"]
        got_words = [w for s in got["segments"] for w in s["words"]]
        want_words = [w for s in want["segments"] for w in s["words"]]
        assert [w["word"] for w in got_words] == [w["word"] for w in want_words]
        assert [(w["start"], w["end"]) for w in got_words] == \
            [(w["start"], w["end"]) for w in want_words]
        assert (out / f"{path.stem}.srt").read_text().startswith("1\n")
    assert _json(out, "silent")["segments"] == []
    rows = corpus.read_manifest(out)
    assert len(rows) == 20 and not list((out / corpus.SHARD_DIR).glob("*.jsonl"))
    row = rows[str(good[0].resolve())]
    assert row.status == "ok" and row.duration_s > 1 and len(row.sha256) == 64
    assert rows[str((inp / "empty.wav").resolve())].status == "failed"

    # A second run skips every finished input (same bytes) and retries only the failures.
    mtimes = {p: (out / f"{p.stem}.json").stat().st_mtime_ns for p in good}
    (inp / "clip15.wav").write_bytes((inp / "clip14.wav").read_bytes())  # changed input
    again = corpus.run([inp], out, workers=1, progress=False)
    assert {Path(r.input).name for r in again.succeeded} == {"clip15.wav"}
    assert len(again.skipped) == 16 and len(again.failed) == 3
    assert all((out / f"{p.stem}.json").stat().st_mtime_ns == mtimes[p] for p in good[:15])
    assert _json(out, "clip15")["text"] == _json(out, "clip14")["text"]


def _worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"_Transcriber" in cmdline and cmdline.startswith(b"ray::"):
                pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("files_per_batch", [1, 3])
def test_dead_workers_are_replaced_and_a_killer_file_fails(local_ray, tmp_path, files_per_batch):
    """With 3 files a batch, poison.wav shares its batch with two clips: that batch, dropped
    after its retries, runs again one file at a time, and only poison.wav fails."""
    inp, out = tmp_path / "in", tmp_path / "out"
    clips = write_clips(inp, 4)
    (inp / "poison.wav").write_bytes(clips[0].read_bytes())
    killed: list[int] = []

    def kill_a_worker_after_first_output() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if list(out.glob("*.json")):
                for pid in _worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_after_first_output, daemon=True)
    killer.start()
    summary = corpus.run([inp], out, workers=1, max_retries=1, progress=False,
                         files_per_batch=files_per_batch)
    killer.join(timeout=1)

    assert killed, "no worker was killed; the test did not exercise a restart"
    assert [Path(r.input).name for r in summary.failed] == ["poison.wav"]
    assert "died 2 times" in summary.failed[0].error
    assert len(summary.succeeded) == len(clips)
    assert all((out / f"{p.stem}.json").is_file() for p in clips)
    assert not (out / "poison.json").exists()


def test_given_text_is_aligned_not_transcribed(local_ray, tmp_path):
    clip = write_clips(tmp_path, 1)[0]
    text = " The lighthouse keeper climbed the stairs every evening at seven."
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": clip.name, "text": text}) + "\n")
    summary = corpus.run([tmp_path / "list.jsonl"], tmp_path / "out", progress=False)
    assert summary.ok
    result = _json(tmp_path / "out", clip.stem)
    assert result["text"] == text
    words = result["segments"][0]["words"]
    assert [w["word"].strip() for w in words] == text.split()
    assert all(0 <= w["start"] <= w["end"] <= summary.results[0].duration_s + 0.01 for w in words)


def test_killed_driver_loses_nothing(local_ray, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    clips = write_clips(inp, 6)
    cmd = [sys.executable, "-m", "lightning_align.cli", "corpus", str(inp), "--out", str(out), "-q"]
    driver = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("*.json"))) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "the corpus CLI produced no outputs in time"
            time.sleep(0.05)
    finally:
        # The whole session: the driver and the local Ray it started.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    rows = corpus.read_manifest(out)  # the shards the workers wrote before the kill
    finished = {r.output: (out / f"{r.output}.json").stat().st_mtime_ns
                for r in rows.values() if r.status == "ok"}
    assert 1 <= len(finished) < len(clips)

    summary = corpus.run([inp], out, progress=False)

    assert summary.ok and len(summary.skipped) == len(finished)
    assert len(summary.succeeded) == len(clips) - len(finished)
    assert all((out / f"{name}.json").stat().st_mtime_ns == t for name, t in finished.items())
    assert all(r.status == "ok" for r in corpus.read_manifest(out).values())
    assert all((out / f"{p.stem}.json").is_file() for p in clips)
