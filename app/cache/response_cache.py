"""ResponseCache: one upstream's store, the RFC 9111 decisions over it, and one fetch per key."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.cache.clocks import SYSTEM_WALL_CLOCK, WallClock
from app.cache.directives import CacheControl
from app.cache.entry import CacheEntry, make_entry
from app.cache.freshness import freshness_lifetime
from app.cache.headers import HeaderInput, Headers, first_header
from app.cache.key import CacheKey
from app.cache.policy import DEFAULT_POLICY, CachePolicy
from app.cache.revalidation import conditional_headers, freshen, validators_match
from app.cache.single_flight import SingleFlight
from app.cache.staleness import Verdict, assess
from app.cache.storability import why_not_storable
from app.cache.vary import vary_matches
from app.resilience.clock import MONOTONIC, Clock

if TYPE_CHECKING:
    from app.cache.store import CacheStore

__all__ = ["REVALIDATION_WINDOW", "ResponseCache"]

#: How long an entry that can be revalidated (it has an ETag or Last-Modified) is kept past
#: its freshness and stale windows: a conditional request and a 304 then cost a few header
#: bytes instead of the body.
REVALIDATION_WINDOW = 3600.0


class ResponseCache:
    """The cache of one upstream's responses: lookups with Vary, freshness verdicts, storing, 304 merges.

    ``store`` keeps the entries (memory or Redis, see ``CacheStore``); a failing store is a
    miss. ``policy`` says how RFC 9111 applies (a shared cache by default: a gateway serves
    many callers). ``count`` is told each result (``hit``, ``miss``, ``stale``, …, and the
    storing results ``stored`` or why not) for metrics. ``flights`` runs one fetch per key.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        policy: CachePolicy = DEFAULT_POLICY,
        clock: Clock = MONOTONIC,
        wall: WallClock = SYSTEM_WALL_CLOCK,
        count: Callable[[str], None] | None = None,
        revalidation_window: float = REVALIDATION_WINDOW,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.wall = wall
        self.flights: SingleFlight[Any] = SingleFlight()
        self._count = count
        self._window = revalidation_window
        # A call marked cacheable (a pure computation's POST) is stored under a policy
        # that admits its method; one per method, made on first use.
        self._marked: dict[str, CachePolicy] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"ResponseCache(store={self.store!r}, shared={self.policy.shared})"

    def count(self, result: str) -> None:
        """Report ``result`` to the metrics (when there are any)."""
        if self._count is not None:
            self._count(result)

    def policy_for(self, method: str) -> CachePolicy:
        """The policy for ``method``: the cache's own, or one that also admits a call marked cacheable."""
        policy = self.policy
        if method in policy.methods:
            return policy
        marked = self._marked.get(method)
        if marked is None:
            marked = self._marked[method] = dataclasses.replace(policy, methods=policy.methods | {method})
        return marked

    async def lookup(self, key: CacheKey, request_headers: Headers) -> CacheEntry | None:
        """The stored response this request selects (its Vary fields match), or None."""
        entry = await self.store.load(key)
        if entry is None or not vary_matches(entry.vary, request_headers):
            return None
        return entry

    def assess(self, entry: CacheEntry, request: CacheControl | None = None) -> Verdict:
        """Whether ``entry`` may answer now (see ``app.cache.staleness.assess``)."""
        return assess(entry, self.clock.now(), request=request, policy=self.policy)

    @staticmethod
    def conditional(entry: CacheEntry | None) -> dict[str, str]:
        """The validators a fetch sends for ``entry`` (none without an entry)."""
        return {} if entry is None else conditional_headers(entry)

    def ttl(self, entry: CacheEntry) -> float:
        """Seconds ``entry`` is worth keeping: fresh, its stale windows, then for a 304."""
        cc = entry.cache_control
        left = freshness_lifetime(entry, self.policy) - entry.age(self.clock.now())
        left += max(cc.stale_while_revalidate or 0, cc.stale_if_error or 0)
        if first_header(entry.headers, "etag") is not None or first_header(entry.headers, "last-modified"):
            left += self._window
        return max(1.0, left)

    async def store_response(
        self,
        key: CacheKey,
        *,
        status: int,
        response_headers: Headers,
        body: bytes,
        request_headers: HeaderInput,
        request_time: float,
        response_time: float,
        authenticated: bool,
    ) -> CacheEntry | None:
        """Store the response when RFC 9111 allows it; the entry, or None (its reason counted).

        A response that may not be stored also drops what was stored under the key: the
        upstream has just answered otherwise, so the older answer is not served again.
        """
        policy = self.policy_for(key.method)
        reason = why_not_storable(
            method=key.method,
            status=status,
            request_headers=request_headers,
            response_headers=response_headers,
            policy=policy,
            authenticated=authenticated,
        )
        if reason is not None:
            self.count(f"not_stored:{reason}")
            await self.store.remove(key)
            return None
        entry = make_entry(
            status=status,
            response_headers=response_headers,
            body=body,
            request_headers=request_headers,
            request_time=request_time,
            response_time=response_time,
            stored_at=self.clock.now(),
            method=key.method,
            policy=policy,
        )
        saved = await self.store.save(key, entry, self.ttl(entry))
        self.count("stored" if saved else "not_stored:refused")
        return entry

    async def not_modified(
        self,
        key: CacheKey,
        entry: CacheEntry,
        headers: Headers,
        *,
        request_time: float,
        response_time: float,
    ) -> CacheEntry | None:
        """``entry`` freshened by a 304 and stored again; None when the 304 is not about it (§4.3.4)."""
        if not validators_match(entry, headers):
            return None
        fresh = freshen(
            entry,
            headers,
            request_time=request_time,
            response_time=response_time,
            stored_at=self.clock.now(),
            policy=self.policy_for(key.method),
        )
        await self.store.save(key, fresh, self.ttl(fresh))
        return fresh

    def in_background(self, work: Any) -> None:
        """Run ``work`` (a coroutine: a revalidation after a stale answer) as a task held until it ends."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
