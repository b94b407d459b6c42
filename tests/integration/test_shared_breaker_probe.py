"""Half-open over a fleet of gateways: exactly one trial reaches the upstream, counted by the upstream.

Three gateway replicas (``python -m app``, each its own process, as deployed) share one
real ``redis-server``, with ``circuit_breaker_shared`` on and a quorum of 2. The upstream
is a real aiohttp server in the test's process that records every request it receives:
when, and from which replica (each replica sends its own API key). A healthy answer
waits at a gate the test opens, so the trial is still in flight while every other call
of the half-open window has already been answered.

Replicas are processes, not apps in this process: the gateway's routes are wired to a
container module-wide (``create_app`` wires ``app.api.routes.*``), so two apps in one
process both serve the last-built container's client and breaker.

The break is short and real: the shared breaker claims the probe on the event loop's
clock (``loop.call_later``), which an injected breaker clock would not move.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.support.redis import RedisServer, free_port
from tests.support.upstream import Upstream

SERVICE = "analysis-engine-service"
REGIME = {"symbol": "EURUSD", "timeframe": "1h", "regime": "ranging", "confidence": 0.5, "metrics": {}}
#: The break: the shared breaker claims the probe 50 ms before it ends, so it must be well
#: over that plus a Redis round trip; short, so a test waits through a few of them.
RESET = 0.3
REPLICAS = 3
#: Failures in a row that open a replica's breaker.
THRESHOLD = 3
#: Concurrent calls each replica gets in one wave, and the pause between waves.
WAVE, EVERY = 4, 0.02
ROOT = Path(__file__).resolve().parents[2]
PROBE_KEY = f"rc:breaker:{SERVICE}:probe"
LEASES_KEY = f"rc:breaker:{SERVICE}:open"


@dataclass
class Seen:
    """One request as the upstream saw it: when, and which replica sent it."""

    at: float
    key: str


@dataclass
class Trials:
    """``market-regime/EURUSD``: failing (500), or healthy with its answer held at ``gate``.

    With ``hold_failures`` set, a failure waits for it too: answers sent at one moment.
    """

    failing: bool = True
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    hold_failures: asyncio.Event | None = None
    seen: list[Seen] = field(default_factory=list)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(time.monotonic(), request.headers.get("X-API-Key", "")))
        if self.failing:
            if self.hold_failures is not None:
                await self.hold_failures.wait()
            return web.json_response({"detail": "down", "code": "down"}, status=500)
        await self.gate.wait()
        return web.json_response(REGIME)

    def since(self, mark: int) -> list[Seen]:
        return self.seen[mark:]


@dataclass
class Gateway:
    """One replica: a gateway process, its URL, and the API key the upstream knows it by."""

    key: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    replica_id: str = ""


@dataclass
class Call:
    """One call to a replica's ``/regime`` route and what it answered."""

    replica: int
    sent: float
    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def short_circuited(self) -> bool:
        """Failed fast with the typed open-circuit error, nothing sent to the upstream."""
        return (
            self.status == 503
            and self.body.get("error") == "CircuitBreakerOpenError"
            and self.body.get("attempts") == 0
        )


@dataclass
class Fleet:
    gateways: list[Gateway]
    trials: Trials
    http: aiohttp.ClientSession
    redis: aioredis.Redis
    #: Every call a wave started: the teardown ends those a failed test left running.
    tasks: list[asyncio.Task[Call]] = field(default_factory=list)

    async def call(self, replica: int) -> Call:
        call = Call(replica, time.monotonic())
        async with self.http.get(f"{self.gateways[replica].url}/api/v1/regime/EURUSD") as resp:
            call.status, call.body = resp.status, await resp.json()
        return call

    async def status(self, replica: int) -> dict[str, Any]:
        async with self.http.get(f"{self.gateways[replica].url}/api/v1/resilience") as resp:
            assert resp.status == 200
            return (await resp.json())["dependencies"][SERVICE]  # type: ignore[no-any-return]

    async def states(self) -> list[str]:
        statuses = await asyncio.gather(*(self.status(i) for i in range(REPLICAS)))
        return [s["breaker"]["state"] for s in statuses]

    async def probe_holder(self) -> int | None:
        """The replica holding the fleet's probe lock in Redis, if any."""
        holder = await self.redis.get(PROBE_KEY)
        ids = [g.replica_id.encode() for g in self.gateways]
        return ids.index(holder) if holder in ids else None

    def wave(self) -> list[asyncio.Task[Call]]:
        """``WAVE`` concurrent calls at every replica at once."""
        wave = [asyncio.create_task(self.call(i)) for i in range(REPLICAS) for _ in range(WAVE)]
        self.tasks += wave
        return wave


