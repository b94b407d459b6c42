"""A failed call leaves no reference cycle through the framework's frames or errors.

An error's traceback holds every frame it passed; a frame that also holds the error (a
local, or the task that stored it) makes a cycle that only the gc's collector frees. While
an upstream is down that is every call. Here each kind of failure runs with the gc
off and ``DEBUG_SAVEALL`` on, and the collector must find nothing of ours: no frame of
``app/`` and no object of the framework's types. Cycles inside aiohttp and asyncio (a
refused connect, an aborted socket) are theirs and are not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.clients import BaseServiceClient, BulkheadFullError, CircuitBreakerOpenError, ClientError
from tests.support.garbage import our_garbage
from tests.support.upstream import Upstream, delayed, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

CALLS = 5


async def _failing(call: Callable[[], Awaitable[Any]], expected: type[BaseException]) -> None:
    for _ in range(CALLS):
        with pytest.raises(expected):
            await call()


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (client settings, call options)
    "503, no retry": ({"max_retries": 0}, {}),
    "503, retried and exhausted": ({"max_retries": 2}, {}),
    "503, hedged": ({"max_retries": 0, "hedging_enabled": True, "hedging_delay_seconds": 0.001}, {}),
    "503, through the response cache": ({"max_retries": 0, "cache_enabled": True}, {}),
    "503, failure-rate breaker": ({"max_retries": 0, "circuit_breaker_mode": "failure_rate"}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_failed_call_leaves_no_cycle(upstream: Upstream, make_client: Any, case: str) -> None:
    """A 503, however the call's policies handle it, is freed by reference counting alone."""
    upstream.route("r", json({"detail": "down"}, status=503))
    settings, options = CASES[case]
    client: BaseServiceClient = make_client(
        upstream.base_url, circuit_breaker_failure_threshold=10_000, **settings
    )
    await _failing(lambda: client.get("r"), ClientError)  # warm: connections, lazy state
    assert await our_garbage(lambda: _failing(lambda: client.get("r", **options), ClientError)) == []


async def test_a_timed_out_call_leaves_no_cycle(upstream: Upstream, make_client: Any) -> None:
    """A call past its deadline (its connection dropped mid-answer) leaves no cycle of ours."""
    upstream.route("slow", delayed(5, json({})))
    client: BaseServiceClient = make_client(upstream.base_url, max_retries=1)
    await _failing(lambda: client.get("slow", timeout=0.05), ClientError)
    assert await our_garbage(lambda: _failing(lambda: client.get("slow", timeout=0.05), ClientError)) == []


async def test_refusals_and_fallbacks_leave_no_cycle(upstream: Upstream, make_client: Any) -> None:
    """An open breaker's refusal, a full bulkhead's, and a fallback's answer leave no cycle of ours."""
    upstream.route("r", json({}, status=503))
    broken: BaseServiceClient = make_client(
        upstream.base_url, max_retries=0, circuit_breaker_failure_threshold=1
    )
    full: BaseServiceClient = make_client(
        upstream.base_url, bulkhead_max_concurrent=1, bulkhead_max_waiting=0
    )
    await _failing(lambda: broken.get("r"), ClientError)  # opens the breaker
    assert full.bulkhead.try_acquire()

    async def calls() -> None:
        await _failing(lambda: broken.get("r"), CircuitBreakerOpenError)
        await _failing(lambda: full.get("r"), BulkheadFullError)
        for _ in range(CALLS):
            assert await broken.get("r", fallback="stale") == "stale"

    try:
        assert await our_garbage(calls) == []
    finally:
        full.bulkhead.release()


async def test_a_call_failing_or_cancelled_in_its_own_task_leaves_no_cycle(
    upstream: Upstream, make_client: Any
) -> None:
    """The task keeps its error (or cancellation), whose traceback holds the call's frame: still no cycle."""
    upstream.route("r", json({}, status=503))
    upstream.route("slow", delayed(5, json({})))
    client: BaseServiceClient = make_client(
        upstream.base_url, max_retries=0, circuit_breaker_failure_threshold=10_000
    )

    async def calls() -> None:
        failed = [asyncio.ensure_future(client.get("r")) for _ in range(CALLS)]
        await asyncio.wait(failed)
        assert all(isinstance(task.exception(), ClientError) for task in failed)
        cancelled = [asyncio.ensure_future(client.get("slow")) for _ in range(CALLS)]
        await asyncio.sleep(0.05)  # each is waiting for its answer
        for task in cancelled:
            task.cancel()
        await asyncio.wait(cancelled)
        assert all(task.cancelled() for task in cancelled)
        del failed, cancelled  # the tasks go: what they held is freed, or left in a cycle

    assert await our_garbage(calls) == []
