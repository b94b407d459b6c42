"""Closing a client with calls in flight: every call, async or sync twin, ends at once in ClientClosedError.

The peers are raw TCP servers on 127.0.0.1 that never finish answering, so without
the close every call here would hang for its whole timeout. The client's own shutdown
is never an upstream failure: the breaker stays closed with no failure counted, nothing
is retried, and no task, thread, connection or descriptor is left behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    ClientClosedError,
    ClientConfig,
    ClientConnectionError,
    RetryExhaustedError,
)
from app.clients.sync import LoopThread
from tests.support import rawtcp

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

N_ASYNC = 20
N_SYNC = 5


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sync_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{name}-sync"]


class Peer:
    """A raw server whose behaviour counts the requests it has read."""

    def __init__(self, behaviour: rawtcp.Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self._arrived = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        self._arrived.set()
        await self.behaviour(reader, writer)

    async def wait_for(self, n: int) -> None:
        """Until ``n`` connections have reached the peer (at most 5 s)."""
        async with asyncio.timeout(5):
            while self.requests < n:
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
async def leak_check() -> AsyncIterator[None]:
    """After the test: no task, no descriptor, no sync loop thread left over."""
    tasks_before = asyncio.all_tasks()
    fds_before = _open_fds()
    yield
    for _ in range(50):
        gc.collect()
        leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
        if not leftover and _open_fds() <= fds_before:
            break
        await asyncio.sleep(0.02)
    assert asyncio.all_tasks() - tasks_before - {asyncio.current_task()} == set(), "a task leaked"
    assert _open_fds() <= fds_before, "a descriptor leaked"
    assert not [t for t in threading.enumerate() if t.name.endswith("-sync")], "a loop thread leaked"


def _client(url: str, transport: str, **overrides: Any) -> BaseServiceClient:
    fields: dict[str, Any] = {
        "base_url": url,
        "transport": transport,
        "service_name": "closing",
        "timeout_seconds": 30.0,  # far past the test: only the close can end these calls
        "max_retries": 3,
        "retry_jitter": False,
        "bulkhead_max_concurrent": 100,
        "bulkhead_max_waiting": 100,
        "circuit_breaker_failure_threshold": 1,  # one counted failure would open it
    }
    fields.update(overrides)
    return BaseServiceClient(ClientConfig(**fields))


def _start_sync_calls(client: BaseServiceClient, n: int) -> tuple[list[threading.Thread], list[Any]]:
    outcomes: list[Any] = []

    def call() -> None:
        try:
            outcomes.append(client.get_sync("slow"))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call, name=f"caller-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, outcomes


async def _join(threads: list[threading.Thread], within: float) -> None:
    deadline = time.monotonic() + within
    for thread in threads:
        # A thread has nothing to await: it is polled, briefly, without blocking the loop.
        while thread.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert not [t for t in threads if t.is_alive()], "a caller thread is still blocked"


async def _close_sync_from_a_thread(client: BaseServiceClient) -> None:
    thread = threading.Thread(target=client.close_sync, name="closer")
    thread.start()
    await _join([thread], 5.0)


CLOSERS: dict[str, Callable[[BaseServiceClient], Any]] = {
    "close": lambda client: client.close(),
    "close_sync-from-a-thread": _close_sync_from_a_thread,
}


@pytest.mark.usefixtures("leak_check")
@pytest.mark.parametrize("closer", list(CLOSERS))
@pytest.mark.parametrize(
    "behaviour",
    [rawtcp.hang, rawtcp.headers_then_hang, rawtcp.drip],
    ids=["never-answers", "headers-then-hang", "drip"],
)
async def test_close_ends_every_call_in_flight(closer, behaviour, transport) -> None:
    """20 async calls and 5 sync twins on threads, stuck on a peer: close ends all within 1 s, typed."""
    peer = Peer(behaviour)
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport)
        tasks = [asyncio.create_task(client.get("slow")) for _ in range(N_ASYNC)]
        threads, sync_outcomes = _start_sync_calls(client, N_SYNC)
        await peer.wait_for(N_ASYNC + N_SYNC)
        started = time.monotonic()
        await CLOSERS[closer](client)
        done, pending = await asyncio.wait(tasks, timeout=1.0)
        await _join(threads, 1.0 - (time.monotonic() - started))
        elapsed = time.monotonic() - started
        await client.close()  # after close_sync, the async side's session is close()'s to close
    assert not pending
    assert elapsed < 1.0
    outcomes = [t.exception() for t in done] + sync_outcomes
    assert [type(o) for o in outcomes] == [ClientClosedError] * (N_ASYNC + N_SYNC)
    assert all(o.endpoint == "slow" and o.method == "GET" and o.attempts == 1 for o in outcomes)
    assert peer.requests == N_ASYNC + N_SYNC  # nothing retried
    assert client.breaker.state_name == "closed"
    assert client.breaker.fail_counter == 0
    snapshot = client.observer.stats.snapshot()
    assert snapshot["requests"] == N_ASYNC + N_SYNC  # each call still counted, as client_closed
    assert snapshot["error_percent"] == 0.0  # and not as the upstream's failure


@pytest.mark.usefixtures("leak_check")
async def test_close_ends_calls_queued_in_the_bulkhead(transport) -> None:
    """Two calls in flight and eight queued for a slot: close ends all ten, the bulkhead empties."""
    peer = Peer(rawtcp.hang)
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport, bulkhead_max_concurrent=2, bulkhead_max_waiting=50)
        tasks = [asyncio.create_task(client.get("slow")) for _ in range(10)]
        await peer.wait_for(2)
        await asyncio.sleep(0.05)
        assert (client.bulkhead.in_flight, client.bulkhead.queued) == (2, 8)
        await client.close()
        done, pending = await asyncio.wait(tasks, timeout=1.0)
    assert not pending
    errors = [t.exception() for t in done]
    assert [type(e) for e in errors] == [ClientClosedError] * 10
    assert sorted(e.attempts for e in errors) == [0] * 8 + [1] * 2
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert client.breaker.fail_counter == 0


@pytest.mark.usefixtures("leak_check")
async def test_close_ends_calls_sleeping_before_a_retry(transport) -> None:
    """Calls waiting out a 503's Retry-After of 30 s: close ends them at once; only the 503s counted."""
    head = b"HTTP/1.1 503 X\r\nRetry-After: 30\r\nContent-Length: 0"
    peer = Peer(rawtcp.respond(head))
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport, retry_max_delay=60.0, circuit_breaker_failure_threshold=100)
        tasks = [asyncio.create_task(client.get("flaky")) for _ in range(5)]
        await peer.wait_for(5)
        await asyncio.sleep(0.05)  # the 503s are read; every call now sleeps before its retry
        started = time.monotonic()
        await client.close()
        done, pending = await asyncio.wait(tasks, timeout=1.0)
    assert not pending
    assert time.monotonic() - started < 1.0
    assert [type(t.exception()) for t in done] == [ClientClosedError] * 5
    assert peer.requests == 5  # no retry went out
    assert client.breaker.fail_counter == 5  # the five 503s; the close added nothing


