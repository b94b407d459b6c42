"""DiscoveryRunner keeps the last good set, applies only changes, counts and logs each update once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

import app.discovery.runner as runner_module
from app.discovery import DiscoveryError, DiscoveryRunner
from tests.support.discovery import Recorder, ScriptedSource, eventually, updates

A = "http://10.0.0.1:9001/api/v1/"
B = "http://10.0.0.2:9001/api/v1/"


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.INFO, logger="app.discovery")

    def logged(level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "app.discovery" and r.levelno == level]

    return logged


async def test_a_good_initial_set_is_applied_at_once_and_ready(registry) -> None:
    """initial() gives the first set in __init__: applied, counted, gauged, and wait_ready is true without waiting."""
    applied = Recorder()
    runner = DiscoveryRunner(ScriptedSource((A, B)), applied, service_name="ae", registry=registry)
    assert applied.applied == [(A, B)]
    assert runner.instances == (A, B)
    assert await runner.wait_ready(0) is True
    assert updates(registry, "ae", "scripted", "applied") == 1
    assert registry.get_sample_value("service_client_discovered_instances", {"peer_service": "ae"}) == 2
    assert runner.status() == {
        "source": "scripted",
        "description": "scripted://test",
        "instances": 2,
        "updates": {"applied": 1, "unchanged": 0, "rejected": 0},
        "last_error": None,
    }


async def test_a_bad_initial_read_is_rejected_and_leaves_the_set_empty(registry, warnings_logged) -> None:
    """A DiscoveryError from initial() is counted and logged; nothing is applied and the runner is not ready."""
    applied = Recorder()
    source = ScriptedSource(DiscoveryError("/x/instances.json: not valid JSON"))
    runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
    assert applied.applied == []
    assert runner.instances == ()
    assert runner.last_error == "/x/instances.json: not valid JSON"
    assert updates(registry, "ae", "scripted", "rejected") == 1
    assert await runner.wait_ready(0.05) is False
    assert any("not valid JSON" in m for m in warnings_logged())


async def test_the_last_good_set_survives_every_kind_of_bad_update(registry, warnings_logged) -> None:
    """Empty, an invalid URL, a relative URL, credentials, a DiscoveryError: each rejected, the set and apply untouched."""
    applied = Recorder()
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
    runner.start()
    try:
        bad = [
            (),
            ("not a url",),
            (A, "/relative/path"),
            ("ftp://10.0.0.1/",),
            ("http://user:hunter22@10.0.0.1/",),
            ("http://10.0.0.1/?x=1",),
            ("http://10.0.0.1/#top",),
            ("http://bad host/",),
            DiscoveryError("etcd://127.0.0.1:2379/ae/: connection refused"),
        ]
        for item in bad:
            await source.queue.put(item)
        await eventually(lambda: updates(registry, "ae", "scripted", "rejected") == len(bad))
        assert runner.instances == (A,)
        assert applied.applied == [(A,)]
        assert runner.last_error == "etcd://127.0.0.1:2379/ae/: connection refused"
        messages = warnings_logged()
        assert len(messages) == len(bad)  # each a different reason: each logged
        assert not any("hunter22" in m for m in messages)  # a password in a bad entry is never echoed
    finally:
        await runner.aclose()


async def test_the_same_error_in_a_row_is_logged_once_but_counted_each_time(
    registry, warnings_logged
) -> None:
    """A source failing the same way every poll logs one warning; a good update resets it, so the next failure logs again."""
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    runner.start()
    try:
        for _ in range(5):
            await source.queue.put(DiscoveryError("dns+srv://_ae._tcp.x: NXDOMAIN"))
        await eventually(lambda: updates(registry, "ae", "scripted", "rejected") == 5)
        assert len(warnings_logged()) == 1
        await source.queue.put((A,))
        await eventually(lambda: runner.last_error is None)
        assert any("recovered" in m for m in warnings_logged(logging.INFO))
        await source.queue.put(DiscoveryError("dns+srv://_ae._tcp.x: NXDOMAIN"))
        await eventually(lambda: updates(registry, "ae", "scripted", "rejected") == 6)
        assert len(warnings_logged()) == 2
    finally:
        await runner.aclose()


async def test_an_equal_set_is_unchanged_and_not_applied(registry) -> None:
    """The same instances, written differently (case, trailing slashes, duplicates), count as unchanged; apply is not called."""
    applied = Recorder()
    source = ScriptedSource((A, B))
    runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
    runner.start()
    try:
        await source.queue.put(("HTTP://10.0.0.1:9001/api/v1", "http://10.0.0.2:9001/api/v1//", A))
        await eventually(lambda: updates(registry, "ae", "scripted", "unchanged") == 1)
        assert applied.applied == [(A, B)]
    finally:
        await runner.aclose()


async def test_entries_are_normalised_and_deduplicated_in_order(registry, warnings_logged) -> None:
    """Each URL gets exactly one trailing slash, duplicates drop (first kept), order is kept; the change is logged with counts."""
    applied = Recorder()
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
    runner.start()
    try:
        await source.queue.put(
            ("http://10.0.0.2:9001/api/v1", "http://[::1]:9001", "http://10.0.0.2:9001/api/v1///")
        )
        await eventually(lambda: len(applied.applied) == 2)
        assert applied.last == (B, "http://[::1]:9001/")
        assert runner.instances == (B, "http://[::1]:9001/")
        assert any("(+2, -1)" in m for m in warnings_logged(logging.INFO))
        assert registry.get_sample_value("service_client_discovered_instances", {"peer_service": "ae"}) == 2
    finally:
        await runner.aclose()


async def test_wait_ready_wakes_on_the_first_good_set(registry) -> None:
    """A source that needs the loop (initial() is None) makes wait_ready wait for its first good update."""
    source = ScriptedSource(None)
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    assert runner.instances == ()
    runner.start()
    try:
        waiter = asyncio.create_task(runner.wait_ready(5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await source.queue.put((A,))
        assert await waiter is True
    finally:
        await runner.aclose()


async def test_a_failing_source_is_logged_counted_and_restarted_with_backoff(
    registry, monkeypatch, caplog
) -> None:
    """An unexpected exception from the source is logged with its traceback once, counted as rejected, and the source restarts."""
    monkeypatch.setattr(runner_module, "RESTART_MIN", 0.01)
    caplog.set_level(logging.INFO, logger="app.discovery")
    applied = Recorder()
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, applied, service_name="ae", registry=registry)
    runner.start()
    try:
        await source.queue.put(RuntimeError("boom"))
        await eventually(lambda: source.started == 2)
        assert runner.last_error == "the source failed: RuntimeError: boom"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert errors[0].exc_info is not None
        assert updates(registry, "ae", "scripted", "rejected") == 1
        await source.queue.put(StopAsyncIteration)  # the source ends: also a failure, restarted
        await eventually(lambda: source.started == 3)
        assert updates(registry, "ae", "scripted", "rejected") == 2
        await source.queue.put((B,))
        await eventually(lambda: runner.instances == (B,))
        assert runner.last_error is None
        assert runner.instances == (B,)
    finally:
        await runner.aclose()
    assert source.closed == 3


async def test_the_restart_delay_doubles_up_to_the_cap(registry, monkeypatch) -> None:
    """Consecutive source failures wait 1 s, 2 s, 4 s ... 30 s (scaled down here), and a delivered update resets it."""
    monkeypatch.setattr(runner_module, "RESTART_MIN", 0.01)
    monkeypatch.setattr(runner_module, "RESTART_MAX", 0.04)
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith("discovery:"):
            sleeps.append(delay)
            delay = 0
        await real_sleep(delay)

    monkeypatch.setattr(runner_module.asyncio, "sleep", recorded_sleep)
    runner.start()
    try:
        for _ in range(4):
            await source.queue.put(RuntimeError("boom"))
        await eventually(lambda: len(sleeps) == 4)
        assert sleeps == [0.01, 0.02, 0.04, 0.04]
        await source.queue.put((A,))
        await source.queue.put(RuntimeError("boom"))
        await eventually(lambda: len(sleeps) == 5)
        assert sleeps[-1] == 0.01
    finally:
        monkeypatch.undo()
        await runner.aclose()


async def test_an_apply_that_raises_keeps_the_old_set(registry, caplog) -> None:
    """When the balancer refuses a set, the runner keeps the old one, counts a rejection, and the next update tries again."""
    caplog.set_level(logging.INFO, logger="app.discovery")
    calls: list[tuple[str, ...]] = []

    def apply(instances: tuple[str, ...]) -> None:
        calls.append(instances)
        if len(calls) == 2:
            raise RuntimeError("balancer says no")

    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, apply, service_name="ae", registry=registry)
    runner.start()
    try:
        await source.queue.put((B,))
        await eventually(lambda: updates(registry, "ae", "scripted", "rejected") == 1)
        assert runner.instances == (A,)
        assert "balancer says no" in (runner.last_error or "")
        await source.queue.put((B,))
        await eventually(lambda: runner.instances == (B,))
        assert calls == [(A,), (B,), (B,)]
    finally:
        await runner.aclose()


async def test_refresh_asks_the_source(registry) -> None:
    """runner.refresh() is the source's refresh()."""
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    runner.refresh()
    assert source.refreshed == 1