def start_gateway(index: int, upstream: Upstream, redis_url: str, logs: Path) -> Gateway:
    port = free_port()
    key = f"key-r{index}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(
        {
            "APP_ENV": "test",
            "APP_PORT": str(port),
            "APP_LOG_LEVEL": "WARNING",
            "APP_REDIS_URL": redis_url,
            "APP_ANALYSIS_ENGINE__BASE_URL": upstream.base_url,
            "APP_ANALYSIS_ENGINE__API_KEY": key,
            "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED": "true",
            # A majority of three: two replicas' word opens the third.
            "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED_QUORUM": "2",
            "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
            "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS": str(RESET),
            # The trial waits at the gate for up to a few breaks: it must not time out there.
            "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS": "5",
            "APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS": "6",
            # Four processes on a loaded test machine: at the default 20 ms, a late Redis
            # answer puts a replica on its own (its own probe, by design), which is the
            # fallback's test, not this one's.
            "APP_SHARED_STATE__DEADLINE_SECONDS": "0.2",
        }
    )
    log = logs / f"gateway-{index}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Gateway(key, f"http://127.0.0.1:{port}", process, log)


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.send_signal(signal.SIGTERM)
    try:
        gateway.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait(timeout=10)


async def stop_gateways(gateways: list[Gateway]) -> None:
    """Stop them all at once, in threads: the upstream they may be draining runs on this loop."""
    running = [g for g in gateways if g.process.poll() is None]
    await asyncio.gather(*(asyncio.to_thread(stop_gateway, g) for g in running))


@pytest.fixture
async def fleet(upstream: Upstream, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Fleet]:
    trials = Trials()
    upstream.route("market-regime/EURUSD", trials.handler)
    gateways = [start_gateway(i, upstream, redis_server.url, tmp_path) for i in range(REPLICAS)]
    try:
        async with aiohttp.ClientSession() as http:
            running = Fleet(gateways, trials, http, aioredis.Redis.from_url(redis_server.url))
            try:
                ends = time.monotonic() + 20
                for i, gateway in enumerate(gateways):
                    while True:
                        assert gateway.process.poll() is None, gateway.log.read_text()
                        assert time.monotonic() < ends, f"gateway {i} did not start"
                        with contextlib.suppress(aiohttp.ClientConnectionError):
                            shared = (await running.status(i))["shared_state"]
                            if not shared["degraded"]:
                                gateway.replica_id = shared["replica_id"]
                                break
                        await asyncio.sleep(0.05)
                yield running
            finally:
                trials.gate.set()  # nothing left waiting at the upstream as the replicas stop
                for task in running.tasks:
                    task.cancel()
                await asyncio.gather(*running.tasks, return_exceptions=True)
                await running.redis.aclose()
    finally:
        await stop_gateways(gateways)


async def open_every_replica(fleet: Fleet) -> None:
    """Failing calls at every closed replica until all three breakers are open."""
    ends = time.monotonic() + 5
    states = await fleet.states()
    while states != ["open"] * REPLICAS:
        assert time.monotonic() < ends, states
        closed = [i for i, state in enumerate(states) if state == "closed"]
        await asyncio.gather(*(fleet.call(i) for i in closed for _ in range(3)))
        states = await fleet.states()
    assert states == ["open"] * REPLICAS


async def settled(tasks: list[asyncio.Task[Call]], pending: int, timeout: float = 3.0) -> None:
    """Wait until all but ``pending`` of ``tasks`` are done (or the timeout)."""
    ends = time.monotonic() + timeout
    waiting = {t for t in tasks if not t.done()}
    while len(waiting) > pending and (left := ends - time.monotonic()) > 0:
        _, waiting = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)


def renewed(calls: list[Call]) -> bool:
    """A later refusal promised a longer wait than an earlier one: the replica's break was renewed."""
    waits = [c.body["retry_after"] for c in sorted(calls, key=lambda c: c.sent) if c.body.get("retry_after")]
    return any(later > earlier for earlier, later in itertools.pairwise(waits))


