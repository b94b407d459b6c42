"""A client takes a new config while calls are in flight against real upstreams, keeping its state."""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.clients import (
    BaseServiceClient,
    CircuitBreakerOpenError,
    ClientConfig,
    ClientTimeoutError,
    ServerError,
)
from app.clients.balanced import BalancedTransport
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from app.resilience.window import CountWindow
from tests.support.discovery import eventually
from tests.support.transports import transport_closed
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

OK = json({"ok": True})
UNAVAILABLE = json({"detail": "down", "code": "unavailable"}, status=503)


def _timed(upstream: Upstream, arrivals: list[tuple[bool, int]], reloaded: list[bool]) -> Any:
    """``/work?ms=N``: answers after N ms; notes, per request, whether it came after the reload and how many were in flight."""

    async def handler(request: web.Request) -> web.StreamResponse:
        arrivals.append((bool(reloaded), upstream.in_flight))
        await asyncio.sleep(int(request.query["ms"]) / 1000)
        return web.json_response({"ok": True})

    return handler


def _changed(client: BaseServiceClient, **fields: Any) -> ClientConfig:
    return ClientConfig.model_validate({**client.config.model_dump(), **fields})


async def test_a_reload_under_200_calls_fails_none_and_the_new_values_apply_after_it(
    make_client, upstream
) -> None:
    """Threshold, timeout and bulkhead size change with 200 calls in flight: all succeed, then the new ones rule.

    Calls started before keep their 2 s timeout (the 1 s ones succeed); the bulkhead
    grows 20 -> 60 and 60 is what the upstream then sees at once; a slow call after it
    times out at the new 0.6 s; the breaker's window keeps every call, and the new
    5% failure rate trips on exactly the tenth failure after them. (The new timeout
    leaves the queued 40 ms calls a wide margin: at 0.25 s, one of them timed out in a
    full suite's run, where a pause of the process's own took more than 0.2 s.)
    """
    arrivals: list[tuple[bool, int]] = []
    reloaded: list[bool] = []
    upstream.route("work", _timed(upstream, arrivals, reloaded))
    upstream.route("fail", UNAVAILABLE)
    client = make_client(
        upstream.base_url,
        max_retries=0,
        timeout_seconds=2.0,
        bulkhead_max_concurrent=20,
        bulkhead_max_waiting=400,
        circuit_breaker_mode="failure_rate",
        circuit_breaker_window_size=1000,
        circuit_breaker_minimum_calls=20,
        circuit_breaker_failure_rate=0.5,
    )
    breaker, bulkhead, observer, window = (
        client.breaker,
        client.bulkhead,
        client.observer,
        client.breaker.window,
    )
    slow = [asyncio.create_task(client.get("work", params={"ms": 1000})) for _ in range(5)]
    fast = [asyncio.create_task(client.get("work", params={"ms": 40})) for _ in range(195)]
    await eventually(
        lambda: upstream.in_flight == 20 and bulkhead.queued >= 150, what="20 in flight, the rest queued"
    )

    reloaded.append(True)
    client.reconfigure(
        _changed(client, timeout_seconds=0.6, bulkhead_max_concurrent=60, circuit_breaker_failure_rate=0.05)
    )
    results = await asyncio.gather(*slow, *fast, return_exceptions=True)

    assert results == [{"ok": True}] * 200
    assert (client.breaker, client.bulkhead, client.observer, client.breaker.window) == (
        breaker,
        bulkhead,
        observer,
        window,
    )
    assert max(n for after, n in arrivals if not after) == 20
    assert max(n for after, n in arrivals if after) == 60  # the pool grew with the bulkhead
    started = time.monotonic()
    with pytest.raises(ClientTimeoutError):
        await client.get("work", params={"ms": 2000})
    assert 0.6 <= time.monotonic() - started < 1.5
    assert isinstance(window, CountWindow)
    assert (window.totals.calls, window.totals.failures) == (201, 1)
    for _ in range(9):  # 10 of 210: 4.8%
        with pytest.raises(ServerError):
            await client.get("fail")
    assert breaker.state_name == "closed"
    with pytest.raises(ServerError):
        await client.get("fail")  # 11 of 211: 5.2%
    assert breaker.state_name == "open"


