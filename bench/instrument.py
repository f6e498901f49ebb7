"""Timers patched onto library functions for the harnesses that say where time goes
(`bench.breakdown`, `bench.capture_parts`, `bench.timeline`): each replaces a module or class
attribute with a wrapper that records into a dict the harness reads after each run."""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def add_time(totals: dict[str, float], name: str):
    """Add the wall seconds of the block to `totals[name]`."""
    t = time.perf_counter()
    try:
        yield
    finally:
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - t


def time_calls(owner, attr: str, totals: dict[str, float], name: str | None = None) -> None:
    """Make every call of `owner.attr` add its wall seconds to `totals[name or attr]`."""
    original = getattr(owner, attr)

    def wrapper(*a, **k):
        with add_time(totals, name or attr):
            return original(*a, **k)
    setattr(owner, attr, wrapper)


def mark_return(owner, attr: str, marks: dict[str, float], key: str) -> None:
    """Make every call of `owner.attr` set `marks[key]` to `time.perf_counter()` as it returns."""
    original = getattr(owner, attr)

    def wrapper(*a, **k):
        out = original(*a, **k)
        marks[key] = time.perf_counter()
        return out
    setattr(owner, attr, wrapper)
