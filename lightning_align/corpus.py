"""Transcribe and align whole archives on Ray Data (see docs/corpus.md)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `lightning-align corpus` options."""
    parser.add_argument("inputs", nargs="+", help="files, folders, globs, or a manifest")
    parser.add_argument("--out", required=True, help="output directory")


def main(args: argparse.Namespace) -> int:
    """Run `lightning-align corpus`; returns the exit status."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print('lightning-align corpus needs Ray: pip install "lightning-align[ray]"')
        return 2
    raise SystemExit("the corpus pipeline is being built; use `lightning-align transcribe`")
