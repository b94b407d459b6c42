"""RedisStore: entries the gateway's replicas share through Redis, each command under a deadline."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from app.cache.clocks import SYSTEM_WALL_CLOCK, WallClock
from app.cache.entry import CacheEntry
from app.cache.key import CacheKey
from app.cache.memory import StoreStats
from app.resilience.clock import MONOTONIC, Clock
from app.state.shared import SharedState, SharedStateUnavailable

__all__ = [
    "CorruptEntry",
    "DEFAULT_MAX_TTL_SECONDS",
    "ENTRY_MAGIC",
    "RedisStore",
    "decode_entry",
    "encode_entry",
]

logger = logging.getLogger("app.cache")

#: The first bytes of every value this store writes: the format and its version.
ENTRY_MAGIC = b"RCE1"
#: The members of a value's metadata, no more and no fewer.
_FIELDS = frozenset({"k", "s", "m", "h", "v", "a", "w", "t"})
#: The longest ttl given to Redis: an entry kept "forever" is kept a day, then fetched again.
DEFAULT_MAX_TTL_SECONDS = 86_400.0


class CorruptEntry(ValueError):  # noqa: N818 - what the value is, as the store reads it
    """A value under a cache key that is not an entry of this format for this key."""


def encode_entry(key: CacheKey, entry: CacheEntry, *, age: float, wall: float) -> bytes:
    r"""``entry`` as bytes: ``ENTRY_MAGIC``, one line of ASCII JSON metadata, ``\n``, the body as is.

    The metadata is an object: ``k`` the key's digest (checked on load), ``s`` status,
    ``m`` method, ``h`` headers as ``[name, value]`` pairs, ``v`` the Vary selection
    (``[name, value or null]`` pairs, or null for ``Vary: *``), ``a`` the entry's age when
    saved, ``w`` the wall time of saving, ``t`` its response time (wall). ASCII JSON holds
    no raw newline and round-trips any ``str`` (a lone surrogate too, as ``\\udcxx``).
    Raises ``ValueError`` for an age or time that is not finite.
    """
    meta = {
        "k": key.digest,
        "s": entry.status,
        "m": entry.method,
        "h": entry.headers,
        "v": entry.vary,
        "a": age,
        "w": wall,
        "t": entry.response_time,
    }
    text = json.dumps(meta, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return b"".join((ENTRY_MAGIC, text.encode("ascii"), b"\n", entry.body))


def _refuse_constant(name: str) -> float:
    raise CorruptEntry(f"not a finite number: {name}")


def _number(meta: dict[str, Any], field: str) -> float:
    value = meta[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorruptEntry(f"{field} is not a finite number")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CorruptEntry(f"{what} is not a string")
    return value


def _pairs(value: Any, what: str, *, optional_values: bool) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, list):
        raise CorruptEntry(f"{what} is not a list")
    pairs: list[tuple[str, Any]] = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise CorruptEntry(f"{what} holds something other than pairs")
        name, member = pair
        if not (isinstance(member, str) or (optional_values and member is None)):
            raise CorruptEntry(f"{what} holds a value that is not a string")
        pairs.append((_text(name, what), member))
    return tuple(pairs)


def decode_entry(raw: bytes, key: CacheKey, *, now: float, wall_now: float) -> CacheEntry:
    """The entry ``encode_entry`` wrote for ``key``, stored at monotonic ``now``; or ``CorruptEntry``.

    Its initial age is the age it had when saved plus the wall time since (never less: a
    clock behind the saver's adds nothing), so an entry ages across processes whose
    monotonic clocks have nothing in common.
    """
    if not raw.startswith(ENTRY_MAGIC):
        raise CorruptEntry("not an entry of this format")
    end = raw.find(b"\n", len(ENTRY_MAGIC))
    if end < 0:
        raise CorruptEntry("no end of metadata")
    try:
        meta = json.loads(raw[len(ENTRY_MAGIC) : end].decode("ascii"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CorruptEntry("unreadable metadata") from exc
    if not isinstance(meta, dict) or meta.keys() != _FIELDS:
        raise CorruptEntry("metadata of another shape")
    if meta["k"] != key.digest:
        raise CorruptEntry("an entry of another key")
    status = meta["s"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        raise CorruptEntry("not a status code")
    method = _text(meta["m"], "method")
    if not method:
        raise CorruptEntry("an empty method")
    headers = _pairs(meta["h"], "headers", optional_values=False)
    vary = None if meta["v"] is None else _pairs(meta["v"], "vary", optional_values=True)
    age, saved_wall = _number(meta, "a"), _number(meta, "w")
    if age < 0:
        raise CorruptEntry("a negative age")
    return CacheEntry(
        status=status,
        headers=headers,
        body=raw[end + 1 :],
        vary=vary,
        initial_age=age + max(0.0, wall_now - saved_wall),
        stored_at=now,
        response_time=_number(meta, "t"),
        method=method,
    )


class RedisStore:
    """Entries in Redis under ``<prefix>cache:<service>:<key digest>``, shared by every replica.

    Every command goes through ``SharedState.call`` under ``deadline`` (default: the shared
    state's, a few milliseconds), so a slow or dead Redis costs a call that much at most;
    while the shared state is degraded or its breaker refuses, ``load`` is a miss and
    ``save`` is False at once, without a round trip. Each failure is counted, and logged
    once per streak (and once when Redis answers again). The key is the SHA-256 digest of
    method, URL and credential scope: the scope never reaches Redis in clear.

    An entry whose value (format in ``encode_entry``) is larger than ``max_bytes`` is
    refused; Redis keeps one for ``ttl`` seconds (rounded up to the millisecond, at most
    ``max_ttl``). A value under the key that is not an entry of this key is a miss, and is
    removed. ``stats().entries`` is -1 (other replicas write too: unknown here), ``bytes``
    what this process wrote, ``evictions`` 0 (Redis's own eviction is not seen).
    The store does not own the shared state: ``aclose`` stops using it, the container
    closes it.
    """

    def __init__(
        self,
        state: SharedState,
        service: str,
        *,
        max_bytes: int,
        clock: Clock = MONOTONIC,
        wall_clock: WallClock = SYSTEM_WALL_CLOCK,
        deadline: float | None = None,
        max_ttl: float = DEFAULT_MAX_TTL_SECONDS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if not service:
            raise ValueError("service must not be empty")
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be > 0")
        if not 0 < max_ttl < math.inf:
            raise ValueError("max_ttl must be a positive number of seconds")
        self._state = state
        self._service = service
        self._max_bytes = max_bytes
        self._clock = clock
        self._wall = wall_clock
        self._deadline = deadline
        self._max_ttl = max_ttl
        self._closed = False
        self._failing = False
        self._hits = 0
        self._misses = 0
        self._refused = 0
        self._failures = 0
        self._written = 0
        self._corrupt = 0

    @property
    def kind(self) -> str:
        """``"redis"``."""
        return "redis"

    @property
    def service(self) -> str:
        """The upstream whose entries this store holds (a part of every key)."""
        return self._service

    @property
    def corrupt(self) -> int:
        """Values found under a key that were not its entry (each a miss, and removed)."""
        return self._corrupt

    def redis_key(self, key: CacheKey) -> str:
        """The Redis key of ``key``'s entry: the prefix, ``cache``, the service, the key's SHA-256 digest."""
        return self._state.key("cache", self._service, key.digest)

    def _available(self) -> bool:
        """False when a command would be refused, or Redis is known down: no round trip then."""
        if self._state.refusing or self._state.degraded:
            self._failed("shared state degraded")
            return False
        return True

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if not self._failing:
            self._failing = True
            logger.warning(
                "cache store redis unavailable for %s (%s): reads are misses, writes are skipped",
                self._service,
                reason,
                extra={"fields": {"event": "cache_store", "store": "redis", "service": self._service}},
            )

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info(
                "cache store redis back for %s",
                self._service,
                extra={"fields": {"event": "cache_store", "store": "redis", "service": self._service}},
            )

    async def load(self, key: CacheKey) -> CacheEntry | None:
        """The entry under ``key``, aged by the wall time since it was saved; None on a miss or a failure."""
        if self._closed or not self._available():
            self._misses += 1
            return None
        name = self.redis_key(key)
        try:
            raw = await self._state.call(lambda r: r.get(name), deadline=self._deadline)
        except SharedStateUnavailable as exc:
            self._failed(str(exc))
            self._misses += 1
            return None
        self._answered()
        if raw is None:
            self._misses += 1
            return None
        try:
            # A str would come from a client that decodes responses: not this store's value either.
            entry = decode_entry(
                raw if isinstance(raw, bytes) else b"", key, now=self._clock.now(), wall_now=self._wall.time()
            )
        except CorruptEntry as exc:
            self._corrupt += 1
            self._misses += 1
            logger.warning(
                "cache store redis: the value under %s is not its entry (%s), removed",
                name,
                exc,
                extra={"fields": {"event": "cache_store", "store": "redis", "service": self._service}},
            )
            await self._delete(name)
            return None
        self._hits += 1
        return entry

    def _payload(self, key: CacheKey, entry: CacheEntry, ttl: float) -> bytes | None:
        """The value to SET, or None (counted as refused): too large, ``ttl`` not > 0, a time not finite."""
        payload = None
        if ttl > 0 and len(entry.body) <= self._max_bytes:
            try:
                payload = encode_entry(key, entry, age=entry.age(self._clock.now()), wall=self._wall.time())
            except ValueError:  # an age or a time that is not finite: nothing another replica could use
                payload = None
        if payload is None or len(payload) > self._max_bytes:
            self._refused += 1
            return None
        return payload

    async def save(self, key: CacheKey, entry: CacheEntry, ttl: float) -> bool:
        """Keep ``entry`` ``ttl`` seconds (SET ... PX); False if too large, ``ttl`` not > 0, Redis failed."""
        if self._closed:
            return False
        payload = self._payload(key, entry, ttl)
        if payload is None or not self._available():
            return False
        name = self.redis_key(key)
        px = max(1, math.ceil(min(ttl, self._max_ttl) * 1000))
        try:
            await self._state.call(lambda r: r.set(name, payload, px=px), deadline=self._deadline)
        except SharedStateUnavailable as exc:
            self._failed(str(exc))
            return False
        self._answered()
        self._written += len(payload)
        return True

    async def remove(self, key: CacheKey) -> None:
        """Delete the entry under ``key`` (a failure is counted, not raised)."""
        if self._closed or not self._available():
            return
        await self._delete(self.redis_key(key))

    async def _delete(self, name: str) -> None:
        try:
            await self._state.call(lambda r: r.delete(name), deadline=self._deadline)
        except SharedStateUnavailable as exc:
            self._failed(str(exc))
            return
        self._answered()

    def stats(self) -> StoreStats:
        """The counters now (``entries`` -1: unknown; ``bytes``: written by this process)."""
        return StoreStats(
            hits=self._hits,
            misses=self._misses,
            evictions=0,
            refused=self._refused,
            bytes=self._written,
            entries=-1,
            max_bytes=self._max_bytes,
            failures=self._failures,
        )

    async def aclose(self) -> None:
        """Stop using Redis: loads are misses and saves False from now; the shared state stays open."""
        self._closed = True

    def __repr__(self) -> str:
        return f"RedisStore(service={self._service!r}, max_bytes={self._max_bytes})"
