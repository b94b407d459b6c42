"""Many instances of one upstream, each a real server on 127.0.0.1: routing around the sick ones."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import statistics
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from app.clients import BaseServiceClient, CircuitBreakerOpenError, ClientConfig, ClientError
from app.clients.balanced import BalancedTransport
from app.clients.policies import ClientPolicies
from app.observability.logging import JsonFormatter
from app.observability.metrics import MetricFamilies
from app.observability.tracing import configure_tracing
from app.resilience.clock import MONOTONIC
from tests.support.clock import FakeClock
from tests.support.heap import frozen_heap
from tests.support.transports import transport_closed
from tests.support.upstream import Upstream, delayed, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

OK = json({"ok": True})
UNAVAILABLE = json({"detail": "down", "code": "unavailable"}, status=503)


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

    def build(urls: list[str], clock: Any = None, **fields: Any) -> BaseServiceClient:
        defaults: dict[str, Any] = {
            "service_name": "fleet",
            "timeout_seconds": 2.0,
            "retry_base_delay": 0.001,
            "retry_max_delay": 0.01,
            "retry_jitter": False,
            "max_retries": 2,
            "bulkhead_max_concurrent": 600,
            "bulkhead_max_waiting": 0,
            "enable_request_logging": False,
            "transport": transport,
        }
        config = ClientConfig(instances=urls, **{**defaults, **fields})
        policies = ClientPolicies.from_config(config, clock or MONOTONIC, families=_families())
        client = BaseServiceClient(config, policies=policies)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


def _families() -> MetricFamilies:
    return MetricFamilies(CollectorRegistry())


def _hits(server: Upstream) -> int:
    return sum(server.hits.values())


@pytest.mark.parametrize("policy", ["least_request", "round_robin", "p2c_peak_ewma"])
async def test_one_instance_of_three_answering_503_fails_no_call(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient], policy: str
) -> None:
    clock = FakeClock()  # the pipeline's waits and the ejection's length; RTTs all read 0
    bad = fleet[2]
    bad.route("*", UNAVAILABLE)
    client = make_fleet_client(
        [s.base_url for s in fleet],
        clock=clock,
        load_balancer=policy,
        outlier_consecutive_failures=5,
        outlier_base_ejection_seconds=30,
    )

    def bad_row() -> dict[str, Any]:
        status = client.policies.fleet_status()
        assert status is not None
        return next(r for r in status["instances"] if r["url"].startswith(bad.base_url))

    results = [await client.get("quote") for _ in range(200)]
    assert results == [{"ok": True}] * 200  # not one failed call
    assert client.breaker.state_name == "closed"  # one sick instance is not the service
    if policy == "p2c_peak_ewma":
        # Its first failure's penalty keeps it away before the count is reached; with no
        # time passing on this clock, it never looks cheap again.
        assert _hits(bad) < 5
        assert bad_row()["state"] == "healthy"
        return
    assert _hits(bad) == 5  # ejected after the configured count ...
    assert bad_row()["state"] == "ejected"
    assert bad_row()["ejections"] == 1
    for _ in range(100):  # ... and gets nothing while ejected
        await client.get("quote")
    assert _hits(bad) == 5
    clock.advance(34)  # past the ejection (30 s, up to 10% jitter)
    # Back, it ramps up (slow start: on this frozen clock a tenth of its share, chosen at
    # random), so how many calls its next five failures take varies: until it is ejected
    # again, or 3,000 calls (some 100 expected to reach it; 300 missed it one run in 30).
    for _ in range(3000):
        assert await client.get("quote") == {"ok": True}
        if bad_row()["ejections"] == 2:
            break
    assert _hits(bad) == 10  # traffic again after it, and, still failing, ejected again
    assert bad_row()["ejections"] == 2
    assert 60 <= bad_row()["ejected_for_seconds"] <= 66  # the second lasts twice as long


async def test_a_slow_instance_gets_under_a_tenth_of_the_calls(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    slow = fleet[2]
    slow.route("*", delayed(0.05, OK))
    client = make_fleet_client([s.base_url for s in fleet])
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def caller(n: int) -> None:
        for _ in range(n):
            started = loop.time()
            await client.get("quote")
            latencies.append(loop.time() - started)

    await asyncio.gather(*(caller(10) for _ in range(8)))  # warm-up
    before, latencies[:] = _hits(slow), []
    # Peak-EWMA takes a slow sample at once: a full collection of the test process's heap
    # inside the window (80 ms) made the fast instances look slower than the slow one.
    with frozen_heap():
        await asyncio.gather(*(caller(100) for _ in range(8)))
    share = (_hits(slow) - before) / 800
    assert share < 0.10, share
    # The bulk of the calls see the fast instances' latency, not the slow one's. (The
    # slow one still gets a probe now and then, as its cost decays while idle, so that
    # it is found again once it recovers; those few probes are the tail.) The bound is
    # the slow one's delay, which no call sent there can beat: an absolute one (25 ms)
    # failed on a loaded machine, where the fast instances' own answers slow down too.
    p95 = statistics.quantiles(latencies, n=100)[94]
    assert p95 < 0.05, p95


async def test_a_fast_failing_instance_does_not_attract_calls(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: refused in microseconds
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
    # Ejection off: only the failure penalty keeps traffic away.
    client = make_fleet_client(
        [fleet[0].base_url, fleet[1].base_url, dead],
        outlier_consecutive_failures=10_000,
        outlier_failure_rate_minimum_requests=1_000_000,
    )

    async def caller(n: int) -> None:
        for _ in range(n):
            assert await client.get("quote") == {"ok": True}  # refused attempts are retried elsewhere

    await asyncio.gather(*(caller(5) for _ in range(8)))  # warm-up: the first burst knows nothing yet
    status = client.policies.fleet_status()
    assert status is not None
    refused_before = next(r["requests"] for r in status["instances"] if r["url"].startswith(dead))
    answered_before = _hits(fleet[0]) + _hits(fleet[1])
    with frozen_heap():  # the penalty decays in wall time: a collection's pause would shorten it
        await asyncio.gather(*(caller(50) for _ in range(8)))
    status = client.policies.fleet_status()
    assert status is not None
    refused = next(r["requests"] for r in status["instances"] if r["url"].startswith(dead)) - refused_before
    answered = _hits(fleet[0]) + _hits(fleet[1]) - answered_before
    assert answered == 400
    assert refused / (refused + answered) < 0.05, (refused, answered)
    assert status["ejected"] == 0  # the failure penalty did it, not ejection


async def test_each_retry_goes_to_an_instance_the_call_has_not_tried(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    fleet[0].route("*", UNAVAILABLE)
    fleet[1].route("*", UNAVAILABLE)
    client = make_fleet_client([s.base_url for s in fleet], outlier_consecutive_failures=10_000)
    for _ in range(50):
        assert await client.get("quote") == {"ok": True}
    per_call: dict[str, list[int]] = collections.defaultdict(list)
    for index, server in enumerate(fleet):
        for request in server.requests:
            per_call[request.headers["X-Request-ID"]].append(index)
    assert len(per_call) == 50
    assert all(len(servers) == len(set(servers)) for servers in per_call.values())  # never the same one twice
    assert client.breaker.state_name == "closed"


async def test_the_breaker_opens_only_when_every_instance_fails(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    fleet[0].route("*", UNAVAILABLE)
    client = make_fleet_client(
        [s.base_url for s in fleet],
        max_retries=0,
        circuit_breaker_failure_threshold=3,
        outlier_consecutive_failures=10_000,
    )
    outcomes = collections.Counter()
    for _ in range(90):
        try:
            await client.get("quote")
            outcomes["ok"] += 1
        except Exception as exc:
            outcomes[type(exc).__name__] += 1
    assert client.breaker.state_name == "closed", outcomes  # a third of attempts failing: one instance
    for server in fleet:
        server.route("*", UNAVAILABLE)
    errors = []
    for _ in range(20):  # the 503s of every instance open it; then it refuses
        try:
            await client.get("quote")
        except ClientError as exc:
            errors.append(exc)
    assert isinstance(errors[-1], CircuitBreakerOpenError), errors
    assert client.breaker.state_name == "open"


async def test_a_removed_instance_drains_then_its_connections_close(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    leaving = fleet[1]
    leaving.route("*", delayed(0.3, OK))
    client = make_fleet_client([fleet[0].base_url, leaving.base_url], load_balancer="round_robin")
    await client.get("quote")  # round robin: the first went to fleet[0] ...
    slow_call = asyncio.create_task(client.get("quote"))  # ... this one to the leaving one
    await asyncio.sleep(0.1)
    assert leaving.in_flight == 1
    balancer = client.policies.balancer
    assert balancer is not None
    transport = client._transport
    assert isinstance(transport, BalancedTransport)
    leaving_url = next(u for u in balancer.urls() if u.startswith(leaving.base_url))
    sub = transport.transport_for(leaving_url)
    assert sub is not None
    balancer.update([u for u in balancer.urls() if u != leaving_url])
    for _ in range(20):  # no new calls go to it
        await client.get("quote")
    assert _hits(leaving) == 1
    assert await slow_call == {"ok": True}  # the call in flight finished
    await asyncio.sleep(0.05)  # its transport closes on the loop
    assert transport.transport_for(leaving_url) is None
    assert transport_closed(sub)  # its own session (or pool), closed


async def test_500_callers_with_flapping_instances_leak_nothing(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    flaky: list[bool] = [False, False, False]

    def flapping(index: int) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(0.002)
            if flaky[index]:
                return web.json_response({"detail": "flap"}, status=503)
            return web.json_response({"ok": True})

        return handler

    for index, server in enumerate(fleet):
        server.route("*", flapping(index))
    tasks_before = len(asyncio.all_tasks())
    client = make_fleet_client(
        [s.base_url for s in fleet], outlier_consecutive_failures=3, outlier_base_ejection_seconds=0.05
    )
    balancer = client.policies.balancer
    assert balancer is not None
    urls = balancer.urls()
    stop = asyncio.Event()

    async def flap() -> None:
        step = 0
        while not stop.is_set():
            flaky[:] = [i == step % 3 for i in range(3)]  # one instance failing at a time, in turn
            if step % 5 == 0:  # instances leave and come back, as discovery would say
                balancer.update(urls[: 2 + step % 2])
            step += 1
            await asyncio.sleep(0.01)
        flaky[:] = [False, False, False]
        balancer.update(urls)

    flapper = asyncio.create_task(flap())
    results = await asyncio.gather(*(client.get("quote") for _ in range(500)), return_exceptions=True)
    stop.set()
    await flapper
    failed = [r for r in results if isinstance(r, BaseException)]
    # Some calls fail for real (two instances listed, one ejected, the other failing at
    # that moment): each with a typed error, and most calls get through.
    assert all(isinstance(r, ClientError) for r in failed), failed
    assert len(failed) < 250, collections.Counter(type(r).__name__ for r in failed)
    assert all(i.in_flight == 0 for i in balancer.instances)
    transport = client._transport
    assert isinstance(transport, BalancedTransport)
    subs = [transport.transport_for(u) for u in urls]
    await client.close()
    assert all(transport_closed(s) for s in subs if s is not None)  # every session (or pool) closed
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= tasks_before


async def test_sync_twins_share_the_balancer(fleet: list[Upstream], transport: str) -> None:
    urls = [s.base_url for s in fleet]
    config = ClientConfig(instances=urls, service_name="fleet-sync", max_retries=1, transport=transport)
    client = BaseServiceClient(config, policies=ClientPolicies.from_config(config, families=_families()))
    try:
        results = await asyncio.to_thread(lambda: [client.get_sync("quote") for _ in range(30)])
        assert results == [{"ok": True}] * 30
        assert sum(_hits(s) > 0 for s in fleet) >= 2
    finally:
        await client.close()


async def test_logs_spans_metrics_and_errors_name_the_instance(
    fleet: list[Upstream], caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    fleet[0].route("*", UNAVAILABLE)
    exporter = InMemorySpanExporter()
    configure_tracing("test", processors=[SimpleSpanProcessor(exporter)])
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="app.clients")
    config = ClientConfig(
        instances=[fleet[0].base_url, fleet[1].base_url],
        service_name="named",
        max_retries=0,
        load_balancer="round_robin",
        retry_jitter=False,
        transport=transport,
    )
    client = BaseServiceClient(
        config, policies=ClientPolicies.from_config(config, families=MetricFamilies(registry))
    )
    try:
        first_error: ClientError | None = None
        for _ in range(4):
            try:
                await client.get("quote")
            except ClientError as exc:
                first_error = first_error or exc
    finally:
        await client.close()
        configure_tracing("test", "none")
    bad, good = (f"127.0.0.1:{s.server.port}" for s in fleet[:2])
    assert first_error is not None
    assert first_error.instance == bad
    assert first_error.context()["instance"] == bad
    lines = [orjson.loads(JsonFormatter().format(r)) for r in caplog.records if r.levelno == logging.INFO]
    calls = [line for line in lines if line.get("event") != "instance_ejected" and "outcome" in line]
    assert {line["server.address"] for line in calls} == {bad, good}
    attempts = [
        s for s in exporter.get_finished_spans() if "http.request.resend_count" in (s.attributes or {})
    ]
    assert {(s.attributes or {})["server.port"] for s in attempts} == {
        fleet[0].server.port,
        fleet[1].server.port,
    }
    sample = registry.get_sample_value
    assert (
        sample(
            "service_client_instance_attempts_total",
            {"peer_service": "named", "server_address": good, "outcome": "success"},
        )
        == 2
    )
    assert (
        sample(
            "service_client_instance_attempts_total",
            {"peer_service": "named", "server_address": bad, "outcome": "failure"},
        )
        == 2
    )
    assert sample("service_client_instances", {"peer_service": "named", "state": "healthy"}) == 2
    assert (
        sample("service_client_instance_ewma_seconds", {"peer_service": "named", "server_address": good}) or 0
    ) > 0


async def test_a_hedge_goes_to_another_instance(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    slow, fast = fleet[0], fleet[1]
    slow.route("*", delayed(0.5, OK))
    client = make_fleet_client(
        [slow.base_url, fast.base_url],
        load_balancer="round_robin",
        hedging_enabled=True,
        hedging_delay_seconds=0.02,
    )
    for _ in range(6):
        assert await client.get("quote") == {"ok": True}
    hedged = {r.headers["X-Request-ID"] for r in slow.requests}
    assert hedged  # round robin sent some first attempts to the slow one ...
    fast_ids = [r.headers["X-Request-ID"] for r in fast.requests]
    assert hedged <= set(fast_ids)  # ... and each of those calls' hedge went to the other
    assert len(fast_ids) == len(set(fast_ids))  # never two attempts of one call on one instance


def test_instance_label_slots_free_when_instances_leave() -> None:
    """Rolling deploys: the cap of 32 labels counts live instances, not every address ever seen."""
    registry = CollectorRegistry()
    urls = [f"http://127.0.0.1:{20000 + i}/api/v1" for i in range(10)]
    config = ClientConfig(instances=urls, service_name="rolling", outlier_consecutive_failures=1)
    policies = ClientPolicies.from_config(config, families=MetricFamilies(registry))
    balancer = policies.balancer
    assert balancer is not None
    for deploy in range(1, 6):  # five rolling deploys of 10 instances: 60 addresses in all
        balancer.update([f"http://127.0.0.1:{20000 + deploy * 10 + i}/api/v1/" for i in range(10)])
        for _ in range(10):
            balancer.finished(balancer.pick(), "failure", 0.01)
    live = {i.address for i in balancer.instances}
    ewma = {
        s.labels["server_address"]
        for m in registry.collect()
        if m.name == "service_client_instance_ewma_seconds"
        for s in m.samples
    }
    assert ewma == live  # every live instance has its series, none of the gone ones
    attempts = {
        s.labels["server_address"]
        for m in registry.collect()
        if m.name == "service_client_instance_attempts"
        for s in m.samples
    }
    assert "other" not in attempts
    assert attempts <= live


async def test_one_instances_retry_after_does_not_hold_the_retry_to_another(
    fleet: list[Upstream], make_fleet_client: Callable[..., BaseServiceClient]
) -> None:
    fleet[0].route("*", json({"detail": "busy"}, status=503, headers={"Retry-After": "2"}))
    client = make_fleet_client(
        [s.base_url for s in fleet], load_balancer="round_robin", outlier_consecutive_failures=10_000
    )
    loop = asyncio.get_running_loop()
    for _ in range(6):
        started = loop.time()
        assert await client.get("quote", timeout=1.0) == {"ok": True}
        assert loop.time() - started < 0.5  # retried on another instance at once, not after 2 s
