"""SharedState: one Redis pool per process, every call under a deadline and behind Redis's own breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry
from yarl import URL

from app.resilience.clock import MONOTONIC, Clock
from app.state.metrics import shared_state_families
from app.state.settings import SharedStateSettings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["SharedState", "SharedStateUnavailable", "redact_url"]

T = TypeVar("T")
logger = logging.getLogger("app.state")

#: Each replica renews its lease in one sorted set scored by Redis's clock, and counts the
#: live ones in the same round trip, so replica clocks never matter.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - lease)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return redis.call('HGETALL', KEYS[2])
"""
#: A pool bigger than this waits for a connection (within the call's deadline) instead of
#: opening hundreds against a slow Redis.
_MAX_CONNECTIONS = 32


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SharedStateUnavailable(Exception):  # noqa: N818 - a state, as the callers read it
    """Redis is down, slower than the deadline, or its breaker is open: use local state."""


def redact_url(url: str) -> str:
    """``url`` without user, password or query (redis-py reads ``?password=`` too), for logs and status."""
    parsed = URL(url).with_query(None).with_fragment(None)
    return str(parsed.with_user(None) if parsed.host else parsed)  # a unix socket has no host


class _Breaker:
    """Redis's own breaker: after ``threshold`` failures in a row, refuse until one trial after ``reset``."""

    __slots__ = ("_clock", "_failures", "_reset", "_threshold", "_trial", "_until")

    def __init__(self, threshold: int, reset: float, clock: Clock) -> None:
        self._threshold, self._reset, self._clock = threshold, reset, clock
        self._failures = 0
        self._until = 0.0
        self._trial = False

    @property
    def closed(self) -> bool:
        return self._failures < self._threshold

    def allow(self) -> bool:
        if self._failures < self._threshold:
            return True
        if self._trial or self._clock.now() < self._until:
            return False
        self._trial = True  # one call tries Redis again; the rest stay local
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._trial = False

    def failed(self) -> None:
        self._failures += 1
        self._trial = False
        if self._failures >= self._threshold:
            self._until = self._clock.now() + self._reset

    @property
    def refusing(self) -> bool:
        """True while open and not yet due for a trial (asks nothing, changes nothing)."""
        return self._failures >= self._threshold and (self._trial or self._clock.now() < self._until)

    def released(self) -> None:
        """A trial that ended neither way (its caller was cancelled)."""
        self._trial = False


