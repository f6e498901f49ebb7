"""Command line: `lightning-align transcribe AUDIO...`, `warm-up` (a GPU machine's kernels, once),
and `corpus` (when Ray is installed)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import LightningAlignError

log = logging.getLogger("lightning_align")


def _formats(text: str) -> list[str]:
    from .writers import FORMATS

    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return list(FORMATS)
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad)}; choose from "
                                         f"{', '.join(FORMATS)} or 'all'")
    return names


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers >= 1, comma-separated "
                                         "(e.g. 1,4)")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-align",
                                     description="Whisper transcripts with word timestamps on MLX.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files (one output set per file)")
    t.add_argument("audio", nargs="+", help="audio files (anything ffmpeg reads)")
    t.add_argument("--model", default=None, help="tiny.en (default, bundled), base, or a model "
                   "directory / .pt checkpoint")
    t.add_argument("--batch-size", type=int, default=None, help="windows decoded together")
    t.add_argument("--files-per-batch", type=int, default=None,
                   help="files whose windows share decoder batches (default 16 on a GPU, 1 on "
                   "CPU; 1 with --sequential or --verbose)")
    t.add_argument("--output-dir", "-o", default=".", help="where outputs go (default: .)")
    t.add_argument("--output-format", "-f", type=_formats, default=["json", "srt", "vtt", "txt"],
                   help="comma-separated: json,srt,vtt,tsv,txt or all (default json,srt,vtt,txt)")
    t.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=True,
                   help="add word timings (default on; they cost one pass)")
    t.add_argument("--language", default=None, help="language code; default: detect")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--initial-prompt", default=None)
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the samples drawn at fallback temperatures (default: 0)")
    t.add_argument("--sequential", action="store_true",
                   help="decode one window at a time as openai-whisper does (slower)")
    t.add_argument("--condition-on-previous-text", action=argparse.BooleanOptionalAction,
                   default=True, help="prompt windows with the text before them: every window "
                   "with --sequential, the windows decoded again otherwise (default on)")
    t.add_argument("--highlight-words", action="store_true", help="karaoke-style subtitles")
    t.add_argument("--max-line-width", type=int, default=None)
    t.add_argument("--max-line-count", type=int, default=None)
    t.add_argument("--max-words-per-line", type=int, default=None)
    t.add_argument("--verbose", "-v", action="store_true", help="print segments as decoded")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    w = sub.add_parser("warm-up", help="compile the GPU kernels of every decoding path into the "
                       "kernel cache now (a container's start, before requests); nothing to do on "
                       "a CPU")
    w.add_argument("--model", default=None, help="as for transcribe (default tiny.en)")
    w.add_argument("--batch-sizes", type=_batch_sizes, default=(1, 4),
                   help="comma-separated decoder batches to run (default 1,4)")
    w.add_argument("--force", action="store_true", help="run the decodes on a CPU too")
    c = sub.add_parser("corpus", help="transcribe and align many files on Ray (pip install "
                       '"lightning-align[ray]")')
    from . import corpus

    corpus.add_arguments(c)
    return parser


GPU_FILES_PER_BATCH = 16  # short files fill a 64-window GPU batch together


def _load_model(name: str | None):
    """`load_model(name)`, or None after printing why it cannot be loaded (exit status 2)."""
    from . import load_model

    try:
        return load_model(name)
    except LightningAlignError as e:
        print(f"lightning-align: {_one_line(str(e))}", file=sys.stderr)
        return None


def transcribe_files(args: argparse.Namespace) -> int:
    """Transcribe the files, several at a time on a GPU (their windows share decoder batches):
    a file that fails gets one `FAILED` line on stderr and the others are still written.
    Returns 0 when all succeed, 1 when any failed, 2 when the model cannot be loaded or an
    option is wrong."""
    from tqdm import tqdm

    from .backend import gpu_available

    group = args.files_per_batch
    if group is not None and group < 1:
        print(f"lightning-align: --files-per-batch {group}: need at least one file.",
              file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"lightning-align: --seed {args.seed}: give a whole number >= 0.", file=sys.stderr)
        return 2
    if args.sequential or args.verbose:
        group = 1  # sequential decodes one window at a time; verbose lines would interleave
    elif group is None:
        group = GPU_FILES_PER_BATCH if gpu_available() else 1
    model = _load_model(args.model)
    if model is None:
        return 2
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(args.audio), unit="file", disable=args.quiet or len(args.audio) < 2)
    jobs = list(zip(args.audio, output_stems(args.audio)))
    for first in range(0, len(jobs), group):
        chunk = jobs[first : first + group]
        try:
            failures += _transcribe_chunk(chunk, model, args, bar.write)
        except LightningAlignError as e:  # an option wrong for every file (a file's own error
            bar.close()                   # comes back as a failure): nothing was decoded
            print(f"lightning-align: {_one_line(str(e))}", file=sys.stderr)
            return 2
        bar.update(len(chunk))
    bar.close()
    for path, message in failures:
        message = _one_line(message)
        print(f"FAILED: {message}" if path in message else f"FAILED {path}: {message}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(args.audio)} file(s) failed", file=sys.stderr)
        return 1
    return 0


def warm_up_machine(args: argparse.Namespace) -> int:
    """`lightning_align.warm_up` for the command line: prints what it did and where the kernels
    went. Returns 0, or 2 when the model cannot be loaded."""
    from . import warm_up
    from .backend import gpu_available, ptx_cache_dir

    model = _load_model(args.model)
    if model is None:
        return 2
    if not (gpu_available() or args.force):
        print("lightning-align: no GPU: MLX's CPU backend compiles nothing ahead, nothing to warm "
              "up (--force runs the decodes anyway).")
        return 0
    seconds = warm_up(model, batch_sizes=args.batch_sizes, force=args.force)
    where = ptx_cache_dir() or "MLX's default kernel cache"
    print(f"lightning-align: warmed up {model.name} in {seconds:.1f} s (batches of "
          f"{', '.join(map(str, args.batch_sizes))} rows); kernels in {where}")
    return 0


def _transcribe_chunk(chunk: list[tuple[str, str]], model, args: argparse.Namespace,
                      say) -> list[tuple[str, str]]:
    """Transcribe and write one group of (path, output stem); returns the failures. The files
    are decoded together; one that cannot be read or decoded fails alone
    (`transcribe_many(return_exceptions=True)`)."""
    from . import transcribe_many

    paths = [path for path, _ in chunk]
    started = time.perf_counter()
    results = transcribe_many(
        paths, names=paths, model=model, batch_size=args.batch_size,
        word_timestamps=args.word_timestamps, language=args.language, task=args.task,
        initial_prompt=args.initial_prompt, seed=args.seed, sequential=args.sequential,
        condition_on_previous_text=args.condition_on_previous_text,
        verbose=args.verbose, progress=not args.quiet, return_exceptions=True)
    took = time.perf_counter() - started
    total = sum(r.context.duration_s for r in results if not isinstance(r, Exception)) or 1.0
    failures: list[tuple[str, str]] = []
    for (path, stem), result in zip(chunk, results):
        if isinstance(result, Exception):
            failures.append((path, _failure(result, path)))
            continue
        try:
            written = _write(result, stem, args)
        except OSError as e:
            failures.append((path, f"cannot write outputs to {args.output_dir}: {e.strerror}"))
            continue
        except Exception as e:  # noqa: BLE001
            failures.append((path, _failure(e, path)))
            continue
        duration = result.context.duration_s
        share = took * duration / total  # a shared decode's time, by audio length
        say(f"{path}: {len(result['segments'])} segments, {duration:.1f} s of audio in "
            f"{share:.1f} s ({duration / max(share, 1e-9):.1f}x realtime) -> "
            + ", ".join(str(p) for p in written))
    return failures


def _failure(error: Exception, path: str) -> str:
    if isinstance(error, LightningAlignError):
        return str(error)
    log.debug("unexpected failure on %s", path, exc_info=True)
    return (f"unexpected {type(error).__name__}: {error}. This is a bug in lightning-align; "
            "please report it with this file.")


def _write(result, stem: str, args: argparse.Namespace) -> list[Path]:
    from .writers import WriterOptions, write_result

    options = WriterOptions(highlight_words=args.highlight_words, max_line_width=args.max_line_width,
                            max_line_count=args.max_line_count,
                            max_words_per_line=args.max_words_per_line)
    # write_result renders every format first and renames temp files into place: a failure
    # leaves no partial output.
    return write_result(result, Path(args.output_dir), args.output_format, options, name=stem)


def output_stems(paths: list[str]) -> list[str]:
    """One output file stem per input: the file's stem, numbered (`talk-2`) where two inputs
    share one, so that no file's outputs overwrite another's."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem or "audio"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        while n > 1 and f"{stem}-{n}" in seen:
            n += 1
        stems.append(stem if n == 1 else f"{stem}-{n}")
        if n > 1:
            seen[stems[-1]] = 1
    return stems


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "transcribe":
        return transcribe_files(args)
    if args.command == "warm-up":
        return warm_up_machine(args)
    from . import corpus

    return corpus.main(args)


if __name__ == "__main__":
    sys.exit(main())
