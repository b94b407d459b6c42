"""GlobalRetryBudget: one retry budget over every replica, synced in the background, never on a call."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from app.resilience.budget import RetryBudget
from app.state.shared import SharedState, SharedStateUnavailable

if TYPE_CHECKING:  # redis is imported by SharedState.start, only with shared state on
    from redis.asyncio import Redis

__all__ = ["GlobalRetryBudget"]

#: Each replica's window counts in one hash, stamped with an expiry on Redis's clock; the
#: others' live counts are summed in the same round trip. ARGV: this replica, its requests
#: and retries, the stamp's lifetime (ms). Returns {others' requests, others' retries}.
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. (now + tonumber(ARGV[4])))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
local requests, retries = 0, 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local replica, value = entries[i], entries[i + 1]
  local a, b, expiry = string.match(value, '(%d+):(%d+):(%d+)')
  if tonumber(expiry) < now then
    redis.call('HDEL', KEYS[1], replica)
  elseif replica ~= ARGV[1] then
    requests = requests + tonumber(a)
    retries = retries + tonumber(b)
  end
end
return {requests, retries}
"""


class GlobalRetryBudget:
    """Makes ``budget`` the fleet's (``retry_budget_scope="global"``): one ratio over all replicas.

    Retries over every replica stay within ``ratio`` of every replica's requests, plus the floor.

    Every ``interval`` seconds the replica publishes its window's counts and reads the
    others' (one Lua round trip under the shared state's deadline); the budget then judges
    each retry on the fleet's totals, with no Redis call on the call path. While Redis is
    unavailable, or the others' counts are older than three intervals, the budget is this
    replica's alone again.
    """

    def __init__(
        self, state: SharedState, budget: RetryBudget, service: str, *, interval: float = 0.5
    ) -> None:
        self.state = state
        self.budget = budget
        self.interval = interval
        self._key = state.key("budget", service)
        self._script: Any = None
        self._task: asyncio.Task[None] | None = None
        state.on_start(self.start)
        state.on_close(self.aclose)

    def start(self) -> None:
        """Sync in the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._sync_forever(), name="global-retry-budget"
            )

    async def aclose(self) -> None:
        """Stop syncing; the budget is local again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        self.budget.set_others(0, 0)

    async def sync(self) -> None:
        """One exchange of counts with the fleet (the background loop's step)."""
        requests, retries = self.budget.counts()
        lifetime_ms = str(int(self.interval * 3000))
        try:
            others = await self.state.call(
                lambda r: self._run(r, [self.state.replica_id, str(requests), str(retries), lifetime_ms])
            )
        except SharedStateUnavailable:
            self.budget.set_others(0, 0)  # on its own until Redis answers again
            return
        self.budget.set_others(int(others[0]), int(others[1]))

    async def _run(self, redis: Redis, args: list[str]) -> Any:
        if self._script is None:
            self._script = redis.register_script(_SYNC)
        return await self._script(keys=[self._key], args=args)

    async def _sync_forever(self) -> None:
        while True:
            with contextlib.suppress(SharedStateUnavailable):
                await self.sync()
            await asyncio.sleep(self.interval)
