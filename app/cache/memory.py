"""A memory store: LRU bounded in bytes, thread-safe, O(1) get and put, with counters."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from app.cache.entry import CacheEntry
from app.cache.key import CacheKey

__all__ = ["MemoryStore", "StoreStats"]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot of a store's counters."""

    hits: int
    misses: int
    evictions: int
    refused: int
    bytes: int
    entries: int
    max_bytes: int


class MemoryStore:
    """Entries by key, least recently used evicted first once their sizes pass ``max_bytes``.

    One entry per key: a new response (another Vary variant too) replaces the stored one.
    An entry larger than ``max_bytes`` is refused (``put`` returns False) and evicts nothing.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._refused = 0

    @property
    def max_bytes(self) -> int:
        """The bound on the sum of the stored entries' sizes."""
        return self._max_bytes

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry under ``key`` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry

    def put(self, key: CacheKey, entry: CacheEntry) -> bool:
        """Store ``entry`` under ``key``, evicting least recently used entries to fit; False if too large."""
        size = entry.size
        with self._lock:
            if size > self._max_bytes:
                self._refused += 1
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size
                self._evictions += 1
            return True

    def delete(self, key: CacheKey) -> bool:
        """Remove the entry under ``key``; True if there was one."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is None:
                return False
            self._bytes -= old.size
            return True

    def clear(self) -> None:
        """Remove every entry (counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> StoreStats:
        """The counters now."""
        with self._lock:
            return StoreStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                refused=self._refused,
                bytes=self._bytes,
                entries=len(self._entries),
                max_bytes=self._max_bytes,
            )

    def __repr__(self) -> str:
        return f"MemoryStore(max_bytes={self._max_bytes})"