async def test_a_smaller_bulkhead_lets_calls_in_flight_finish_and_admits_none_until_below_it(
    make_client, upstream
) -> None:
    """30 -> 10 with 30 in flight and 70 waiting: no call fails, and none starts while 10 or more are in flight."""
    arrivals: list[tuple[bool, int]] = []
    reloaded: list[bool] = []
    upstream.route("work", _timed(upstream, arrivals, reloaded))
    client = make_client(
        upstream.base_url, max_retries=0, bulkhead_max_concurrent=30, bulkhead_max_waiting=100
    )
    calls = [asyncio.create_task(client.get("work", params={"ms": 30})) for _ in range(100)]
    await eventually(lambda: upstream.in_flight == 30, what="30 in flight")
    reloaded.append(True)
    client.reconfigure(_changed(client, bulkhead_max_concurrent=10))
    assert await asyncio.gather(*calls) == [{"ok": True}] * 100
    assert max(n for after, n in arrivals if after) == 10


async def test_an_open_breaker_keeps_its_open_until_and_its_counts_survive(
    make_client, upstream, clock
) -> None:
    """A failure counted before a reload opens the breaker at the new threshold; open, it keeps its end, then the new reset time rules."""
    upstream.route("fail", UNAVAILABLE)
    upstream.route("ok", OK)
    client = make_client(
        upstream.base_url,
        clock=clock,
        max_retries=0,
        circuit_breaker_failure_threshold=3,
        circuit_breaker_reset_timeout_seconds=30,
    )
    with pytest.raises(ServerError):
        await client.get("fail")
    client.reconfigure(_changed(client, circuit_breaker_failure_threshold=2))
    assert client.breaker.fail_counter == 1
    with pytest.raises(ServerError):
        await client.get("fail")
    assert client.breaker.state_name == "open"

    clock.advance(10)
    client.reconfigure(
        _changed(client, circuit_breaker_reset_timeout_seconds=5, circuit_breaker_failure_threshold=4)
    )
    assert client.breaker.seconds_until_half_open() == 20
    hits = upstream.hits.total()
    with pytest.raises(CircuitBreakerOpenError) as refused:
        await client.get("ok")
    assert refused.value.retry_after == 20
    assert upstream.hits.total() == hits
    clock.advance(20)
    with pytest.raises(ServerError):
        await client.get("fail")  # the trial fails: open again, for the new 5 s
    assert client.breaker.seconds_until_half_open() == 5
    clock.advance(5)
    assert await client.get("ok") == {"ok": True}
    assert client.breaker.state_name == "closed"


async def test_a_config_that_cannot_apply_live_is_refused_and_changes_nothing(make_client, upstream) -> None:
    """A new service_name (with a new timeout and threshold): ValueError naming the field and its variable; all stays."""
    upstream.route("ok", OK)
    client = make_client(upstream.base_url, timeout_seconds=2.0, circuit_breaker_failure_threshold=5)
    old = client.config
    with pytest.raises(
        ValueError, match=r"service_name \(APP_UPSTREAMS__<NAME>__SERVICE_NAME\) cannot change"
    ):
        client.reconfigure(
            _changed(client, service_name="renamed", timeout_seconds=0.1, circuit_breaker_failure_threshold=1)
        )
    assert client.config is old
    assert client.policies.config is old
    assert client.breaker.failure_threshold == 5
    assert client._pipeline.attempt_timeout == 2.0
    assert await client.get("ok") == {"ok": True}


async def test_clients_sharing_policies_are_each_reached_and_the_policies_change_once(
    upstream, transport
) -> None:
    """Two clients on one ClientPolicies (as the container's and the factory's are): both listed, both take the new config."""
    upstream.route("ok", OK)
    config = ClientConfig(
        base_url=upstream.base_url, service_name="shared-live", timeout_seconds=2.0, transport=transport
    )
    policies = ClientPolicies.from_config(config, families=MetricFamilies(CollectorRegistry()))
    async with (
        BaseServiceClient(config, policies=policies) as one,
        BaseServiceClient(config, policies=policies) as two,
    ):
        assert set(policies.clients()) == {one, two}
        new = config.model_copy(update={"timeout_seconds": 0.5, "bulkhead_max_concurrent": 3})
        for client in policies.clients():
            client.reconfigure(new)
        policies.reconfigure(new)  # after its clients: nothing left to do
        assert (policies.config, one.config, two.config) == (new, new, new)
        assert policies.bulkhead.max_concurrent == 3
        assert one._pipeline.attempt_timeout == two._pipeline.attempt_timeout == 0.5
        assert await one.get("ok") == await two.get("ok") == {"ok": True}


# -- many instances ----------------------------------------------------------------------


@pytest.fixture
async def fleet() -> AsyncIterator[list[Upstream]]:
    servers = [Upstream() for _ in range(3)]
    for server in servers:
        server.route("*", OK)
        await server.server.start_server()
    try:
        yield servers
    finally:
        for server in servers:
            await server.server.close()


