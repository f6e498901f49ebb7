"""Transcribe and align whole archives on Ray Data (see docs/corpus.md).

The pipeline, top to bottom::

    inputs (files, folders, globs, manifests) -> CorpusItem list              (driver)
      -> read bytes, sha256, skip if done, decode to 16 kHz       (Ray tasks, CPU, parallel)
      -> transcribe / align, write outputs + a manifest row      (actor pool, one model each)
      -> progress bar, missing rows = dead-worker failures, summary           (driver)

Every output file is written to a temp file and renamed; every manifest row is appended and
fsync'd by the worker that wrote the outputs, to a shard file of its own (no two processes ever
append to one file, which NFS would not make safe). The driver merges the shards into
``manifest.jsonl`` at the end. A killed driver therefore loses nothing that was written: the next
run reads the shards, and skips each input whose last row says ``ok`` for the same checksum and
whose outputs exist.

Ray is an optional dependency: it is imported only when a corpus run starts.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import logging
import os
import re
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import LightningAlignError

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    ".webm", ".mp4", ".mkv", ".mov", ".avi", ".amr", ".caf",
})
MANIFEST_EXTENSIONS = frozenset({".txt", ".lst", ".csv", ".jsonl"})
log = logging.getLogger("lightning_align")

MANIFEST = "manifest.jsonl"
SHARD_DIR = ".manifest"
MAX_FORCED_S = 30.0  # a forced pass aligns one Whisper window of text at most
CRASH_ENV = "LIGHTNING_ALIGN_CORPUS_CRASH_ON"
"""Fault injection for tests and drills: a worker exits (as if killed) before an input whose
path matches this regex, every time; the run must mark that input failed and go on."""
# A GPU worker given one file of 1-2 minutes fills 2-4 rows of a 64-window decoder batch;
# 16 such files fill one.
GPU_FILES_PER_BATCH = 16

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


class CorpusError(LightningAlignError, ValueError):
    """The corpus inputs, output directory or options cannot be used."""


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class CorpusItem:
    """One input: its absolute path, the output stem (relative to the output directory, no
    extension), and a transcript to align instead of transcribing (None: transcribe)."""

    path: str
    name: str
    text: str | None = None


def discover(inputs: Iterable[str | os.PathLike]) -> list[CorpusItem]:
    """Expand files, folders (recursively, audio extensions only), globs and manifests
    (``.txt``/``.lst``: one path a line; ``.csv``/``.jsonl``: a ``path`` column and optional
    ``text``) into items with unique output names. Raises `CorpusError` for an input that
    matches nothing."""
    found: list[CorpusItem] = []
    for given in inputs:
        arg = os.fspath(given)
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
                           and p.is_file())
            found += [CorpusItem(str(p.resolve()), p.relative_to(path).with_suffix("").as_posix())
                      for p in files]
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
            found += _read_manifest(path)
        elif path.is_file():
            found.append(CorpusItem(str(path.resolve()), path.stem))
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise CorpusError(f"{arg}: no such file, folder or glob match; check the path.")
            found += discover(matches)
    return _unique(found)


def _read_manifest(path: Path) -> list[CorpusItem]:
    """Rows of a manifest file; relative paths are relative to the manifest's folder."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif suffix == ".jsonl":
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}: line {e.lineno} is not JSON ({e.msg}).") from None
    else:
        rows = [{"path": line.strip()} for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    items = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise CorpusError(f"{path}: row {number} has no 'path'; a CSV or JSONL manifest needs "
                              "a 'path' column (and may have 'text').")
        audio = (path.parent / str(row["path"]).strip()).resolve()
        text_value = row.get("text")
        items.append(CorpusItem(str(audio), audio.stem, str(text_value) if text_value else None))
    return items


def _unique(items: list[CorpusItem]) -> list[CorpusItem]:
    """Drop repeated inputs; give inputs whose output names collide a suffix from their path."""
    seen: dict[str, CorpusItem] = {}
    for item in items:
        seen.setdefault(item.path, item)
    counts: dict[str, int] = {}
    for item in seen.values():
        counts[item.name] = counts.get(item.name, 0) + 1
    return [item if counts[item.name] == 1 else
            CorpusItem(item.path, f"{item.name}.{hashlib.sha1(item.path.encode()).hexdigest()[:8]}",
                       item.text)
            for item in seen.values()]


# --------------------------------------------------------------------------------------------
# options and results


@dataclass(frozen=True)
class CorpusOptions:
    """How a corpus run works (see `run` for the meaning of each field)."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    decode_cpus: float = 0.5
    batch_size: int | None = None
    files_per_batch: int | None = None  # None: 16 on GPU workers, 1 on CPU workers
    word_timestamps: bool = True
    which: str | None = None
    model: str | None = None
    output_formats: tuple[str, ...] = ("json",)
    language: str | None = None
    max_retries: int = 2
    progress: bool = True

    @property
    def files_per_call(self) -> int:
        """Files a worker transcribes together (their windows share decoder batches)."""
        if self.files_per_batch is not None:
            return self.files_per_batch
        return GPU_FILES_PER_BATCH if self.gpus_per_worker > 0 else 1

    def __post_init__(self) -> None:
        from .writers import _check_formats

        if self.workers < 1:
            raise CorpusError(f"workers={self.workers}: need at least one worker.")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0 or self.decode_cpus <= 0:
            raise CorpusError("gpus_per_worker must be >= 0, cpus_per_worker and decode_cpus > 0.")
        if self.max_retries < 0:
            raise CorpusError(f"max_retries={self.max_retries}: must be >= 0.")
        if self.files_per_batch is not None and self.files_per_batch < 1:
            raise CorpusError(f"files_per_batch={self.files_per_batch}: need at least one file.")
        if self.which is not None:
            try:
                re.compile(self.which)
            except re.error as e:
                raise CorpusError(f"which={self.which!r} is not a regular expression ({e}).") from None
        try:
            _check_formats(self.output_formats)
        except LightningAlignError as e:
            raise CorpusError(str(e)) from None


@dataclass(frozen=True)
class FileResult:
    """One manifest row: what happened to one input. Times in seconds."""

    input: str
    output: str
    sha256: str
    duration_s: float
    wall_s: float
    status: str
    error: str = ""
    segments: int = 0
    time: float = field(default_factory=time.time)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of work (0 when nothing was computed)."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["realtime_factor"] = round(self.realtime_factor, 3)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "FileResult":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class CorpusSummary:
    """What one run did: one result per input of this run, and the run's wall time."""

    results: tuple[FileResult, ...]
    wall_s: float
    out_dir: str

    def _with(self, status: str) -> tuple[FileResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    @property
    def succeeded(self) -> tuple[FileResult, ...]:
        return self._with(OK)

    @property
    def skipped(self) -> tuple[FileResult, ...]:
        return self._with(SKIPPED)

    @property
    def failed(self) -> tuple[FileResult, ...]:
        return self._with(FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def audio_hours(self) -> float:
        """Hours of audio transcribed in this run (skipped files not counted)."""
        return sum(r.duration_s for r in self.succeeded) / 3600

    @property
    def throughput(self) -> float:
        """Audio hours per wall-clock hour of this run."""
        return self.audio_hours * 3600 / self.wall_s if self.wall_s > 0 else 0.0

    def table(self) -> str:
        """The human summary: counts, hours, throughput, then every failure."""
        lines = [
            f"files        {len(self.results)} (ok {len(self.succeeded)}, skipped "
            f"{len(self.skipped)}, failed {len(self.failed)})",
            f"audio        {self.audio_hours:.3f} h transcribed",
            f"wall         {self.wall_s / 3600:.3f} h ({self.wall_s:.1f} s)",
            f"throughput   {self.throughput:.1f} audio h / wall h",
            f"manifest     {Path(self.out_dir) / MANIFEST}",
        ]
        lines += [f"FAILED {r.input}: {r.error}" for r in self.failed]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# manifest


def read_manifest(out_dir: str | os.PathLike) -> dict[str, FileResult]:
    """The newest row per input from ``manifest.jsonl`` and the shards of unfinished runs.
    A line cut short by a killed process is ignored."""
    out = Path(out_dir)
    files = [out / MANIFEST, *sorted((out / SHARD_DIR).glob("*.jsonl"))]
    rows: list[FileResult] = []
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(FileResult.from_row(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
    latest: dict[str, FileResult] = {}
    for row in sorted(rows, key=lambda r: r.time):
        latest[row.input] = row
    return latest


class _Shard:
    """An append-only manifest shard owned by one process; each row is fsync'd."""

    def __init__(self, out_dir: Path, owner: str):
        (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.path = out_dir / SHARD_DIR / f"{owner}-{uuid.uuid4().hex[:12]}.jsonl"

    def append(self, result: FileResult) -> None:
        line = (json.dumps(result.to_row(), ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _consolidate(out_dir: Path) -> None:
    """Merge the shards into manifest.jsonl (atomically), then remove the merged shards."""
    from .files import write_atomic

    shards = sorted((out_dir / SHARD_DIR).glob("*.jsonl"))
    rows = read_manifest(out_dir)
    data = "".join(json.dumps(r.to_row(), ensure_ascii=False) + "\n" for r in rows.values())
    write_atomic(out_dir / MANIFEST, data.encode("utf-8"))
    for shard in shards:
        shard.unlink(missing_ok=True)


def _outputs_exist(out_dir: Path, name: str, formats: Sequence[str]) -> bool:
    return all((out_dir / f"{name}.{fmt}").is_file() for fmt in formats)


# --------------------------------------------------------------------------------------------
# stage 1: read, checksum, decode (Ray tasks)


def _empty_audio() -> np.ndarray:
    return np.zeros(0, np.float32)


def _decode_row(row: dict[str, Any], done: dict[str, str]) -> dict[str, Any]:
    """Read one input, hash it, and decode it unless a finished output for the same bytes
    exists. Problems become an ``error`` string; decoding never raises."""
    from .audio import load_audio

    path = row["path"]
    out = dict(row, audio=_empty_audio(), sha256="", skip=False, error="", decode_s=0.0)
    started = time.perf_counter()
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        out["error"] = f"{path}: cannot read it ({e.strerror or e})."
        return out
    out["sha256"] = hashlib.sha256(data).hexdigest()
    if done.get(path) == out["sha256"]:
        out["skip"] = True
        return out
    try:
        out["audio"] = load_audio(data, name=path)
    except LightningAlignError as e:
        out["error"] = str(e).replace("the audio bytes", path)
    out["decode_s"] = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------------------------
# stage 2: transcribe / align and write (actor pool)


class _Transcriber:
    """A Ray Data actor: loads the model once, then turns decoded rows into output files and
    manifest rows. Every per-file problem becomes a failed row; only a dead process loses a
    batch (Ray restarts the actor and retries the batch a bounded number of times)."""

    def __init__(self, options: CorpusOptions, out_dir: str):
        from concurrent.futures import ThreadPoolExecutor

        import lightning_align as la
        from .writers import WriterOptions

        self.la = la
        self.options = options
        self.out_dir = Path(out_dir)
        # MLX streams are per thread, and Ray may call the actor from another thread than the
        # one that built it: all MLX work (the model included) runs on this one thread.
        self.mlx_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx")
        self.model = self.mlx_thread.submit(la.load_model, options.model).result()
        # A GPU's kernels compile on first use: here, before the first batch, not inside it
        self.mlx_thread.submit(la.warm_up, self.model).result()
        self.writer = WriterOptions()
        self.shard = _Shard(self.out_dir, f"worker-{os.getpid()}")
        self.which = re.compile(options.which) if options.which else None
        self.crash_on = os.environ.get(CRASH_ENV)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["path"]))]
        results = self.mlx_thread.submit(self._together, rows).result()
        return {k: [r.to_row()[k] for r in results] for k in ("input", "output", "sha256",
                                                               "duration_s", "wall_s", "status",
                                                               "error", "segments", "time")}

    def _together(self, rows: list[dict[str, Any]]) -> list[FileResult]:
        """Files whose windows share decoder batches; forced alignments, skipped and broken
        files one by one."""
        results: dict[int, FileResult] = {}
        shared = [i for i, row in enumerate(rows)
                  if not row["skip"] and not str(row["error"])
                  and not (isinstance(row.get("text"), str) and row["text"].strip())]
        for i, row in enumerate(rows):
            if i not in shared:
                results[i] = self._one(row)
        if not shared:
            return [results[i] for i in range(len(rows))]
        for i in shared:
            self._maybe_crash(str(rows[i]["path"]))
        started = time.perf_counter()
        audios = [np.asarray(rows[i]["audio"], np.float32) for i in shared]
        transcripts = self._transcribe_many(audios, [str(rows[i]["path"]) for i in shared],
                                            return_exceptions=True)
        # The batch's compute is shared out by audio length.
        elapsed = time.perf_counter() - started
        total = sum(len(a) for a in audios) or 1
        for i, audio, transcript in zip(shared, audios, transcripts):
            share = elapsed * len(audio) / total
            results[i] = self._finish(rows[i], audio, lambda t=transcript: _value(t),
                                      float(rows[i]["decode_s"]) + share)
        return [results[i] for i in range(len(rows))]

    def _maybe_crash(self, path: str) -> None:
        if self.crash_on and re.search(self.crash_on, path):
            os._exit(70)  # tests: a worker that dies on this file

    def _one(self, row: dict[str, Any]) -> FileResult:
        path, name, sha = str(row["path"]), str(row["name"]), str(row["sha256"])
        if row["skip"]:
            return FileResult(path, name, sha, 0.0, 0.0, SKIPPED)
        self._maybe_crash(path)
        audio = np.asarray(row["audio"], np.float32)
        return self._finish(row, audio, lambda: self._transcribe(audio, path, row.get("text")),
                            float(row["decode_s"]))

    def _finish(self, row: dict[str, Any], audio: np.ndarray, compute: Any,
                earlier_s: float) -> FileResult:
        """Run `compute` (unless decoding the file failed), write its outputs, and record the
        manifest row. Its wall time (s) is this call's plus `earlier_s`, the time spent on the
        file before it (reading it; its share of a shared decode)."""
        started = time.perf_counter()
        path, name, sha = str(row["path"]), str(row["name"]), str(row["sha256"])
        error, segments = str(row["error"]), 0
        if not error:
            try:
                result = compute()
                target = self.out_dir / name
                from .writers import write_result

                write_result(result, target.parent, self.options.output_formats, self.writer,
                             name=target.name)
                segments = len(result["segments"])
            except LightningAlignError as e:
                error = str(e)
            except OSError as e:
                error = f"cannot write outputs for {path} to {self.out_dir}: {e.strerror or e}"
            except Exception as e:  # noqa: BLE001 - one bad file must not stop a day-long run
                error = f"{path}: unexpected {type(e).__name__}: {e}"
        wall = earlier_s + time.perf_counter() - started
        result = FileResult(path, name, sha, len(audio) / 16000, wall,
                            FAILED if error else OK, error, segments)
        self.shard.append(result)
        return result

    def _transcribe(self, audio: np.ndarray, path: str, text: Any) -> dict[str, Any]:
        if isinstance(text, str) and text.strip():
            return self._forced(audio, path, text)
        return self._transcribe_many([audio], [path])[0]

    def _transcribe_many(self, audios: list[np.ndarray], paths: list[str],
                         return_exceptions: bool = False) -> list[Any]:
        la, opts = self.la, self.options
        per_segment = opts.word_timestamps and self.which is not None
        results = la.transcribe_many(audios, names=paths, model=self.model,
                                     batch_size=opts.batch_size,
                                     word_timestamps=opts.word_timestamps and not per_segment,
                                     keep_attention=opts.word_timestamps, language=opts.language,
                                     return_exceptions=return_exceptions)
        if per_segment:
            for k, result in enumerate(results):
                if isinstance(result, Exception):
                    continue
                try:
                    la.align(result["segments"],
                             lambda s: bool(self.which.search(s.get("text", ""))))
                except Exception as e:  # noqa: BLE001  the file fails, not the group
                    if not return_exceptions:
                        raise
                    results[k] = e
        return results

    def _forced(self, audio: np.ndarray, path: str, text: str) -> dict[str, Any]:
        duration = len(audio) / 16000
        if duration > MAX_FORCED_S:
            raise CorpusError(
                f"{path}: aligning a given text to {duration:.0f} s of audio is not supported "
                f"(at most {MAX_FORCED_S:.0f} s, one Whisper window); split the audio and its "
                "text into pieces, or leave out the text to transcribe it.")
        segments = self.la.align([{"id": 0, "start": 0.0, "end": duration, "text": text}],
                                 audio=audio, model=self.model)
        return {"segments": list(segments), "text": text, "language": self.options.language}


def _value(result: Any) -> Any:
    """A result of `transcribe_many(return_exceptions=True)`: raise it if it is an error."""
    if isinstance(result, Exception):
        raise result
    return result


# --------------------------------------------------------------------------------------------
# driver


def run(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int | None = None,
    files_per_batch: int | None = None,
    word_timestamps: bool = True,
    which: str | None = None,
    model: str | None = None,
    output_formats: Sequence[str] = ("json",),
    language: str | None = None,
    max_retries: int = 2,
    progress: bool = True,
) -> CorpusSummary:
    """Transcribe (with word timestamps) every input on Ray and write one output set per input.

    Args:
        inputs: files, folders (recursive), globs, or manifests (see `discover`).
        out_dir: outputs go to ``out_dir/<name>.<format>``; the run manifest to
            ``out_dir/manifest.jsonl``. Inputs already done with the same sha256 are skipped.
        address: a Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local Ray in
            this process (or uses the one already initialised).
        workers: model workers (actors), each loading the model once.
        gpus_per_worker: GPUs reserved per worker (fractions share a GPU, e.g. 0.5).
        cpus_per_worker: CPUs reserved per worker (also its BLAS threads on CPU).
        batch_size: 30 s windows decoded together (default: 64 on GPU, 8 on CPU).
        files_per_batch: files a worker transcribes together, their windows sharing decoder
            batches (default: 16 with GPUs, 1 on CPU). A worker that dies costs all of them a
            retry; a batch dropped after its retries is run again one file at a time.
        word_timestamps: add word timings; with `which` only to segments whose text matches
            that regular expression.
        model: model name or directory (default tiny.en).
        output_formats: any of json, srt, vtt, tsv, txt.
        language: language code for every file (default: detect per file).
        max_retries: times a batch is retried after its worker died; then its input is failed.
        progress: show a progress bar and print the summary table.

    Returns a `CorpusSummary`; a file that failed does not raise. Raises `CorpusError` for
    unusable inputs or options, and when Ray is not installed.
    """
    options = CorpusOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                            cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                            files_per_batch=files_per_batch, word_timestamps=word_timestamps,
                            which=which, model=model,
                            output_formats=tuple(output_formats), language=language,
                            max_retries=max_retries, progress=progress)
    items = discover(inputs)
    if not items:
        raise CorpusError("no audio files found in the inputs.")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out)
    done = {p: r.sha256 for p, r in previous.items()
            if r.status == OK and _outputs_exist(out, r.output, options.output_formats)}
    ray = _import_ray()
    started_ray = _connect(ray, options)
    started = time.perf_counter()
    try:
        results = _execute(ray, items, out, options, done)
        # Only now is every worker done writing; after an interrupt the shards stay as they
        # are and the next run reads them (merging then could drop a row written meanwhile).
        _consolidate(out)
    finally:
        if started_ray:
            ray.shutdown()
    summary = CorpusSummary(tuple(results), time.perf_counter() - started, str(out))
    if progress:
        print(summary.table(), file=sys.stderr)
    return summary


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CorpusError('the corpus pipeline needs Ray Data: pip install "lightning-align[ray]"'
                          ) from None
    return ray


def _connect(ray, options: CorpusOptions) -> bool:
    """Join the cluster (or start a local one); True when this call started Ray."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "ERROR"}
    if options.address is None:
        # Decoding runs in light tasks beside the workers: one spare logical CPU keeps a
        # small machine from reserving every CPU for workers and starving the decoder.
        need = options.workers * options.cpus_per_worker + options.decode_cpus
        kwargs["num_cpus"] = max(os.cpu_count() or 1, int(np.ceil(need)))
        kwargs["address"] = "local"  # never join a cluster by accident; --address auto does
    else:
        kwargs["address"] = options.address
    ray.init(**kwargs)
    return True


def _execute(ray, items: list[CorpusItem], out: Path, options: CorpusOptions,
             done: dict[str, str]) -> list[FileResult]:
    from ray.data import DataContext
    from tqdm import tqdm

    _check_resources(ray, options)
    context = DataContext.get_current()
    # A batch whose worker died more than max_retries times is dropped, not fatal: the driver
    # sees its inputs missing.
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    results: dict[str, FileResult] = {}
    bar = tqdm(total=len(items), unit="file", disable=not options.progress, file=sys.stderr)
    with bar:
        _stream(ray, items, out, options, done, options.files_per_call, results, bar)
        missing = [i for i in items if i.path not in results]
        if missing and options.files_per_call > 1:
            # A dropped batch of several files: one of them may kill workers, the others
            # not. Again one file at a time, so that only the killer fails.
            _stream(ray, missing, out, options, done, 1, results, bar)
    missing = [i for i in items if i.path not in results]
    if missing:
        shard = _Shard(out, "driver")
        for item in missing:
            result = FileResult(item.path, item.name, "", 0.0, 0.0, FAILED,
                                f"{item.path}: the worker processing it died "
                                f"{options.max_retries + 1} times (crash, out of memory, or "
                                "killed); not retried further.")
            shard.append(result)
            results[item.path] = result
    return [results[i.path] for i in items]


def _stream(ray, items: list[CorpusItem], out: Path, options: CorpusOptions,
            done: dict[str, str], files_per_call: int, results: dict[str, FileResult],
            bar) -> None:
    """One Ray Data pass over `items`: decode, transcribe, write; rows land in `results`."""
    from ray.data import ActorPoolStrategy

    # One file per block: a crash or retry costs that file only.
    # "" (not None) for "no text": a column of None and strings would reach the actor as NaN.
    rows = [dict(asdict(i), text=i.text or "") for i in items]
    ds = ray.data.from_items(rows, override_num_blocks=len(items))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing Ray options as keywords but has no named parameter for
        # the retry bounds yet; without them a file that kills workers is retried forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map(_decode_row, fn_kwargs={"done": done}, num_cpus=options.decode_cpus,
                    max_retries=options.max_retries)
        ds = ds.map_batches(_Transcriber, fn_constructor_kwargs={"options": options,
                                                                 "out_dir": str(out)},
                            # Files per call: their windows share decoder batches (a GPU
                            # wants many short files at once). One file a call: one call at a
                            # time per worker, so that a dead worker costs only the file it was
                            # on a retry. Several: the next call waits in the worker (its
                            # samples already moved there) while one runs, as the GPU would
                            # otherwise idle between calls; a dead worker then costs both calls
                            # a retry, and a dropped call is run again one file at a time.
                            batch_size=files_per_call,
                            compute=ActorPoolStrategy(
                                size=options.workers,
                                max_tasks_in_flight_per_actor=1 if files_per_call == 1 else 2),
                            num_cpus=options.cpus_per_worker,
                            num_gpus=options.gpus_per_worker or None,
                            max_restarts=-1, max_task_retries=options.max_retries)
    audio_s = sum(r.duration_s for r in results.values() if r.status == OK)
    failures = sum(r.status == FAILED for r in results.values())
    for row in ds.iter_rows():
        result = FileResult.from_row(row)
        results[result.input] = result
        audio_s += result.duration_s if result.status == OK else 0.0
        failures += result.status == FAILED
        bar.update(1)
        bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio, {failures} failed")


def _check_resources(ray, options: CorpusOptions) -> None:
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    need_cpu = options.workers * options.cpus_per_worker + options.decode_cpus
    need_gpu = options.workers * options.gpus_per_worker
    if cpus < need_cpu or gpus < need_gpu:
        raise CorpusError(
            f"{options.workers} worker(s) need {need_cpu:g} CPUs (with decoding) and {need_gpu:g} "
            f"GPUs; the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs. Use fewer --workers, "
            "smaller --cpus-per-worker / --gpus-per-worker, or a bigger cluster.")


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `lightning-align corpus` options."""
    from .cli import _formats

    parser.add_argument("inputs", nargs="+", help="audio files, folders (recursive), globs, or "
                        "manifests (.txt/.lst: a path a line; .csv/.jsonl: 'path' and optional "
                        "'text' to align instead of transcribing)")
    parser.add_argument("--out", required=True, help="output directory (also holds manifest.jsonl)")
    parser.add_argument("--address", default=None, help="Ray cluster: 'auto' or ray://host:port "
                        "(default: start a local Ray)")
    parser.add_argument("--workers", type=int, default=1, help="model workers (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per worker; fractions share a GPU (default 0: CPU)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0,
                        help="CPUs per worker, also its BLAS threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="30 s windows decoded together (default 64 on GPU, 8 on CPU)")
    parser.add_argument("--files-per-batch", type=int, default=None,
                        help="files a worker transcribes together, sharing decoder batches "
                        "(default 16 with GPUs, 1 on CPU)")
    parser.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=True,
                        help="add word timings (default on)")
    parser.add_argument("--which", default=None, help="regex: only segments whose text matches "
                        "get word timings")
    parser.add_argument("--model", default=None, help="tiny.en (default), base, or a directory")
    parser.add_argument("--language", default=None, help="language code; default: detect")
    parser.add_argument("--output-format", "-f", type=_formats, default=["json"],
                        help="comma-separated: json,srt,vtt,tsv,txt or all (default json)")
    parser.add_argument("--max-retries", type=int, default=2,
                        help="retries of a file whose worker died (default 2)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")


def main(args: argparse.Namespace) -> int:
    """Run `lightning-align corpus`; returns the exit status (1 when any input failed)."""
    # Ray Data logs every execution start at INFO; the CLI has its own progress bar.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        summary = run(args.inputs, args.out, address=args.address, workers=args.workers,
                      gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                      batch_size=args.batch_size, files_per_batch=args.files_per_batch,
                      word_timestamps=args.word_timestamps,
                      which=args.which, model=args.model, output_formats=args.output_format,
                      language=args.language, max_retries=args.max_retries,
                      progress=not args.quiet)
    except CorpusError as e:
        print(f"lightning-align corpus: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept and skipped by the next run",
              file=sys.stderr)
        return 130
    return 0 if summary.ok else 1
