"""`python -m bench.accuracy [--models tiny.en,base] [--no-peers] [--write docs/benchmarks.md]`."""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

from .report import keep_other_models, keep_peer_rows, report, write_block


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--models", default="tiny.en", help="comma-separated (default tiny.en)")
    parser.add_argument("--no-peers", action="store_true", help="lightning-align methods only")
    parser.add_argument("--write", type=Path, help="replace the accuracy block of this file")
    args = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    measured = f"Measured {datetime.date.today()} at commit {commit}."
    parts = []
    for name in args.models.split(","):
        title, _, rest = report(None if name == "tiny.en" else name, not args.no_peers,
                                log).partition("\n")
        parts.append(f"{title}\n\n{measured}\n{rest}")
        print(parts[-1], flush=True)
    text = ("Regenerate: `python -m bench.accuracy --models tiny.en,base --write docs/benchmarks.md` "
            "(see docs/accuracy.md). Each model's rows say when they were measured; the peers ran "
            "in the same run as tiny.en's.\n\n" + "\n".join(parts))
    if args.no_peers:
        text = ("Regenerate: `python -m bench.accuracy --write docs/benchmarks.md` (with the peers; "
                "`--no-peers` runs ours only and keeps the peers' rows already in the file; see "
                "docs/accuracy.md). Each model's rows say when they were measured; the peers' "
                "rows (they do not depend on this project's code) are kept from the last run "
                "with peers.\n\n" + "\n".join(parts))
        if args.write:
            text = keep_peer_rows(text, args.write)
    if args.write:
        # models not run this time keep their sections (and say when they were measured)
        write_block(keep_other_models(text, args.write), args.write)


if __name__ == "__main__":
    main(sys.argv[1:])
