"""No call outlives its deadline by more than 50 ms, whatever the upstream does."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.clients import BulkheadFullError, ClientTimeoutError
from tests.support import rawtcp
from tests.support.upstream import Upstream, delayed, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


@pytest.mark.parametrize("behaviour", [rawtcp.hang, rawtcp.drip], ids=lambda b: b.__name__)
async def test_deadline_bounds_the_whole_call(make_client, behaviour) -> None:
    """Attempt timeouts and retries together stop at the deadline (+50 ms at most)."""
    async with rawtcp.raw_server(behaviour) as url:
        client = make_client(url, timeout_seconds=0.15, max_retries=20, circuit_breaker_failure_threshold=100)
        started = time.monotonic()
        with pytest.raises(ClientTimeoutError):
            await client.get("slow", timeout=0.4)
        elapsed = time.monotonic() - started
    assert 0.35 <= elapsed <= 0.45


async def test_total_timeout_is_the_default_deadline(make_client) -> None:
    """Without ``timeout=``, ``total_timeout_seconds`` is the deadline."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client = make_client(
            url,
            timeout_seconds=1.0,
            total_timeout_seconds=0.2,
            circuit_breaker_failure_threshold=100,
        )
        started = time.monotonic()
        with pytest.raises(ClientTimeoutError):
            await client.get("slow")
        assert time.monotonic() - started <= 0.25


async def test_attempt_timeout_is_capped_by_remaining_deadline(make_client, upstream: Upstream) -> None:
    """A slow-but-answering upstream: the attempt is cut at the deadline, not at timeout_seconds."""
    upstream.route("slow", delayed(1.0, json({"late": True})))
    client = make_client(upstream.base_url, timeout_seconds=5.0, max_retries=0)
    started = time.monotonic()
    with pytest.raises(ClientTimeoutError):
        await client.get("slow", timeout=0.2)
    assert time.monotonic() - started <= 0.25


async def test_bulkhead_wait_counts_against_the_deadline(make_client, upstream: Upstream) -> None:
    """A call waiting for a bulkhead slot gives up at its deadline."""
    upstream.route("slow", delayed(0.5, json({})))
    client = make_client(upstream.base_url, bulkhead_max_concurrent=1, bulkhead_max_waiting=5)
    holder = asyncio.create_task(client.get("slow"))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(ClientTimeoutError, match="bulkhead"):
        await client.get("slow", timeout=0.1)
    assert time.monotonic() - started <= 0.15
    assert await holder == {}
    assert client.bulkhead.in_flight == 0
    assert client.bulkhead.queued == 0


async def test_an_expired_wait_does_not_leak_its_slot(make_client, upstream: Upstream) -> None:
    """After waiters time out, the bulkhead has all its slots back."""
    upstream.route("slow", delayed(0.2, json({})))
    client = make_client(upstream.base_url, bulkhead_max_concurrent=2, bulkhead_max_waiting=2)
    results = await asyncio.gather(
        *(client.get("slow", timeout=0.1 if i >= 2 else 1.0) for i in range(5)),
        return_exceptions=True,
    )
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == [
        "BulkheadFullError",
        "ClientTimeoutError",
        "ClientTimeoutError",
        "dict",
        "dict",
    ]
    assert isinstance(results[4], BulkheadFullError)
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
