"""SharedBreaker: one upstream's breaker over the replicas: quorum to open, one probe, fleet commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from app.resilience.breaker import CircuitBreakerPolicy
from app.state.shared import SharedState, SharedStateUnavailable

if TYPE_CHECKING:  # redis is imported by SharedState.start, only with shared state on
    from redis.asyncio import Redis

__all__ = ["SharedBreaker"]

logger = logging.getLogger("app.state")

#: Open leases in one sorted set scored by their expiry on Redis's clock. ARGV: the op
#: ("open", "close" or "count"), this replica, the lease in ms. Returns the live count.
_LEASES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'open' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
elseif ARGV[1] == 'close' then
  -- every replica closes on this one's word, so every open lease goes: left to expire,
  -- those of replicas that opened after it would reopen them on quorum at once
  redis.call('DEL', KEYS[1])
  if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
elseif ARGV[1] == 'probe' then
  -- the probe lock: taken if free, kept (and renewed) if already this replica's
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[2] then return -1 end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]))
  return 1
end
return redis.call('ZCARD', KEYS[1])
"""
#: How long before its break ends an open replica asks for the probe: early enough that no
#: call of its own can arrive to find the breaker due first.
_PROBE_LEAD = 0.05


class SharedBreaker:
    """Coordinates one upstream's local breakers across the replicas, without touching the hot path.

    The local breaker stays authoritative: calls never wait on Redis. Around it:
    - **transitions** are published, and an open breaker holds a lease (its break duration);
    - **quorum**: a replica whose own breaker is closed opens it when ``quorum`` replicas
      (default: a majority of those seen, at least 2) hold an open lease, so one replica
      with a network fault of its own cannot open the fleet (Polly #215);
    - **one probe**: shortly before its break ends, an open replica takes the probe lock
      (``SET NX PX``); one that does not get it opens again for another break, so only
      the holder sends half-open trials, and the others close when it reports closed;
    - **fleet commands**: ``isolate()`` / ``reset()`` hold every replica open or close them
      all (a key that late joiners read, and a message).
    While Redis is unavailable each replica is on its own, as it would be without sharing.
    """

    def __init__(
        self,
        state: SharedState,
        breaker: CircuitBreakerPolicy,
        service: str,
        *,
        quorum: int | None = None,
    ) -> None:
        self.state = state
        self.breaker = breaker
        self.service = service
        self.quorum = quorum
        self._channel = state.key("breaker", service, "events")
        self._leases = state.key("breaker", service, "open")
        self._probe = state.key("breaker", service, "probe")
        self._isolated = state.key("breaker", service, "isolated")
        self._script: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._prober: asyncio.TimerHandle | None = None
        self._holding = False  # this replica took (or renewed) the probe lock last time it asked
        self._applying = False  # a change made on the fleet's word: not published back
        self._closed = False
        self.open_leases = 0
        breaker.add_state_listener(self._changed)
        state.on_start(self.start)
        state.on_close(self.aclose)

    def required(self) -> int:
        """How many open leases open a closed replica: the configured quorum, or a majority (>= 2)."""
        if self.quorum is not None:
            return self.quorum
        return max(2, self.state.replicas_seen() // 2 + 1)

    def reconfigure(self, *, quorum: int | None) -> None:
        """A new quorum, judged at the next count of the fleet's open leases; leases and probe stay."""
        self.quorum = quorum

    def start(self) -> None:
        """Listen to the fleet (in the running loop)."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name=f"shared-breaker:{self.service}"
            )

    async def aclose(self) -> None:
        """Stop listening; pending publications end."""
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
        tasks = [t for t in (self._listener, *self._tasks) if t is not None]
        self._listener = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- local transitions, told to the fleet ------------------------------------------

    def _changed(self, _breaker: CircuitBreakerPolicy, old: str, new: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a transition outside a loop (a test, the sync twins' setup): not shared
        if new == "open":
            # After the transition has finished: its break duration is set only then.
            loop.call_soon(self._schedule_probe, loop)
        elif new == "closed":
            self._holding = False  # its "close" lease op lets the probe lock go
        if self._applying:
            return
        if self._closed:
            return
        task = loop.create_task(self._publish(new))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, new: str) -> None:
        op = "open" if new == "open" else "close" if new == "closed" else None
        with contextlib.suppress(SharedStateUnavailable):
            if op is not None:
                lease_ms = str(max(1, int(self.breaker.open_for * 1000)))
                self.open_leases = int(await self.state.call(lambda r: self._run(r, op, lease_ms)))
            message = json.dumps({"replica": self.state.replica_id, "state": new})
            await self.state.call(lambda r: r.publish(self._channel, message))

    async def _run(self, redis: Redis, op: str, lease_ms: str = "0") -> Any:
        if self._script is None:
            self._script = redis.register_script(_LEASES)
        return await self._script(
            keys=[self._leases, self._probe], args=[op, self.state.replica_id, lease_ms]
        )

    # -- one probe over the fleet ----------------------------------------------------------

    def _schedule_probe(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed:
            return
        if self._prober is not None:
            self._prober.cancel()
        remaining = self.breaker.seconds_until_half_open()
        if math.isinf(remaining):
            return  # isolated: no probe until reset
        if self._holding:
            # Its trial failed and it opened again: the lock is renewed now. Asked for only
            # shortly before this new break ends, it would lapse first (it was taken a break
            # before the trial), and another replica asking in that gap would probe next.
            self._prober = loop.call_later(0, self._claim_probe)
            return
        self._prober = loop.call_later(max(0.0, remaining - _PROBE_LEAD), self._claim_probe)

    def _claim_probe(self) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._claim())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self) -> None:
        if self.breaker.state_name == "closed" or self.breaker.isolated:
            return
        hold_ms = max(1, int(self.breaker.open_for * 1000))
        try:
            mine = int(await self.state.call(lambda r: self._run(r, "probe", str(hold_ms)))) > 0
        except SharedStateUnavailable:
            self._holding = False
            return  # on its own: its own probe
        self._holding = mine
        if mine:
            # Held while its trial runs (half-open) or it is open again after a failed one;
            # released when it closes (the "close" lease op).
            self._prober = asyncio.get_running_loop().call_later(hold_ms / 2000, self._claim_probe)
        else:
            # Another replica probes: keep failing fast for another break, until it reports.
            self._applying = True
            try:
                self.breaker.open()
            finally:
                self._applying = False
            self._schedule_probe(asyncio.get_running_loop())

    # -- the fleet's word ------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            client = self.state.client
            if client is None:
                await asyncio.sleep(delay)
                continue
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._reread()  # what was missed while not subscribed
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._heard(json.loads(message["data"]))
            except (OSError, ValueError, SharedStateUnavailable) as exc:
                logger.debug("shared breaker %s: listener restarts (%s)", self.service, type(exc).__name__)
            except Exception as exc:
                logger.debug("shared breaker %s: listener restarts (%s)", self.service, type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _heard(self, event: dict[str, Any]) -> None:
        if event.get("replica") == self.state.replica_id:
            # Its own word: applied when it was said. Applied again on its echo, a reset
            # would close a breaker that has opened since on fresh failures.
            return
        if event.get("command") == "isolate":
            self._apply(self.breaker.isolate)
            return
        if event.get("command") == "reset":
            self.open_leases = 0  # the resetting replica deleted them all
            self._apply(self.breaker.reset)
            return
        if event.get("state") == "closed":
            if self.breaker.state_name != "closed":
                # The probing replica found the upstream back.
                self._apply(self.breaker.reset)
            # Its lease went before it told; the count shown must not keep it.
            await self._reread()
        elif event.get("state") == "open":
            await self._reread()

    async def _reread(self) -> None:
        """Count open leases (and the fleet's isolation) and open a closed local breaker on quorum."""
        try:
            self.open_leases = int(await self.state.call(lambda r: self._run(r, "count")))
            isolated = await self.state.call(lambda r: r.exists(self._isolated))
        except SharedStateUnavailable:
            return
        if isolated and not self.breaker.isolated:
            self._apply(self.breaker.isolate)
        elif self.breaker.state_name == "closed" and self.open_leases >= self.required():
            self._apply(self.breaker.open)

    def _apply(self, action: Any) -> None:
        self._applying = True
        try:
            action()
        finally:
            self._applying = False

    # -- fleet commands ------------------------------------------------------------------

    async def isolate(self) -> None:
        """Hold every replica's breaker open (until ``reset``), this one at once."""
        self._apply(self.breaker.isolate)
        message = json.dumps({"command": "isolate", "replica": self.state.replica_id})
        await self.state.call(lambda r: r.set(self._isolated, "1"), deadline=1.0)
        await self.state.call(lambda r: r.publish(self._channel, message), deadline=1.0)

    async def reset(self) -> None:
        """Close every replica's breaker, this one at once."""
        self._apply(self.breaker.reset)
        self.open_leases = 0
        message = json.dumps({"command": "reset", "replica": self.state.replica_id})
        await self.state.call(lambda r: r.delete(self._isolated, self._leases, self._probe), deadline=1.0)
        await self.state.call(lambda r: r.publish(self._channel, message), deadline=1.0)

    def status(self) -> dict[str, Any]:
        """Open leases seen, the quorum, and whether the fleet is isolated, for the status API."""
        return {"open_leases": self.open_leases, "quorum": self.required()}
