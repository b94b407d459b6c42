"""GlobalRateLimiter: one limit over every replica, GCRA in a Lua script on Redis's clock."""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import TYPE_CHECKING, Literal

from app.resilience.clock import MONOTONIC, Clock
from app.resilience.ratelimit import RateLimiter
from app.state.shared import SharedState, SharedStateUnavailable

if TYPE_CHECKING:  # redis is imported by SharedState.start, only with shared state on
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["GlobalRateLimiter"]

#: GCRA for a batch of requests in one round trip, on Redis's clock (TIME), so the
#: replicas' clocks never matter. ARGV: interval and burst tolerance (microseconds), 1 for
#: fail mode, then each request's longest wait (us). One result per request: r >= 0 is
#: booked, to go after r us; r < 0 is refused with nothing booked, a slot free in -r - 1 us.
#: The longest wait a booking asks for: what a call without a deadline is sent as.
_LONGEST_WAIT_SECONDS = 86_400.0
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local fail = ARGV[3] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local out = {}
for i = 4, #ARGV do
  local wait = tat - now - tolerance
  if wait > 0 and (fail or wait >= tonumber(ARGV[i])) then
    out[#out + 1] = -math.floor(wait) - 1
  else
    tat = tat + interval
    out[#out + 1] = math.max(0, math.floor(wait))
  end
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return out
"""


#: A batch's callers are woken this many per loop pass: hundreds at once would hold the
#: loop for milliseconds (500 callers: about 5 ms) while other work waits.
_WAKE_AT_ONCE = 64


class GlobalRateLimiter:
    """``rate`` calls per second with bursts of ``burst`` over every replica (``rate_limit_scope="global"``).

    The calls that arrive while a round trip is out go together in the next one: one
    ``EVALSHA`` books a slot for each (the script is loaded once, and again on
    ``NOSCRIPT``), so a replica makes about one Redis call per round trip whatever its
    concurrency, and the only timer is that call's deadline. While Redis is unavailable
    the state's ``failure_mode`` decides: ``local`` runs a local limiter at ``rate /
    replicas seen``, ``open`` admits, ``closed`` refuses. Slots booked in Redis are not
    given back: that would take a second round trip on a path that is failing already,
    and a lost slot only makes the limit stricter.
    """

    def __init__(
        self,
        state: SharedState,
        key: str,
        rate: float,
        burst: int = 1,
        mode: Literal["wait", "fail"] = "wait",
        *,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.state = state
        self.key = state.key("ratelimit", key)
        self.clock = clock
        self._set(rate, burst, mode)
        self._script: AsyncScript | None = None
        self._pending: list[tuple[float, asyncio.Future[tuple[float, float | None]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Every caller not yet answered, by deadline (arrival order: one deadline length).
        self._waiting: collections.deque[tuple[float, float, asyncio.Future[tuple[float, float | None]]]] = (
            collections.deque()
        )
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        state.on_close(self.aclose)
        self._local: RateLimiter | None = None
        self._local_replicas = 0
        #: Round trips made, and requests they carried (the batching's effect, for the bench).
        self.round_trips = 0
        self.requests = 0

    def _set(self, rate: float, burst: int, mode: Literal["wait", "fail"]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.mode = mode
        interval = 1_000_000 / rate
        # One tuple, swapped whole: a batch being sent keeps the one it read.
        self._args = (str(int(interval)), str(int((burst - 1) * interval)), "1" if mode == "fail" else "0")

    def reconfigure(self, rate: float, burst: int, mode: Literal["wait", "fail"]) -> None:
        """New rate, burst and mode from the next round trip; the fleet's bucket in Redis stays.

        Its schedule (the next slot's time) is kept as it is, now spaced at the new rate.
        The local fallback, if one runs, keeps its tokens as ``RateLimiter.reconfigure`` does.
        """
        self._set(rate, burst, mode)
        if self._local is not None:
            self._local.reconfigure(*self._share(self._local_replicas), mode)

    @property
    def degraded(self) -> bool:
        """True while the limit is local (Redis unavailable)."""
        return self.state.degraded

    async def reserve_slot(self, max_wait: float) -> tuple[float, float | None]:
        """As ``RateLimiter.reserve_slot``: (wait, slot), or (-time to a free slot, None) when refused.

        Never waits longer than the state's deadline from its own arrival: a caller that
        joins a batch behind a slow round trip gets the fallback's answer at its deadline.
        """
        if self.state.refusing:  # known unavailable: no round trip, no task, no timer
            return self._fallback(max_wait)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[float, float | None]] = loop.create_future()
        self._pending.append((max_wait, future))
        self._waiting.append((loop.time() + self.state.settings.deadline_seconds, max_wait, future))
        if self._timer is None:
            self._timer = loop.call_at(self._waiting[0][0], self._expire)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    def _expire(self) -> None:
        """The one timer of every waiting caller: those past their deadline get the fallback now."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now, waiting, woken = loop.time(), self._waiting, 0
        while waiting and (waiting[0][2].done() or waiting[0][0] <= now):
            _, max_wait, future = waiting.popleft()
            if not future.done():
                future.set_result(self._fallback(max_wait))
                woken += 1
                if woken == _WAKE_AT_ONCE:  # the rest at the next pass
                    self._timer = loop.call_soon(self._expire)
                    return
        if waiting:
            self._timer = loop.call_at(waiting[0][0], self._expire)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        except BaseException:
            # Cancelled (closing) or a defect: nobody is left without an answer.
            for max_wait, future in [*self._pending]:
                if not future.done():
                    future.set_result(self._fallback(max_wait))
            self._pending = []
            raise

    async def _send(self, batch: list[tuple[float, asyncio.Future[tuple[float, float | None]]]]) -> None:
        # A call without a deadline waits "for ever" (inf, which int() refuses): a day is
        # as good, and keeps the number exact in Lua's doubles.
        waits = [str(int(min(max(w, 0.0), _LONGEST_WAIT_SECONDS) * 1_000_000)) for w, _ in batch]
        try:
            results = await self.state.call(functools.partial(self._run, waits=waits))
        except SharedStateUnavailable:
            answers = [self._fallback(max_wait) for max_wait, _ in batch]
        except BaseException:
            for max_wait, future in batch:
                if not future.done():
                    future.set_result(self._fallback(max_wait))
            raise
        else:
            self.round_trips += 1
            self.requests += len(batch)
            # r >= 0: booked, go after r us; r < 0: refused, a slot frees in -r - 1 us.
            answers = [(r / 1e6 if r >= 0 else (r + 1) / 1e6, None) for r in map(int, results)]
        for index, ((_, future), answer) in enumerate(zip(batch, answers, strict=True), 1):
            if not future.done():  # else its caller gave up: a booked slot is lost, never gained
                future.set_result(answer)
            if index % _WAKE_AT_ONCE == 0:
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Stop the batch task; every caller still waiting gets the fallback's answer."""
        task, self._flusher = self._flusher, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            _, max_wait, future = self._waiting.popleft()
            if not future.done():
                future.set_result(self._fallback(max_wait))

    async def _run(self, redis: Redis, waits: list[str]) -> list[int]:
        script = self._script
        if script is None:
            script = self._script = redis.register_script(_GCRA)
        result: list[int] = await script(keys=[self.key], args=[*self._args, *waits])
        return result

    def _fallback(self, max_wait: float) -> tuple[float, float | None]:
        mode = self.state.settings.failure_mode
        if mode == "open":
            return 0.0, None
        if mode == "closed":
            return -1.0 / self.rate, None
        replicas = self.state.replicas_seen()
        local = self._local
        if local is None or replicas != self._local_replicas:
            local = self._local = RateLimiter(*self._share(replicas), self.mode, self.clock)
            self._local_replicas = replicas
        wait, slot = local.reserve_slot(max_wait)
        return wait, (slot if wait >= 0 else None)

    def _share(self, replicas: int) -> tuple[float, int]:
        """This replica's share of the fleet's rate and burst, by the replicas last seen."""
        return self.rate / replicas, max(1, self.burst // replicas)

    def give_back(self, slot: float | None) -> None:
        """A local (fallback) slot goes back to the local limiter; a slot booked in Redis is kept."""
        if slot is not None and self._local is not None:
            self._local.give_back(slot)
