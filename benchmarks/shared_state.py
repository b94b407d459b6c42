"""Shared state, one table's run: ``python -m benchmarks.shared_state TABLE URL REDIS_URL C N BLOCK``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis

from app.state import GlobalRateLimiter, SharedState, SharedStateSettings
from benchmarks.worker import WARMUP, drive

if TYPE_CHECKING:
    from app.clients import BaseServiceClient

#: A limit that never binds at the rates measured here (about 10,000 calls/s): each call
#: pays for the decision, never waits for a slot.
_UNBOUND: dict[str, Any] = {"rate_limit_per_second": 1_000_000.0, "rate_limit_burst": 1_000_000}


@dataclasses.dataclass(frozen=True, slots=True)
class SharedVariant:
    """One row of the section: its label, its table, the client's config and whether it needs Redis."""

    label: str
    table: Literal["limit", "breaker"]
    config: dict[str, Any]
    redis: bool
    #: The global limiter without its batching: every call its own round trip.
    unbatched: bool = False


SHARED_VARIANTS: dict[str, SharedVariant] = {
    "limit-local": SharedVariant(
        "local limit (`rate_limit_scope=\"local\"`)", "limit", _UNBOUND, redis=False
    ),
    "limit-global-single": SharedVariant(
        "global limit, one round trip per call", "limit", {**_UNBOUND, "rate_limit_scope": "global"},
        redis=True, unbatched=True,
    ),
    "limit-global": SharedVariant(
        "global limit, batched (as shipped)", "limit", {**_UNBOUND, "rate_limit_scope": "global"}, redis=True
    ),
    "breaker-local": SharedVariant("local breaker (the default), no Redis", "breaker", {}, redis=False),
    "breaker-shared": SharedVariant(
        "shared breaker (`circuit_breaker_shared=True`), closed", "breaker", {"circuit_breaker_shared": True},
        redis=True,
    ),
}  # fmt: skip


#: Each Redis call's deadline here, the socket timeout, not the deployment's 20 ms: at
#: concurrency 64 on 2 loaded cores a reply can wait longer than 20 ms behind the calls'
#: work on the loop (the unbatched limiter, 30 replies at a time, most of all), and a call
#: the local fallback answers would measure no round trip at all.
REDIS_DEADLINE_SECONDS = 0.25

#: Round trips an unbatched limiter has out at once: below the state's pool of 32, with
#: room for the heartbeat.
_IN_FLIGHT = 30


class UnbatchedLimiter(GlobalRateLimiter):
    """The shipped global limiter with its batching taken out: each call its own Lua round trip.

    Each caller sends its own one-call batch through the limiter's own ``_send`` (the
    same script, counters and fallback), concurrently, up to ``_IN_FLIGHT`` round trips
    at once: the state refuses more than its pool of 32, and a refused call would be
    answered by the local fallback, not by Redis. The state's deadline still bounds each.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(_IN_FLIGHT)

    async def reserve_slot(self, max_wait: float) -> tuple[float, float | None]:
        if self.state.refusing:
            return self._fallback(max_wait)
        future: asyncio.Future[tuple[float, float | None]] = asyncio.get_running_loop().create_future()
        async with self._slots:
            await self._send([(max_wait, future)])
        return future.result()


@dataclasses.dataclass(frozen=True, slots=True)
class RedisCounters:
    """What Redis has done so far, from one ``INFO all``."""

    #: Calls per command, the commands Lua scripts run included (Redis counts those too).
    commands: dict[str, int]
    #: Requests read from clients: one per round trip (no client here pipelines).
    reads: int
    #: Redis's CPU seconds, user and system.
    cpu: float

    @classmethod
    async def read(cls, redis: aioredis.Redis) -> RedisCounters:
        info = await redis.info("all")
        commands = {
            name.removeprefix("cmdstat_"): int(row["calls"])
            for name, row in info.items()
            if name.startswith("cmdstat_")
        }
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cls(commands, int(info["total_reads_processed"]), cpu)

    def since(self, before: RedisCounters) -> dict[str, Any]:
        """What Redis did between ``before`` and this, the harness's own INFO left out."""
        commands = {name: n - before.commands.get(name, 0) for name, n in self.commands.items()}
        own = commands.pop("info", 0)  # the INFO taken before; this one's read is counted in neither
        return {
            "round_trips": self.reads - before.reads - own,
            "cpu": self.cpu - before.cpu,
            "commands": {name: n for name, n in commands.items() if n},
        }


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    ends = time.monotonic() + timeout
    while not check():
        if time.monotonic() > ends:
            raise RuntimeError(f"{what} within {timeout:g} s")
        await asyncio.sleep(0.01)


@dataclasses.dataclass(slots=True)
class Tally:
    """One variant's measured blocks, summed."""

    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    reads: int = 0
    evalsha: int = 0
    redis_cpu: float = 0.0
    commands: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, calls: int, wall: float, cpu: float, redis: dict[str, Any] | None) -> None:
        self.calls += calls
        self.wall += wall
        self.cpu += cpu
        if redis is not None:
            self.reads += redis["round_trips"]
            self.evalsha += redis["commands"].get("evalsha", 0)
            self.redis_cpu += redis["cpu"]
            for name, n in redis["commands"].items():
                self.commands[name] = self.commands.get(name, 0) + n


