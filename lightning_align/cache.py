"""A bounded, thread-safe LRU cache of captured attention, with optional spill to disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

import numpy as np

from .capture import CapturedAttention

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made; `bytes` and `entries` are current."""

    hits: int
    misses: int
    evictions: int
    spill_hits: int
    bytes: int
    entries: int
    max_bytes: int


class AttentionCache:
    """Keeps `CapturedAttention` per segment under a byte budget, evicting least recently used.

    `max_bytes` bounds the memory held (an entry larger than the budget is not kept). With
    `spill_dir`, evicted entries are written there and read back on a later `get` instead of
    being lost. A miss is never an error: the caller recomputes by a forced decoder pass.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, spill_dir: str | os.PathLike | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._entries: OrderedDict[Hashable, CapturedAttention] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._spill_hits = 0

    def put(self, key: Hashable, entry: CapturedAttention) -> None:
        """Insert or replace `key`, evicting old entries to stay within `max_bytes`."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                self._spill(key, entry)
                return
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                old_key, old_entry = self._entries.popitem(last=False)
                self._bytes -= old_entry.nbytes
                self._evictions += 1
                self._spill(old_key, old_entry)

    def get(self, key: Hashable) -> CapturedAttention | None:
        """The entry for `key` (marking it recently used), or None after counting a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return entry
        entry = self._unspill(key)
        with self._lock:
            if entry is None:
                self._misses += 1
                return None
            self._spill_hits += 1
        self.put(key, entry)
        return entry

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._spill_hits,
                              self._bytes, len(self._entries), self.max_bytes)

    def _path(self, key: Hashable) -> Path:
        digest = hashlib.sha1(repr(key).encode()).hexdigest()
        return self.spill_dir / f"{digest}.npz"  # type: ignore[operator]

    def _spill(self, key: Hashable, entry: CapturedAttention) -> None:
        if self.spill_dir is None:
            return
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self.spill_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, scores=entry.scores, log_norm=entry.log_norm,
                     frame_offset=np.int64(entry.frame_offset), tokens=np.asarray(entry.tokens, np.int64),
                     is_timestamp=entry.is_timestamp, token_logprobs=entry.token_logprobs,
                     key=np.array(repr(key)))
        os.replace(tmp, path)

    def _unspill(self, key: Hashable) -> CapturedAttention | None:
        if self.spill_dir is None:
            return None
        path = self._path(key)
        try:
            with np.load(path) as f:
                if str(f["key"]) != repr(key):
                    return None
                return CapturedAttention(f["scores"], f["log_norm"], int(f["frame_offset"]),
                                         tuple(int(t) for t in f["tokens"]), f["is_timestamp"],
                                         f["token_logprobs"])
        except (OSError, KeyError, ValueError):
            return None
