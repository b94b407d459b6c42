"""DNS discovery against a real dnsmasq: SRV and A/AAAA records, TTL-driven refresh, early refresh()."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from app.discovery import DiscoveryRunner, parse_discovery
from tests.support.discovery import Recorder, eventually, updates
from tests.support.dnsmasq import Dnsmasq, Srv

BASE = "http://ignored:1/api/v1/"
SERVICE = "_ae._tcp.test.local"


@pytest.fixture
def dnsmasq(tmp_path):
    server = Dnsmasq(tmp_path)
    server.set_records(
        srv=[Srv(SERVICE, "inst1.test.local", 9001), Srv(SERVICE, "inst2.test.local", 9002)],
        hosts={"inst1.test.local": ["127.0.0.1"], "inst2.test.local": ["127.0.0.2", "::1"]},
        ttl=1,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
async def watch(registry):
    """Runners on a discovery URI, closed at teardown, leaving no task."""
    made: list[DiscoveryRunner] = []
    before = asyncio.all_tasks()

    def start(uri: str, **ttl: float) -> tuple[DiscoveryRunner, Recorder]:
        applied = Recorder()
        source = parse_discovery(uri, BASE, **ttl)
        runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
        runner.start()
        made.append(runner)
        return runner, applied

    yield start
    for runner in made:
        await runner.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set(), "a task leaked"


async def test_srv_records_give_the_instances(dnsmasq, watch) -> None:
    """Each SRV target's addresses (IPv6 bracketed) with the record's port, and base_url's scheme and path."""
    runner, _ = watch(f"dns+srv://{SERVICE}?nameserver={dnsmasq.nameserver}", min_ttl=0.2, max_ttl=5)
    assert runner.instances == ()  # DNS needs the loop: nothing before the first resolution
    assert await runner.wait_ready(5) is True
    assert set(runner.instances) == {
        "http://127.0.0.1:9001/api/v1/",
        "http://127.0.0.2:9002/api/v1/",
        "http://[::1]:9002/api/v1/",
    }


async def test_changed_records_are_picked_up_after_the_ttl(dnsmasq, registry, watch) -> None:
    """Records rewritten (and dnsmasq restarted) show up at the next resolution, one TTL later; equal answers are unchanged."""
    runner, applied = watch(f"dns+srv://{SERVICE}?nameserver={dnsmasq.nameserver}", min_ttl=0.2, max_ttl=5)
    assert await runner.wait_ready(5)
    await eventually(lambda: updates(registry, "ae", "dns", "unchanged") >= 1)  # re-resolved at the 1 s TTL
    dnsmasq.set_records(
        srv=[Srv(SERVICE, "inst3.test.local", 9003)],
        hosts={"inst3.test.local": ["127.0.0.3"]},
    )
    started = time.monotonic()
    await eventually(lambda: runner.instances == ("http://127.0.0.3:9003/api/v1/",), timeout=5)
    assert time.monotonic() - started < 2.5
    assert len(applied.applied) == 2


async def test_a_records_with_a_fixed_port(dnsmasq, watch) -> None:
    """dns://name:port reads A and AAAA records and puts the URI's port on each address."""
    runner, _ = watch(f"dns://inst2.test.local:8080?nameserver={dnsmasq.nameserver}", min_ttl=0.2)
    assert await runner.wait_ready(5)
    assert runner.instances == ("http://127.0.0.2:8080/api/v1/", "http://[::1]:8080/api/v1/")


async def test_refresh_resolves_again_before_the_ttl(dnsmasq, watch) -> None:
    """With a long TTL, refresh() (every instance failed) re-resolves at once, though no sooner than min_ttl."""
    dnsmasq.set_records(
        srv=[Srv(SERVICE, "inst1.test.local", 9001)], hosts={"inst1.test.local": ["127.0.0.1"]}, ttl=600
    )
    runner, _ = watch(f"dns+srv://{SERVICE}?nameserver={dnsmasq.nameserver}", min_ttl=0.3, max_ttl=600)
    assert await runner.wait_ready(5)
    assert runner.instances == ("http://127.0.0.1:9001/api/v1/",)
    dnsmasq.set_records(
        srv=[Srv(SERVICE, "inst2.test.local", 9002)], hosts={"inst2.test.local": ["127.0.0.2"]}
    )
    await asyncio.sleep(0.5)
    assert runner.instances == ("http://127.0.0.1:9001/api/v1/",)  # the 600 s TTL holds
    runner.refresh()
    await eventually(lambda: runner.instances == ("http://127.0.0.2:9002/api/v1/",), timeout=2)


async def test_refresh_is_rate_limited_to_once_per_min_ttl(dnsmasq, registry, watch) -> None:
    """A storm of refresh() calls (many failing calls) resolves at most once per min_ttl."""
    dnsmasq.set_records(
        srv=[Srv(SERVICE, "inst1.test.local", 9001)], hosts={"inst1.test.local": ["127.0.0.1"]}, ttl=600
    )
    runner, _ = watch(f"dns+srv://{SERVICE}?nameserver={dnsmasq.nameserver}", min_ttl=0.4, max_ttl=600)
    assert await runner.wait_ready(5)
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        runner.refresh()
        await asyncio.sleep(0.01)
    resolutions = updates(registry, "ae", "dns", "unchanged")
    assert 1 <= resolutions <= 3  # 1.0 s / 0.4 s


async def test_a_missing_name_is_rejected_and_the_set_kept(dnsmasq, registry, watch) -> None:
    """NXDOMAIN, or a server that stopped answering, is rejected: the last good set stays until the name comes back."""
    runner, _ = watch(f"dns+srv://{SERVICE}?nameserver={dnsmasq.nameserver}", min_ttl=0.2, max_ttl=5)
    assert await runner.wait_ready(5)
    good = runner.instances
    dnsmasq.set_records(hosts={"inst1.test.local": ["127.0.0.1"]})  # the SRV name is gone
    await eventually(lambda: updates(registry, "ae", "dns", "rejected") >= 1, timeout=5)
    assert "NXDOMAIN" in (runner.last_error or "")
    assert runner.instances == good
    dnsmasq.set_records(
        srv=[Srv(SERVICE, "inst1.test.local", 9001)], hosts={"inst1.test.local": ["127.0.0.1"]}
    )
    await eventually(lambda: runner.instances == ("http://127.0.0.1:9001/api/v1/",), timeout=5)
    assert runner.last_error is None


async def test_a_name_that_never_resolves_leaves_the_runner_not_ready(dnsmasq, registry, watch) -> None:
    """A name with no records: wait_ready times out false and the error says which name."""
    runner, _ = watch(f"dns://nothing.test.local:80?nameserver={dnsmasq.nameserver}", min_ttl=0.2)
    assert await runner.wait_ready(0.5) is False
    assert "nothing.test.local" in (runner.last_error or "")
    assert updates(registry, "ae", "dns", "rejected") >= 1
