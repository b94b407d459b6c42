"""CacheStore: the one protocol the response cache reads and writes entries through (memory or Redis)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from app.cache.entry import CacheEntry
from app.cache.key import CacheKey
from app.cache.memory import StoreStats

__all__ = ["CacheStore"]


@runtime_checkable
class CacheStore(Protocol):
    """Where entries live: a store that fails is a miss, never an error.

    ``load`` is None on a miss and on any failure of the store; ``save`` is False when the
    entry is refused (too large, or a ttl not above zero) or the store failed. Neither raises
    for a failure of the store: it is counted (``stats().failures``) and logged once per
    streak of failures. Cancellation still propagates.
    """

    @property
    def kind(self) -> str:
        """What the store is: ``"memory"`` or ``"redis"``."""
        ...

    async def load(self, key: CacheKey) -> CacheEntry | None:
        """The entry under ``key``, with its age as of now, or None (a miss, or the store failed)."""
        ...

    async def save(self, key: CacheKey, entry: CacheEntry, ttl: float) -> bool:
        """Keep ``entry`` under ``key`` for ``ttl`` seconds at least; False when refused or failed."""
        ...

    async def remove(self, key: CacheKey) -> None:
        """Forget the entry under ``key`` (best effort: a failure is counted, not raised)."""
        ...

    def stats(self) -> StoreStats:
        """The store's counters now."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds; harmless twice."""
        ...