class SharedState:
    """The process's Redis: calls under a deadline of a few milliseconds, a breaker, a degraded flag.

    Nothing here ever makes a caller wait on Redis longer than the deadline: a call that
    runs past it is cut (its connection dropped, not reused half-read), counted as a
    failure of Redis's breaker, and raised as ``SharedStateUnavailable``, on which the
    caller uses its local state. A heartbeat renews this replica's lease and counts the
    live replicas; it is also the trial that finds Redis back when no call needs it.
    """

    def __init__(
        self,
        settings: SharedStateSettings,
        *,
        replica_id: str | None = None,
        clock: Clock = MONOTONIC,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.clock = clock
        self._families = shared_state_families(registry) if registry is not None else shared_state_families()
        self._breaker = _Breaker(settings.breaker_failure_threshold, settings.breaker_reset_seconds, clock)
        self._client: aioredis.Redis | None = None
        #: What a Redis call may raise as the store failing; RedisError joins it in start().
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._pool: aioredis.BlockingConnectionPool | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._connected = False
        self._degraded = True  # until Redis has answered once
        self._answered_once = False
        self._since = clock.now()
        self._replicas = 1
        #: What each live replica says of itself (its config version), by replica id.
        self._about: dict[str, str] = {}
        #: What this replica says of itself on each heartbeat (the live config sets it).
        self.describe: Callable[[], str] = str
        self._failures = 0
        self._in_flight = 0
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._starters: list[Callable[[], None]] = []
        self._announced = False
        self._families.degraded.set(1)

    def __repr__(self) -> str:
        return f"SharedState({redact_url(self.settings.url)!r}, degraded={self._degraded})"

    @property
    def client(self) -> aioredis.Redis | None:
        """The Redis client once started (for pub/sub, which is not a bounded call)."""
        return self._client

    def key(self, *parts: str) -> str:
        """A key under this deployment's prefix."""
        return self.settings.key_prefix + ":".join(parts)

    async def start(self) -> None:
        """Open the pool and start the heartbeat; never fails: with Redis down it starts degraded."""
        if self._client is not None:
            return
        # Imported here, not with the module: a process with shared state off (the default)
        # never loads redis, which brings OpenTelemetry's metrics SDK and more (~9 MB).
        import redis.asyncio as aioredis  # noqa: PLC0415
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415

        self._errors = (RedisError, OSError)
        s = self.settings
        pool = aioredis.BlockingConnectionPool.from_url(
            s.url,
            max_connections=_MAX_CONNECTIONS,
            timeout=None,  # the call's own deadline bounds the wait for a connection
            socket_connect_timeout=s.connect_timeout_seconds,
            socket_timeout=s.socket_timeout_seconds,
            health_check_interval=max(1, int(s.health_check_interval_seconds)),
            # No hidden retries: a retry inside a 20 ms budget only hides a sick Redis.
            retry=Retry(NoBackoff(), 0),
        )
        self._pool = pool
        self._client = aioredis.Redis(connection_pool=pool)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="shared-state-heartbeat")
        starters, self._starters = self._starters, []
        for starter in starters:
            starter()

    def on_start(self, starter: Callable[[], None]) -> None:
        """``starter()`` in the loop once started (at once when it already is)."""
        if self._client is not None:
            starter()
        else:
            self._starters.append(starter)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """``await closer()`` first thing in ``aclose`` (the users' own tasks end before the pool)."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Stop the users and the heartbeat, leave the replica set, close the pool; harmless twice."""
        closers, self._closers = self._closers, []
        for closer in closers:
            await closer()
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            # Leave at once rather than be counted for a lease more (best effort).
            with contextlib.suppress(SharedStateUnavailable):
                await self.call(lambda r: r.zrem(self.key("replicas"), self.replica_id))
                await self.call(lambda r: r.hdel(self.key("replicas", "about"), self.replica_id))
        client, self._client = self._client, None
        pool, self._pool = self._pool, None
        if client is not None:
            await client.aclose()
        if pool is not None:
            await pool.aclose()

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]], *, deadline: float | None = None) -> T:
        """``fn(redis)`` within ``deadline`` (default: the settings'), or ``SharedStateUnavailable``."""
        client = self._client
        calls = self._families.calls
        if client is None or self._in_flight >= _MAX_CONNECTIONS or not self._breaker.allow():
            # Unavailable, or every connection busy: queueing for one inside a budget of
            # a few milliseconds only piles up timers that all fire at once.
            calls.labels("rejected").inc()
            raise SharedStateUnavailable("redis unavailable")
        self._in_flight += 1
        try:
            async with asyncio.timeout(deadline or self.settings.deadline_seconds):
                result = await fn(client)
        except TimeoutError as exc:
            calls.labels("timeout").inc()
            self._failed()
            raise SharedStateUnavailable("redis slower than the deadline") from exc
        except self._errors as exc:  # a client is set only by start(): RedisError is in it
            calls.labels("error").inc()
            self._failed()
            raise SharedStateUnavailable(f"redis error: {type(exc).__name__}") from exc
        except BaseException:
            self._breaker.released()
            raise
        finally:
            self._in_flight -= 1
        calls.labels("ok").inc()
        self._breaker.succeeded()
        self._connected = True
        self._set_degraded(False)
        return result

    def _failed(self) -> None:
        self._failures += 1
        self._breaker.failed()
        if not self._connected and not self._announced:
            # Degraded from the start is no transition, but is said once all the same.
            self._announced = True
            where = redact_url(self.settings.url)
            logger.warning(
                "shared state degraded: %s not reachable at start, using local state",
                where,
                extra={"fields": {"event": "shared_state", "degraded": True, "redis": where}},
            )
        if not self._breaker.closed or not self._connected:
            self._set_degraded(True)

    @property
    def refusing(self) -> bool:
        """True when a call would be refused at once (not started, or the breaker open): use local state."""
        return self._client is None or self._breaker.refusing

    @property
    def degraded(self) -> bool:
        """True while Redis is unavailable (never reached yet, or its breaker not closed)."""
        return self._degraded

    def replicas_seen(self) -> int:
        """Replicas holding a live lease at the last heartbeat (this one included)."""
        return self._replicas

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """``listener(degraded)`` on each transition."""
        self._listeners.append(listener)

    def _set_degraded(self, degraded: bool) -> None:
        if degraded == self._degraded:
            return
        self._degraded = degraded
        self._since = self.clock.now()
        self._families.degraded.set(1 if degraded else 0)
        where = redact_url(self.settings.url)
        fields = {"event": "shared_state", "degraded": degraded, "redis": where}
        if degraded:
            logger.warning(
                "shared state degraded: %s unavailable, using local state", where, extra={"fields": fields}
            )
        else:
            # The first answer is the start, not a recovery: "back" would send someone
            # looking for an outage that never was.
            state = "back" if self._answered_once else "on"
            self._answered_once = True
            logger.info("shared state %s: %s answers", state, where, extra={"fields": fields})
        for listener in self._listeners:
            listener(degraded)

    async def _beat(self) -> None:
        s = self.settings
        keys = (self.key("replicas"), self.key("replicas", "about"))
        lease_ms = str(int(s.replica_lease_seconds * 1000))
        while True:
            with contextlib.suppress(SharedStateUnavailable):
                # The request path's deadline: "healthy" means answering within it, or a
                # Redis that answers the heartbeat slowly would pass for well while every
                # call times out.
                flat = await self.call(
                    lambda r: r.eval(_HEARTBEAT, 2, *keys, self.replica_id, lease_ms, self.describe())
                )
                about = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
                self._about = about
                self._replicas = max(1, len(about))
                self._families.replicas.set(self._replicas)
            # Real time: a background renewal, not a policy a test drives.
            await asyncio.sleep(min(s.replica_lease_seconds / 3, s.breaker_reset_seconds))

    def replicas_about(self) -> dict[str, str]:
        """What each replica seen at the last heartbeat says of itself (its config version), by id."""
        return dict(sorted(self._about.items()))

    def status(self) -> dict[str, Any]:
        """For the status API: where, degraded or not and since when, replicas seen; never the password."""
        return {
            "redis": redact_url(self.settings.url),
            "degraded": self._degraded,
            "seconds_in_state": round(self.clock.now() - self._since, 3),
            "replicas": self._replicas,
            "replica_id": self.replica_id,
            "failures": self._failures,
        }