@pytest.fixture
async def make_fleet_client(transport: str) -> AsyncIterator[Callable[..., BaseServiceClient]]:
    made: list[BaseServiceClient] = []

    def build(**fields: Any) -> BaseServiceClient:
        config = ClientConfig(
            service_name="live-fleet",
            max_retries=0,
            bulkhead_max_concurrent=40,
            bulkhead_max_waiting=400,
            enable_request_logging=False,
            transport=transport,
            **fields,
        )
        policies = ClientPolicies.from_config(config, families=MetricFamilies(CollectorRegistry()))
        client = BaseServiceClient(config, policies=policies)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


def _slow(upstream: Upstream) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.03)
        return web.json_response({"port": request.url.port})

    upstream.route("*", handler)


async def test_an_instances_change_mid_traffic_drains_the_removed_one_without_a_failed_call(
    fleet, make_fleet_client
) -> None:
    """[A, B] -> [B, C] under 200 calls: all succeed; A takes no new call, drains, and its connections close."""
    a, b, c = fleet
    for server in fleet:
        _slow(server)
    client = make_fleet_client(instances=[a.base_url, b.base_url])
    transport = client._transport
    assert isinstance(transport, BalancedTransport)
    calls = [asyncio.create_task(client.get("who")) for _ in range(200)]
    await eventually(lambda: a.in_flight > 0 and transport.transport_for(a.base_url + "/") is not None)
    a_transport = transport.transport_for(a.base_url + "/")
    balancer = client.policies.balancer
    assert balancer is not None
    kept = {i.url: i for i in balancer.instances}[b.base_url + "/"]

    client.reconfigure(_changed(client, instances=[b.base_url, c.base_url], timeout_seconds=1.5))
    assert balancer.urls() == (b.base_url + "/", c.base_url + "/")
    b_transport = transport.transport_for(b.base_url + "/")
    assert b_transport is not None
    # The instances' transports took the new config too (each transport keeps it as _config).
    assert b_transport._config.timeout_seconds == 1.5  # type: ignore[attr-defined]
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, dict) for r in results), [r for r in results if not isinstance(r, dict)]
    assert {i.url: i for i in balancer.instances}[b.base_url + "/"] is kept  # B kept its state
    assert a.base_url + "/" not in {i.url for i in balancer.instances}
    assert sum(c.hits.values()) > 0
    await eventually(
        lambda: a_transport is not None and transport_closed(a_transport), what="A's transport closed"
    )
    assert transport.transport_for(a.base_url + "/") is None
    a_hits = sum(a.hits.values())
    await asyncio.gather(*(client.get("who") for _ in range(20)))
    assert sum(a.hits.values()) == a_hits


def _write(path: Path, urls: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(jsonlib.dumps({"instances": urls}))
    os.replace(tmp, path)


async def test_a_new_discovery_source_replaces_the_old_and_the_instances_stay_until_its_first_good_set(
    tmp_path: Path, fleet, make_fleet_client
) -> None:
    """Discovery from file A to a file not there yet: calls stay on A until it lists B and C; the old watch stops."""
    a, b, c = fleet
    first, second = tmp_path / "one" / "instances.json", tmp_path / "two" / "instances.json"
    first.parent.mkdir()
    second.parent.mkdir()
    _write(first, [a.base_url])
    client = make_fleet_client(base_url=a.base_url, discovery=first.as_uri())
    assert await client.get("who") == {"ok": True}
    old = client.policies.discovery
    assert old is not None
    assert old.running

    client.reconfigure(_changed(client, discovery=second.as_uri()))
    new = client.policies.discovery
    assert new is not None
    assert new is not old
    await eventually(
        lambda: not old.running and new.running, what="the old watch stopped, the new one started"
    )
    assert client.policies.balancer is not None
    assert client.policies.balancer.urls() == (a.base_url + "/",)
    assert await client.get("who") == {"ok": True}
    assert sum(a.hits.values()) == 2

    _write(second, [b.base_url, c.base_url])
    await eventually(lambda: set(client.policies.balancer.urls()) == {b.base_url + "/", c.base_url + "/"})  # type: ignore[union-attr]
    await asyncio.gather(*(client.get("who") for _ in range(20)))
    assert sum(a.hits.values()) == 2
    assert sum(b.hits.values()) + sum(c.hits.values()) == 20
    _write(first, [c.base_url])  # the old file: nobody listens any more
    await asyncio.sleep(0.2)
    assert set(client.policies.balancer.urls()) == {b.base_url + "/", c.base_url + "/"}  # type: ignore[union-attr]
