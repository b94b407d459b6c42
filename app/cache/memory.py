"""A memory store: LRU bounded in bytes, thread-safe, O(1) get and put, with counters and optional expiry."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from app.cache.entry import CacheEntry
from app.cache.key import CacheKey
from app.resilience.clock import MONOTONIC, Clock

__all__ = ["MemoryStore", "StoreStats"]

#: An entry and the monotonic time it expires at (``inf``: kept until evicted).
_Slot = tuple[CacheEntry, float]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot of a store's counters.

    ``max_bytes`` is the largest entry accepted (for the memory store, also the bound on
    the total). ``entries`` is -1 when the store cannot know it (a shared store: other
    replicas write to it too); ``bytes`` is then what this process wrote. ``failures``
    counts operations the store could not do (Redis down or slower than its deadline);
    a failed load is counted as a miss too. ``expired`` counts entries dropped past
    their ttl.
    """

    hits: int
    misses: int
    evictions: int
    refused: int
    bytes: int
    entries: int
    max_bytes: int
    failures: int = 0
    expired: int = 0


#: What an entry costs beyond its own bytes: its key's slot, the tuple and the dict's share.
_OVERHEAD = 200


def _cost(key: CacheKey, entry: CacheEntry) -> int:
    """Bytes an entry is charged: its body and headers, its key (a long query counts), the overhead."""
    return entry.size + len(key.url) + len(key.scope) + len(key.method) + _OVERHEAD


class MemoryStore:
    """Entries by key, least recently used evicted first once their sizes pass ``max_bytes``.

    An entry's size is its body, headers and Vary values, its key's URL and scope, and a
    fixed overhead, so small answers under long query strings cannot outgrow the bound.

    One entry per key: a new response (another Vary variant too) replaces the stored one.
    An entry larger than ``max_bytes`` is refused (``put`` returns False) and evicts nothing.
    The async ``load``/``save``/``remove`` make it a ``CacheStore``; ``save`` gives the entry
    an expiry ``ttl`` seconds ahead on ``clock``, past which a read is a miss and drops it
    (an expired entry not read again stays until evicted, and counts in the bytes till then).
    """

    def __init__(self, max_bytes: int, *, clock: Clock = MONOTONIC) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._refused = 0
        self._expired = 0

    #: The bytes ``(key, entry)`` is charged against ``max_bytes``.
    cost = staticmethod(_cost)

    @property
    def kind(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def max_bytes(self) -> int:
        """The bound on the sum of the stored entries' sizes."""
        return self._max_bytes

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry under ``key`` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            slot = self._entries.get(key)
            if slot is None:
                self._misses += 1
                return None
            entry, expires = slot
            if expires != math.inf and self._clock.now() >= expires:
                del self._entries[key]
                self._bytes -= _cost(key, entry)
                self._expired += 1
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry

    def put(self, key: CacheKey, entry: CacheEntry) -> bool:
        """Store ``entry`` under ``key``, evicting least recently used entries to fit; False if too large."""
        return self._put(key, entry, math.inf)

    def _put(self, key: CacheKey, entry: CacheEntry, expires: float) -> bool:
        size = _cost(key, entry)
        with self._lock:
            if size > self._max_bytes:
                self._refused += 1
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _cost(key, old[0])
            self._entries[key] = (entry, expires)
            self._bytes += size
            while self._bytes > self._max_bytes:
                gone, (evicted, _) = self._entries.popitem(last=False)
                self._bytes -= _cost(gone, evicted)
                self._evictions += 1
            return True

    def delete(self, key: CacheKey) -> bool:
        """Remove the entry under ``key``; True if there was one."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is None:
                return False
            self._bytes -= _cost(key, old[0])
            return True

    def clear(self) -> None:
        """Remove every entry (counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    async def load(self, key: CacheKey) -> CacheEntry | None:
        """``get``, as the ``CacheStore`` protocol reads it (a memory store never fails)."""
        return self.get(key)

    async def save(self, key: CacheKey, entry: CacheEntry, ttl: float) -> bool:
        """``put`` expiring ``ttl`` seconds ahead (``inf``: never); False if too large or ``ttl`` not > 0."""
        if not ttl > 0:  # "not >" refuses nan too: an entry worth nothing is not kept
            with self._lock:
                self._refused += 1
            return False
        expires = math.inf if ttl == math.inf else self._clock.now() + ttl
        return self._put(key, entry, expires)

    async def remove(self, key: CacheKey) -> None:
        """``delete``, as the ``CacheStore`` protocol calls it."""
        self.delete(key)

    async def aclose(self) -> None:
        """Drop every entry (the memory goes back); the store stays usable, harmless twice."""
        self.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            slot = self._entries.get(key) if isinstance(key, CacheKey) else None
            return slot is not None and (slot[1] == math.inf or self._clock.now() < slot[1])

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
                expired=self._expired,
            )

    def __repr__(self) -> str:
        return f"MemoryStore(max_bytes={self._max_bytes})"
