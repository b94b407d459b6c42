"""The breaker over three replicas sharing a real redis-server: quorum, one probe, fleet commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.pipeline import is_breaker_failure
from app.state import SharedBreaker, SharedState, SharedStateSettings
from tests.support.redis import RedisServer


class Replica:
    def __init__(self, url: str, name: str, *, quorum: int | None, reset: float) -> None:
        self.state = SharedState(
            # A generous deadline: these tests are about the coordination, and a loaded CI
            # machine's slow answer would otherwise drop a re-read (the deadline's own tests
            # are in test_shared_state.py).
            SharedStateSettings(url=url, deadline_seconds=1.0, replica_lease_seconds=1.0),
            replica_id=name,
            registry=CollectorRegistry(),
        )
        self.breaker = CircuitBreakerPolicy(
            failure_threshold=3, reset_timeout_seconds=reset, is_failure=is_breaker_failure, name="svc"
        )
        self.shared = SharedBreaker(self.state, self.breaker, "svc", quorum=quorum)


async def fleet(url: str, *, quorum: int | None = None, reset: float = 60.0) -> list[Replica]:
    replicas = [Replica(url, f"r{i}", quorum=quorum, reset=reset) for i in range(3)]
    for replica in replicas:
        await replica.state.start()
    await until(lambda: all(r.state.replicas_seen() == 3 for r in replicas))
    await asyncio.sleep(0.1)  # every listener subscribed
    return replicas


@pytest.fixture
async def closing() -> AsyncIterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for replica in made:
        await replica.state.aclose()


async def until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, "never became true"
        await asyncio.sleep(0.01)


async def test_one_replica_opening_does_not_open_the_others_a_quorum_does(redis_server, closing) -> None:
    replicas = await fleet(redis_server.url)  # quorum: a majority of 3, so 2
    closing.extend(replicas)
    a, b, c = replicas
    a.breaker.open()  # its own network fault, say
    await asyncio.sleep(0.3)
    assert (b.breaker.state_name, c.breaker.state_name) == ("closed", "closed")
    b.breaker.open()  # a second replica sees the upstream fail too
    await until(lambda: c.breaker.state_name == "open")
    assert c.shared.open_leases >= 2


async def test_only_one_replica_probes_and_its_success_closes_the_fleet(redis_server, closing) -> None:
    replicas = await fleet(redis_server.url, quorum=1, reset=0.6)
    closing.extend(replicas)
    replicas[0].breaker.open()
    await until(lambda: all(r.breaker.state_name == "open" for r in replicas))
    # At the end of the break, exactly one replica is due for a trial; the others opened again.
    half_open: set[str] = set()
    ends = time.monotonic() + 1.5
    while time.monotonic() < ends:
        half_open |= {r.state.replica_id for r in replicas if r.breaker.state_name == "half_open"}
        await asyncio.sleep(0.005)
    assert len(half_open) == 1, half_open
    prober = next(r for r in replicas if r.state.replica_id in half_open)
    prober.breaker.reset()  # its trial succeeded
    await until(lambda: all(r.breaker.state_name == "closed" for r in replicas))


async def test_a_prober_whose_trial_fails_keeps_the_probe_lock_through_its_next_break(
    redis_server, closing
) -> None:
    """A slow trial fails and the prober opens again: the lock is its own, never free, until its next trial.

    It took the lock a little before its break ended, for one break. Were the lock only
    asked for again shortly before the new break ends, it would lapse first, by as long
    as the trial took, and a replica asking in that gap would send the next trial.
    """
    from redis.asyncio import Redis  # noqa: PLC0415 - shared state's library, imported where used

    replicas = await fleet(redis_server.url, quorum=1, reset=0.6)
    closing.extend(replicas)
    replicas[0].breaker.open()
    await until(lambda: all(r.breaker.state_name == "open" for r in replicas))
    await until(lambda: any(r.breaker.state_name == "half_open" for r in replicas), timeout=2.0)
    prober = next(r for r in replicas if r.breaker.state_name == "half_open")
    redis = Redis.from_url(redis_server.url)
    try:
        key = prober.shared._probe
        assert await redis.get(key) == prober.state.replica_id.encode()
        await asyncio.sleep(0.15)  # a slow trial
        prober.breaker.open()  # it failed
        holders: set[bytes | None] = set()
        ends = time.monotonic() + 0.8  # past the new break's end, when the lock was taken a break ago
        while time.monotonic() < ends:
            holders.add(await redis.get(key))
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
    assert holders == {prober.state.replica_id.encode()}


async def test_isolate_and_reset_act_on_every_replica(redis_server, closing) -> None:
    replicas = await fleet(redis_server.url)
    closing.extend(replicas)
    await replicas[0].shared.isolate()
    await until(lambda: all(r.breaker.isolated for r in replicas))
    late = Replica(redis_server.url, "late", quorum=None, reset=60)
    closing.append(late)
    await late.state.start()
    await until(lambda: late.breaker.isolated)  # a replica joining later reads it too
    await replicas[1].shared.reset()
    await until(lambda: all(r.breaker.state_name == "closed" for r in [*replicas, late]))
    assert not any(r.breaker.isolated for r in [*replicas, late])


async def test_without_redis_each_replica_is_on_its_own(tmp_path: Path, closing) -> None:
    dead = RedisServer(tmp_path)  # never started
    replica = Replica(dead.url, "alone", quorum=None, reset=60)
    closing.append(replica)
    await replica.state.start()
    started = time.monotonic()
    replica.breaker.open()
    assert replica.breaker.state_name == "open"
    replica.breaker.reset()
    assert replica.breaker.state_name == "closed"
    assert time.monotonic() - started < 0.1  # never waiting on Redis


async def test_a_fleet_reset_clears_the_open_leases_every_replica_shows(redis_server, closing) -> None:
    """After a reset no replica keeps showing the leases it deleted (the dashboard's "n open of q")."""
    replicas = await fleet(redis_server.url)
    closing.extend(replicas)
    a, b, c = replicas
    a.breaker.open()
    b.breaker.open()
    await until(lambda: c.breaker.state_name == "open" and c.shared.open_leases >= 2)
    await c.shared.reset()
    await until(lambda: all(r.breaker.state_name == "closed" for r in replicas))
    await asyncio.sleep(0.2)  # every echo heard
    assert [r.shared.status()["open_leases"] for r in replicas] == [0, 0, 0]


async def test_a_replicas_own_reset_echo_does_not_close_it_after_it_reopened(redis_server, closing) -> None:
    """Reset, then fresh failures open it at once: its own reset, coming back over pub/sub, is not applied again."""
    replicas = await fleet(redis_server.url)
    closing.extend(replicas)
    a = replicas[0]
    for _ in range(5):
        await a.shared.reset()
        a.breaker.open()  # before the echo of its reset can arrive
        await asyncio.sleep(0.1)  # the echo arrives now
        assert a.breaker.state_name == "open"