@pytest.mark.usefixtures("leak_check")
async def test_close_ends_hedged_calls(transport) -> None:
    """Hedged calls (two attempts each, both stuck): close ends each call once, typed."""
    peer = Peer(rawtcp.hang)
    async with rawtcp.raw_server(peer) as url:
        client = _client(
            url, transport, hedging_enabled=True, hedging_delay_seconds=0.01, hedging_max_attempts=2
        )
        tasks = [asyncio.create_task(client.get("slow")) for _ in range(5)]
        await peer.wait_for(10)
        await client.close()
        done, pending = await asyncio.wait(tasks, timeout=1.0)
    assert not pending
    assert [type(t.exception()) for t in done] == [ClientClosedError] * 5
    assert client.breaker.fail_counter == 0


@pytest.mark.usefixtures("leak_check")
async def test_close_with_an_injected_session_ends_calls_and_leaves_the_session_open(transport) -> None:
    """An injected session belongs to its owner: close ends the calls on it but does not close it."""
    if transport == "lean":
        pytest.skip("about an injected aiohttp session, which always goes through AiohttpTransport")
    peer = Peer(rawtcp.hang)
    session = aiohttp.ClientSession()
    try:
        async with rawtcp.raw_server(peer) as url:
            config = ClientConfig(
                base_url=url, service_name="closing", timeout_seconds=30.0, transport=transport
            )
            client = BaseServiceClient(config, session=session)
            tasks = [asyncio.create_task(client.get("slow")) for _ in range(5)]
            await peer.wait_for(5)
            await client.close()
            done, pending = await asyncio.wait(tasks, timeout=1.0)
            assert not session.closed
    finally:
        await session.close()
    assert not pending
    assert [type(t.exception()) for t in done] == [ClientClosedError] * 5


