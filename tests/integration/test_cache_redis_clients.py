"""Clients sharing the response cache through a real Redis: across processes, with Redis down, stale-if-error."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.cache import RedisStore
from app.cache.clocks import SystemWallClock
from app.clients import BaseServiceClient, ClientConfig
from app.clients.caching import ClientCache
from app.clients.fallback import collect_degraded
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from app.resilience.clock import MONOTONIC, Clock
from app.state import SharedState, SharedStateSettings
from tests.support.manual_clock import ManualClock
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.asyncio, pytest.mark.filterwarnings("error")]

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "cached-svc"
#: The shared state's deadline in the fault test, and what a call may take beyond it (an
#: upstream round trip and the loop's scheduling on a loaded machine).
DEADLINE = 0.02
MARGIN = 0.2


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


class Answers:
    """A handler answering JSON (a new serial each time) with ``cache_control`` and an ETag; or ``status``."""

    def __init__(self, cache_control: str) -> None:
        self.cache_control = cache_control
        self.serial = itertools.count(1)
        #: While set, every request is answered with this status (a 503 outage).
        self.failing: int | None = None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.failing is not None:
            return web.json_response({"detail": "down", "code": "unavailable"}, status=self.failing)
        response = web.json_response({"quote": 1.0842, "serial": next(self.serial)})
        assert response.body is not None
        etag = _etag(bytes(response.body))  # type: ignore[arg-type]
        response.headers.update({"Cache-Control": self.cache_control, "ETag": etag})
        return response


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, "never became true"
        await asyncio.sleep(0.01)


class Replica:
    """One replica in this process: its own clock, metrics, policies and client, on ``state``."""

    def __init__(self, state: SharedState, upstream: Upstream, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self.config = ClientConfig(
            base_url=upstream.base_url,
            service_name=SERVICE,
            cache_enabled=True,
            cache_store="redis",
            cache_max_bytes=1024 * 1024,
            max_retries=0,
            timeout_seconds=5,
        )
        self.policies = ClientPolicies.from_config(
            self.config, self.clock, families=MetricFamilies(CollectorRegistry()), shared_state=state
        )
        self.client = BaseServiceClient(self.config, policies=self.policies)

    @property
    def cache(self) -> ClientCache:
        assert self.policies.cache is not None
        return self.policies.cache

    def status(self) -> dict[str, Any]:
        return self.cache.status()


@pytest.fixture
async def replicas(upstream: Upstream) -> AsyncIterator[Callable[..., Replica]]:
    """Build replicas on shared states for a Redis; every client and state closed at teardown."""
    made: list[Replica] = []
    states: list[SharedState] = []

    def build(
        url: str, state: SharedState | None = None, clock: Clock | None = None, **settings: Any
    ) -> Replica:
        if state is None:
            state = SharedState(
                SharedStateSettings(url=url, **{"deadline_seconds": DEADLINE, **settings}),
                registry=CollectorRegistry(),
            )
            states.append(state)
        replica = Replica(state, upstream, ManualClock() if clock is None else clock)
        made.append(replica)
        return replica

    yield build
    for replica in made:
        await replica.client.close()
    for state in states:
        await state.aclose()


async def started(state: SharedState) -> None:
    """``state`` started, once Redis has answered it (until then it is degraded: no shared store)."""
    await state.start()
    await until(lambda: not state.degraded)


async def run_client_process(redis_url: str, base_url: str, path: str, calls: int) -> dict[str, Any]:
    """One replica in a process of its own (tests/support/cache_client.py): its answers and cache status."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.cache_client",
        redis_url,
        base_url,
        path,
        str(calls),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


async def test_two_client_processes_share_one_upstream_fetch(
    upstream: Upstream, redis_server: RedisServer
) -> None:
    """Process A fetches once and stores in Redis; process B, started after, is answered from it: one upstream request in all."""
    upstream.route("quotes/EURUSD", Answers("max-age=60"))
    calls = 4
    first = await run_client_process(redis_server.url, upstream.base_url, "quotes/EURUSD", calls)
    assert upstream.hits["quotes/EURUSD"] == 1
    second = await run_client_process(redis_server.url, upstream.base_url, "quotes/EURUSD", calls)
    assert upstream.hits["quotes/EURUSD"] == 1  # B never reached the upstream
    assert first["answers"] == [{"quote": 1.0842, "serial": 1}] * calls
    assert second["answers"] == first["answers"]
    a, b = first["status"], second["status"]
    assert (a["store"], a["misses"], a["hits"], a["stored"]) == ("redis", 1, calls - 1, 1)
    assert (b["store"], b["misses"], b["hits"], b["stored"]) == ("redis", 0, calls, 0)
    assert a["store_failures"] == b["store_failures"] == 0


