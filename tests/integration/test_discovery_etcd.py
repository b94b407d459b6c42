"""etcd discovery against a real etcd: the range under a prefix, its watch, and a crash and restart."""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from app.discovery import DiscoveryRunner, parse_discovery
from tests.support.discovery import Recorder, eventually, updates
from tests.support.etcd import Etcd

BASE = "http://ignored:1/api/v1/"
A = "http://127.0.0.1:9001/api/v1/"
B = "http://127.0.0.1:9002/api/v1/"
C = "http://127.0.0.1:9003/api/v1/"


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def registry():
    return CollectorRegistry()


def open_sessions() -> list[aiohttp.ClientSession]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


@pytest.fixture
async def watch(etcd, registry):
    """A runner on etcd's /services/ae/ prefix; closed at teardown, leaving no task and no open session."""
    made: list[DiscoveryRunner] = []
    before = asyncio.all_tasks()
    sessions_before = len(open_sessions())

    def start() -> tuple[DiscoveryRunner, Recorder]:
        applied = Recorder()
        source = parse_discovery(f"etcd://127.0.0.1:{etcd.port}/services/ae/", BASE)
        runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
        runner.start()
        made.append(runner)
        return runner, applied

    yield start
    for runner in made:
        await runner.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set(), "a task leaked"
    assert len(open_sessions()) == sessions_before, "a session was left open"


async def test_the_range_under_the_prefix_is_the_set(etcd, watch) -> None:
    """Every value under the prefix is an instance, in key order; keys outside the prefix are not."""
    etcd.put("/services/ae/b", B)
    etcd.put("/services/ae/a", A)
    etcd.put("/services/aex/1", C)  # shares the text prefix without the slash: not ours
    etcd.put("/services/mw/1", C)
    runner, _ = watch()
    assert runner.instances == ()
    assert await runner.wait_ready(5)
    assert runner.instances == (A, B)


async def test_a_put_and_a_delete_arrive_through_the_watch(etcd, watch) -> None:
    """A new key is picked up within a second; a deleted one is removed."""
    etcd.put("/services/ae/a", A)
    runner, applied = watch()
    assert await runner.wait_ready(5)
    started = time.monotonic()
    etcd.put("/services/ae/b", B)
    await eventually(lambda: runner.instances == (A, B), timeout=3)
    assert time.monotonic() - started < 1.0
    etcd.delete("/services/ae/a")
    await eventually(lambda: runner.instances == (B,), timeout=3)
    assert applied.applied == [(A,), (A, B), (B,)]


async def test_an_empty_prefix_or_a_bad_value_keeps_the_set(etcd, registry, watch) -> None:
    """Deleting every key, or writing a value that is no URL, is rejected; the last good set stays."""
    etcd.put("/services/ae/a", A)
    runner, _ = watch()
    assert await runner.wait_ready(5)
    etcd.put("/services/ae/b", "not a url")
    await eventually(lambda: updates(registry, "ae", "etcd", "rejected") == 1, timeout=3)
    etcd.delete("/services/ae/b")
    await eventually(lambda: updates(registry, "ae", "etcd", "unchanged") >= 1, timeout=3)
    etcd.delete("/services/ae/a")
    await eventually(lambda: updates(registry, "ae", "etcd", "rejected") == 2, timeout=3)
    assert runner.instances == (A,)
    assert "no instances" in (runner.last_error or "")


async def test_etcd_killed_then_restarted_keeps_the_set_then_recovers(etcd, registry, watch) -> None:
    """A crash is counted as an error and the set is kept; after the restart the source reconnects and reads again."""
    etcd.put("/services/ae/a", A)
    runner, _ = watch()
    assert await runner.wait_ready(5)
    etcd.kill()
    await eventually(lambda: updates(registry, "ae", "etcd", "rejected") >= 1, timeout=3)
    assert runner.instances == (A,)
    assert runner.last_error is not None
    assert "etcd://127.0.0.1" in runner.last_error
    etcd.start()
    etcd.put("/services/ae/b", B)
    await eventually(lambda: runner.instances == (A, B), timeout=8)
    assert runner.last_error is None
    etcd.put("/services/ae/c", C)  # the new watch works too
    await eventually(lambda: runner.instances == (A, B, C), timeout=3)


async def test_an_unreachable_etcd_leaves_the_runner_not_ready(tmp_path, registry) -> None:
    """Nothing listening: wait_ready is false, the error names the endpoint, and aclose closes the session."""
    from tests.support.dnsmasq import free_port  # noqa: PLC0415

    before = asyncio.all_tasks()
    source = parse_discovery(f"etcd://127.0.0.1:{free_port()}/services/ae/", BASE)
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    runner.start()
    assert await runner.wait_ready(0.3) is False
    assert "etcd://127.0.0.1" in (runner.last_error or "")
    await runner.aclose()
    assert asyncio.all_tasks() - before == set()