async def test_start_is_idempotent_and_aclose_leaves_no_task(registry) -> None:
    """Two starts make one task; aclose cancels and awaits it, closes the source's iterator, and may be called twice."""
    before = asyncio.all_tasks()
    source = ScriptedSource((A,))
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    runner.start()
    runner.start()
    await eventually(lambda: source.started == 1)
    assert len(asyncio.all_tasks() - before) == 1
    await runner.aclose()
    await runner.aclose()
    assert asyncio.all_tasks() - before == set()
    assert source.started == source.closed == 1


async def test_aclose_before_start_is_a_no_op(registry) -> None:
    """A runner never started closes cleanly."""
    before = asyncio.all_tasks()
    runner = DiscoveryRunner(ScriptedSource((A,)), Recorder(), service_name="ae", registry=registry)
    await runner.aclose()
    assert not runner.running
    assert asyncio.all_tasks() == before
    assert runner.instances == (A,)  # the first read stays


async def test_families_are_registered_once_per_registry(registry) -> None:
    """Many runners on one registry share one family (a second registration would raise)."""
    one = DiscoveryRunner(ScriptedSource((A,)), Recorder(), service_name="ae", registry=registry)
    two = DiscoveryRunner(ScriptedSource((B,)), Recorder(), service_name="mw", registry=registry)
    assert one.instances == (A,)
    assert two.instances == (B,)
    assert updates(registry, "ae", "scripted", "applied") == 1
    assert updates(registry, "mw", "scripted", "applied") == 1