@pytest.mark.parametrize("fault", ["killed", "stopped"])
async def test_with_redis_down_every_call_is_a_miss_served_by_the_upstream_and_hits_resume(
    upstream: Upstream, redis_server: RedisServer, replicas: Callable[..., Replica], fault: str
) -> None:
    """Redis killed or SIGSTOPped: each call misses, is answered by the upstream within the deadline plus a margin; back, hits resume."""
    upstream.route("quotes/EURUSD", Answers("max-age=60"))
    # Two replicas on one SharedState, a third on its own: both ways of sharing Redis. Real
    # clocks: the durations measured are real ones.
    fast = {"breaker_reset_seconds": 0.2, "replica_lease_seconds": 0.6}
    a = replicas(redis_server.url, clock=MONOTONIC, **fast)
    b = replicas(redis_server.url, state=a.state, clock=MONOTONIC)
    c = replicas(redis_server.url, clock=MONOTONIC, **fast)
    await started(a.state)
    await started(c.state)
    everyone = (a, b, c)
    if fault == "killed":
        await asyncio.to_thread(redis_server.kill)
    else:
        redis_server.stop()
    calls, worst = 30, 0.0
    answers = []
    for i in range(calls):
        replica = everyone[i % 3]
        began = time.monotonic()
        answers.append(await replica.client.get("quotes/EURUSD"))
        worst = max(worst, time.monotonic() - began)
    assert upstream.hits["quotes/EURUSD"] == calls  # not one answer from the store
    assert [answer["serial"] for answer in answers] == list(range(1, calls + 1))
    # A miss with a hung Redis waits out two deadlines (the load, then the save) until
    # Redis's breaker opens; a dead one answers at once. Either way far below the bound.
    assert worst < DEADLINE + MARGIN, worst
    for replica in everyone:
        status = replica.status()
        assert (status["hits"], status["misses"]) == (0, calls // 3), status
    assert a.cache.cache.store.stats().failures > 0
    assert c.cache.cache.store.stats().failures > 0
    assert a.state.degraded
    assert c.state.degraded

    if fault == "killed":
        await asyncio.to_thread(redis_server.start)  # back on the same port, empty
    else:
        redis_server.cont()
    await until(lambda: not a.state.degraded and not c.state.degraded)
    before = upstream.hits["quotes/EURUSD"]
    fetched = await a.client.get("quotes/EURUSD")
    assert await b.client.get("quotes/EURUSD") == fetched
    assert await c.client.get("quotes/EURUSD") == fetched
    # At most the one fetch (a SET cut by the deadline while Redis was stopped may have
    # landed once it ran again: an entry as good as any).
    assert upstream.hits["quotes/EURUSD"] - before <= 1
    assert b.status()["hits"] == 1
    assert c.status()["hits"] == 1


async def test_stale_if_error_is_served_by_another_replica_marked_degraded(
    upstream: Upstream,
    redis_server: RedisServer,
    replicas: Callable[..., Replica],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stores max-age=1, stale-if-error=300; past max-age the upstream answers 503; B, which never called it, serves the stale entry as degraded."""
    # The wall clock the cache ages shared entries by (monotonic clocks are each
    # process's own), moved by the test instead of slept through.
    offset = 0.0
    real_time = time.time
    monkeypatch.setattr(SystemWallClock, "time", lambda self: real_time() + offset)
    answers = Answers("max-age=1, stale-if-error=300")
    upstream.route("quotes/EURUSD", answers)
    # A generous Redis deadline: a slow machine must not turn B's load into a miss here.
    a = replicas(redis_server.url, deadline_seconds=0.5)
    b = replicas(redis_server.url, deadline_seconds=0.5)
    assert a.state is not b.state
    assert isinstance(a.cache.cache.store, RedisStore)
    await started(a.state)
    await started(b.state)

    stored = await a.client.get("quotes/EURUSD")
    assert a.status()["stored"] == 1
    assert upstream.hits["quotes/EURUSD"] == 1

    offset = 5.0  # past max-age, well within stale-if-error
    answers.failing = 503
    with collect_degraded() as degraded:
        served = await b.client.get("quotes/EURUSD")
    assert served == stored
    assert degraded == [SERVICE]
    assert upstream.hits["quotes/EURUSD"] == 2  # B's revalidation met the 503
    assert upstream.requests[-1].headers.get("If-None-Match", "").startswith('"')
    status = b.status()
    assert (status["stale_if_error"], status["hits"], status["misses"]) == (1, 0, 0), status