async def test_half_open_lets_one_trial_through_across_the_fleet_and_its_success_closes_every_replica(
    fleet: Fleet,
) -> None:
    await open_every_replica(fleet)
    fleet.trials.failing = False  # healthy again; its answers wait at the gate
    mark = len(fleet.trials.seen)
    started = time.monotonic()
    tasks: list[asyncio.Task[Call]] = []
    # Waves at every replica from before any break ends until one full break after the
    # trial arrived: each other replica's own break ends inside the window.
    trial_at: float | None = None
    while trial_at is None or time.monotonic() < trial_at + RESET + 0.1:
        assert time.monotonic() < started + 3, "no trial reached the upstream"
        tasks += fleet.wave()
        await asyncio.sleep(EVERY)
        if trial_at is None and fleet.trials.since(mark):
            trial_at = fleet.trials.since(mark)[0].at
    await settled(tasks, pending=1)
    holder = await fleet.probe_holder()
    states = await fleet.states()

    seen = fleet.trials.since(mark)
    pending = [t for t in tasks if not t.done()]
    answered = [t.result() for t in tasks if t.done()]
    assert len(seen) == 1, [(round(s.at - started, 3), s.key) for s in seen]
    assert len(pending) == 1  # the trial, held at the upstream
    trial_sender = [g.key for g in fleet.gateways].index(seen[0].key)
    assert trial_sender == holder  # the replica holding the probe lock sent it
    assert all(c.short_circuited for c in answered), {(c.status, c.body.get("error")) for c in answered}
    assert {c.replica for c in answered} == set(range(REPLICAS))
    assert len(answered) >= 10 * REPLICAS * WAVE
    assert states[trial_sender] == "half_open"
    assert [s for i, s in enumerate(states) if i != trial_sender] == ["open"] * (REPLICAS - 1)
    for other in set(range(REPLICAS)) - {trial_sender}:
        # Its own break ended during the window: it took another instead of a trial.
        assert renewed([c for c in answered if c.replica == other]), other

    fleet.trials.gate.set()  # the trial succeeds
    trial = await pending[0]
    assert (trial.status, trial.replica) == (200, trial_sender)
    ends = time.monotonic() + 3
    states = await fleet.states()
    while states != ["closed"] * REPLICAS:
        assert time.monotonic() < ends, states
        await asyncio.sleep(0.02)
        states = await fleet.states()
    assert states == ["closed"] * REPLICAS
    # Calls reach the upstream again, from every replica.
    mark = len(fleet.trials.seen)
    calls = await asyncio.gather(*fleet.wave())
    assert [c.status for c in calls] == [200] * REPLICAS * WAVE
    assert sorted(s.key for s in fleet.trials.since(mark)) == sorted(
        g.key for g in fleet.gateways for _ in range(WAVE)
    )


async def test_a_failed_trial_reopens_every_replica_and_the_next_half_open_again_admits_one(
    fleet: Fleet,
) -> None:
    await open_every_replica(fleet)
    mark = len(fleet.trials.seen)  # still failing: every trial fails
    started = time.monotonic()
    tasks: list[asyncio.Task[Call]] = []
    after_first: list[str] = []
    holders: list[int | None] = []
    # Waves at every replica through two half-opens, and a little past the second trial.
    while len(fleet.trials.since(mark)) < 2 or time.monotonic() < fleet.trials.since(mark)[1].at + 0.1:
        assert time.monotonic() < started + 3, "fewer than two trials reached the upstream"
        tasks += fleet.wave()
        await asyncio.sleep(EVERY)
        if not after_first and any(t.done() and not t.result().short_circuited for t in tasks):
            # The first trial has been answered (failed): where every replica is now.
            after_first = await fleet.states()
            holders.append(await fleet.probe_holder())
    calls = await asyncio.gather(*tasks)
    holders.append(await fleet.probe_holder())

    seen = fleet.trials.since(mark)
    keys = [g.key for g in fleet.gateways]
    assert len(seen) == 2, [(round(s.at - started, 3), keys.index(s.key)) for s in seen]
    prober = keys.index(seen[0].key)
    assert keys.index(seen[1].key) == prober  # the same replica probes again
    assert holders == [prober, prober]  # it held the probe lock throughout
    # The failed trial reopened the prober for a whole break before the next one.
    assert seen[1].at - seen[0].at >= RESET - 0.01, seen[1].at - seen[0].at
    assert after_first == ["open"] * REPLICAS
    trials = [c for c in calls if not c.short_circuited]
    assert [(c.replica, c.status, c.body["error"], c.body["attempts"]) for c in trials] == [
        (prober, 503, "ServerError", 1)
    ] * 2  # each trial failed with the upstream's own error, and was not retried
    assert {c.replica for c in calls if c.short_circuited} == set(range(REPLICAS))
    assert len(calls) >= 20 * REPLICAS * WAVE
    for other in set(range(REPLICAS)) - {prober}:
        assert renewed([c for c in calls if c.replica == other]), other