@pytest.mark.usefixtures("leak_check")
@pytest.mark.parametrize("closer", list(CLOSERS))
async def test_calls_after_close_raise_client_closed(closer, transport) -> None:
    """After close or close_sync, every verb, twin and service method raises ClientClosedError; no thread starts."""
    peer = Peer(rawtcp.hang)
    async with rawtcp.raw_server(peer) as url:
        client = AnalysisEngineClient(
            ClientConfig(base_url=url, service_name="ae-closed", transport=transport)
        )
        await CLOSERS[closer](client)
        await client.close()  # twice (or after close_sync): harmless
        for call in (client.get("x"), client.post("x", json={}), client.get_prices("EURUSD")):
            with pytest.raises(ClientClosedError) as info:
                await call
            assert isinstance(info.value, ClientConnectionError)

        def sync_calls() -> list[type[BaseException]]:
            seen = []
            for twin in (lambda: client.get_sync("x"), lambda: client.get_prices_sync("EURUSD")):
                try:
                    twin()
                except BaseException as exc:
                    seen.append(type(exc))
            return seen

        outcome: list[list[type[BaseException]]] = []
        thread = threading.Thread(target=lambda: outcome.append(sync_calls()))
        thread.start()
        await _join([thread], 2.0)
        assert outcome == [[ClientClosedError, ClientClosedError]]
        assert not _sync_threads("ae-closed")
    assert peer.requests == 0


@pytest.mark.usefixtures("leak_check")
async def test_a_callers_own_cancellation_is_not_turned_into_client_closed(transport) -> None:
    """A caller that cancels its call still gets CancelledError; only close() gives ClientClosedError."""
    peer = Peer(rawtcp.hang)
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport)
        task = asyncio.create_task(client.get("slow"))
        await peer.wait_for(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.breaker.fail_counter == 0
        await client.close()


@pytest.mark.usefixtures("leak_check")
async def test_a_retried_call_cut_short_is_still_client_closed(transport) -> None:
    """A call on its second attempt when the close comes: ClientClosedError; the 503's count stands."""
    answers = [b"HTTP/1.1 503 X\r\nContent-Length: 0"]

    async def first_503_then_hang(reader, writer) -> None:
        if answers:
            await rawtcp.respond(answers.pop())(reader, writer)
        else:
            await rawtcp.hang(reader, writer)

    peer = Peer(first_503_then_hang)
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport, retry_base_delay=0.001, circuit_breaker_failure_threshold=100)
        task = asyncio.create_task(client.get("slow"))
        await peer.wait_for(2)
        await client.close()
        _, pending = await asyncio.wait([task], timeout=1.0)
    assert not pending
    exc = task.exception()
    assert type(exc) is ClientClosedError  # the retries were cut short, not given up
    assert not isinstance(exc, RetryExhaustedError)
    assert exc.attempts == 2
    assert client.breaker.fail_counter == 1  # the 503, neither reset nor added to by the close


@pytest.mark.usefixtures("leak_check")
async def test_an_injected_session_closed_by_its_owner_gives_client_closed(transport) -> None:
    """The owner closed the injected session first: ClientClosedError, not aiohttp's RuntimeError."""
    if transport == "lean":
        pytest.skip("about an injected aiohttp session, which always goes through AiohttpTransport")
    peer = Peer(rawtcp.hang)
    session = aiohttp.ClientSession()
    async with rawtcp.raw_server(peer) as url:
        client = _client(url, transport, max_retries=3)
        client = BaseServiceClient(client.config, session=session)
        await session.close()
        with pytest.raises(ClientClosedError) as info:
            await client.get("x")
        await client.close()
    assert info.value.attempts == 1  # not retried
    assert peer.requests == 0


class _Closed(Exception):
    """The error a closed LoopThread raises in these tests."""


def test_a_loop_thread_closed_under_a_blocked_caller_releases_it() -> None:
    """Work still pending when LoopThread.close() runs is cancelled; the blocked caller gets closed_error."""
    loop_thread = LoopThread("bare", closed_error=_Closed)
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            loop_thread.run(asyncio.sleep, 3600)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    deadline = time.monotonic() + 5
    while loop_thread.loop is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # the sleep is now pending on the loop
    started = time.monotonic()
    loop_thread.close()
    thread.join(1.0)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert [type(e) for e in outcome] == [_Closed]
    with pytest.raises(_Closed):
        loop_thread.run(asyncio.sleep, 0)
    assert not _sync_threads("bare")  # a closed LoopThread starts no new thread