def _client(name: str, base: str, state: SharedState) -> BaseServiceClient:
    """Variant ``name``'s client, on the process's one shared state when it needs Redis."""
    from app.clients import BaseServiceClient, ClientConfig  # noqa: PLC0415
    from app.clients.policies import ClientPolicies  # noqa: PLC0415

    spec = SHARED_VARIANTS[name]
    config = ClientConfig(
        base_url=base,
        service_name=name,  # its own metrics and Redis keys
        timeout_seconds=10,
        # A total deadline, so every call's remaining time (the global limiter's longest
        # wait) is finite; the same on every variant, so it cancels out.
        total_timeout_seconds=10,
        enable_metrics=True,
        enable_request_logging=False,
        bulkhead_max_concurrent=256,
        **spec.config,
    )
    policies = ClientPolicies.from_config(config, shared_state=state if spec.redis else None)
    if spec.unbatched:
        assert state is not None
        assert config.rate_limit_per_second is not None
        policies.shared_limiter = UnbatchedLimiter(
            state,
            config.service_name,
            config.rate_limit_per_second,
            config.rate_limit_burst,
            config.rate_limit_mode,
        )
    return BaseServiceClient(config, policies=policies)


async def measure(
    table: str, url: str, redis_url: str, *, concurrency: int, total: int, block: int
) -> dict[str, Any]:
    """One ``table``'s variants in this process, in blocks of ``block`` calls taken in turn; figures per call.

    Side by side in one process, block after block, so what the machine's other work
    does to the figures falls on every variant alike.
    """
    from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415

    names = [name for name, spec in SHARED_VARIANTS.items() if spec.table == table]
    base, _, endpoint = url.rpartition("/")
    log_file = open(tempfile.mktemp(prefix="bench-shared-", suffix=".log"), "w")  # noqa: S306, SIM115, ASYNC230
    configure_logging("WARNING", json=True, stream=log_file)  # variant 3a: no call log
    # One replica with one Redis pool, as a deployment has; its defaults but the deadline.
    state = SharedState(
        SharedStateSettings(
            url=redis_url, key_prefix=f"bench:{table}:", deadline_seconds=REDIS_DEADLINE_SECONDS
        )
    )
    clients = {name: _client(name, base, state) for name in names}
    info = aioredis.Redis.from_url(redis_url)
    await state.start()
    await _until(lambda: not state.degraded, "redis did not answer the first heartbeat")
    # The shared breaker's listener subscribes in a task of its own; let it finish.
    await asyncio.sleep(0.2)

    def caller(name: str) -> Callable[[], Any]:
        client, path = clients[name], endpoint

        async def call() -> Any:
            return await client.get(path)

        return call

    calls = {name: caller(name) for name in names}
    for name in names:
        await drive(calls[name], concurrency, min(WARMUP, total))
    limiters = {name: clients[name].policies.shared_limiter for name in names}
    counted = {name: (lim.round_trips, lim.requests) for name, lim in limiters.items() if lim is not None}
    tallies = {name: Tally() for name in names}
    degraded = False
    for cycle in range(max(1, total // block)):
        turn = cycle % len(names)  # the first of a cycle follows the warm-up or the INFO: turn it
        for name in names[turn:] + names[:turn]:
            before = await RedisCounters.read(info)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            await drive(calls[name], concurrency, block)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            after = await RedisCounters.read(info)
            redis = after.since(before) if SHARED_VARIANTS[name].redis else None
            tallies[name].add(block, wall, cpu, redis)
            degraded = degraded or state.degraded
    out: dict[str, Any] = {}
    for name, t in tallies.items():
        limiter = limiters[name]
        round_trips = limiter.round_trips - counted[name][0] if limiter is not None else 0
        via_redis = limiter.requests - counted[name][1] if limiter is not None else 0
        out[name] = {
            "req_s": t.calls / t.wall,
            "cpu_us": t.cpu / t.calls * 1e6,
            "round_trips_per_call": t.reads / t.calls,
            "evalsha_per_call": t.evalsha / t.calls,
            "redis_cpu_us": t.redis_cpu / t.calls * 1e6,
            "commands": dict(sorted(t.commands.items())),
            # A global limit only: calls each round trip carried, and calls the local
            # fallback answered (Redis past its deadline, or the limiter failing).
            "calls_per_round_trip": via_redis / round_trips if round_trips else 0.0,
            "fallbacks": t.calls - via_redis if limiter is not None else 0,
            "degraded": degraded,
        }
    for client in clients.values():
        await client.close()
    await state.aclose()
    await info.aclose()
    stop_logging()
    log_file.close()
    return {"block": block, "redis_deadline_s": REDIS_DEADLINE_SECONDS, "variants": out}


def main() -> None:
    table, url, redis_url = sys.argv[1], sys.argv[2], sys.argv[3]
    concurrency, total, block = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    print(
        json.dumps(
            asyncio.run(measure(table, url, redis_url, concurrency=concurrency, total=total, block=block))
        )
    )


if __name__ == "__main__":
    main()