async def test_after_the_trial_succeeds_no_replica_reopens_on_the_open_leases_of_the_outage(
    fleet: Fleet,
) -> None:
    # Replica 0 opens first; 1 and 2 a fraction of a break later, each on its own failures
    # (not on the quorum), so their open leases outlive replica 0's break.
    await asyncio.gather(*(fleet.call(0) for _ in range(THRESHOLD)))
    assert await fleet.states() == ["open", "closed", "closed"]  # one lease: under the quorum
    await asyncio.sleep(RESET / 2)
    await asyncio.gather(*(fleet.call(i) for i in (1, 2) for _ in range(THRESHOLD - 1)))
    # Their last failures answered at one moment: each trips before it can hear the other.
    fleet.trials.hold_failures = asyncio.Event()
    mark = len(fleet.trials.seen)
    last = [asyncio.create_task(fleet.call(i)) for i in (1, 2)]
    ends = time.monotonic() + 2
    while len(fleet.trials.since(mark)) < 2:
        assert time.monotonic() < ends, "the last failures never reached the upstream"
        await asyncio.sleep(0.002)
    fleet.trials.hold_failures.set()
    assert [c.body["error"] for c in await asyncio.gather(*last)] == ["ServerError"] * 2
    assert await fleet.states() == ["open"] * REPLICAS
    later = {fleet.gateways[i].replica_id.encode() for i in (1, 2)}
    ends = time.monotonic() + 1
    leases = set(await fleet.redis.zrange(LEASES_KEY, 0, -1))
    while not later <= leases and time.monotonic() < ends:  # published just after the trip
        await asyncio.sleep(0.01)
        leases = set(await fleet.redis.zrange(LEASES_KEY, 0, -1))
    assert later <= leases  # 1 and 2 each hold an open lease of their own
    fleet.trials.failing = False
    mark = len(fleet.trials.seen)
    started = time.monotonic()
    states = await fleet.states()
    while "half_open" not in states:
        assert time.monotonic() < started + 3, states
        states = await fleet.states()
    assert states == ["half_open", "open", "open"]
    # Every replica at once: the first opened is the one probing.
    tasks = fleet.wave()
    await settled(tasks, pending=1)
    seen = fleet.trials.since(mark)
    assert [s.key for s in seen] == [fleet.gateways[0].key]
    assert sum(t.done() and t.result().short_circuited for t in tasks) == REPLICAS * WAVE - 1
    fleet.trials.gate.set()  # the trial succeeds at once, while 1 and 2 still hold leases
    calls = await asyncio.gather(*tasks)
    assert [c.replica for c in calls if c.status == 200] == [0]
    closed_at = time.monotonic()
    states = await fleet.states()
    while states != ["closed"] * REPLICAS:
        assert time.monotonic() < closed_at + 3, states
        await asyncio.sleep(0.01)
        states = await fleet.states()
    # ...and stays closed past the end of every lease of the outage.
    history: list[list[str]] = []
    while time.monotonic() < closed_at + RESET + 0.1:
        history.append(await fleet.states())
        await asyncio.sleep(0.02)
    assert history
    assert all(states == ["closed"] * REPLICAS for states in history), history
    mark = len(fleet.trials.seen)
    calls = await asyncio.gather(*fleet.wave())
    assert [c.status for c in calls] == [200] * REPLICAS * WAVE
    assert len(fleet.trials.since(mark)) == REPLICAS * WAVE
