"""Attempt timeouts kept on the transport's timer wheel, against a peer that never answers.

Timeouts of a second or more go on the wheel; here each transport is given a wheel that
keeps every timeout on it (``exact_below=0``), so a 0.2 s attempt shows the wheel's
behaviour without a test that waits for seconds: ClientTimeoutError at the tick after
the timeout, no cancellation left pending on the caller's task, and a caller's own
cancellation (alone, or in the same loop pass as the wheel's) is never turned into a
timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.clients import BaseServiceClient, ClientConfig, ClientTimeoutError
from app.clients.timer_wheel import TICK_SECONDS, TimerWheel
from tests.support import rawtcp
from tests.support.garbage import our_garbage

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

TIMEOUT = 0.2


def _on_the_wheel(transport: str, url: str) -> tuple[BaseServiceClient, TimerWheel]:
    client = BaseServiceClient(
        ClientConfig(
            base_url=url,
            transport=transport,  # type: ignore[arg-type] - "aiohttp" or "lean"
            service_name="wheel",
            timeout_seconds=TIMEOUT,
            max_retries=0,
        )
    )
    wheel = TimerWheel(asyncio.get_running_loop(), exact_below=0)
    client._transport._timers = wheel  # type: ignore[attr-defined] - every timeout on the wheel
    return client, wheel


async def test_an_attempt_times_out_at_the_tick_after_its_timeout(transport: str) -> None:
    """ClientTimeoutError after 0.2 s and within a tick (plus the loop's lag); the task keeps no cancel."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client, wheel = _on_the_wheel(transport, url)
        try:
            started = time.monotonic()
            with pytest.raises(ClientTimeoutError):
                await client.get("slow")
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    assert TIMEOUT <= elapsed <= TIMEOUT + TICK_SECONDS + 0.15
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the wheel's cancellation was taken back, not left to strike later
    assert wheel.ticks == 0


async def test_a_callers_cancel_is_a_cancel_not_a_timeout(transport: str) -> None:
    """Cancelled by its caller while its timeout waits on the wheel: CancelledError, and the timeout is gone."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client, wheel = _on_the_wheel(transport, url)
        try:
            call = asyncio.ensure_future(client.get("slow"))
            await asyncio.sleep(0.05)
            assert wheel.ticks == 1
            call.cancel()
            await asyncio.wait([call])
            assert call.cancelled()
            await asyncio.sleep(TIMEOUT)  # past the timeout: the wheel fires nothing at a finished call
        finally:
            await client.close()
    assert wheel.ticks == 0


async def test_a_cancel_in_the_same_loop_pass_as_the_timeout_stays_a_cancel(transport: str) -> None:
    """The wheel and the caller cancel the task in one loop pass: the caller's cancellation wins."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client, wheel = _on_the_wheel(transport, url)
        loop = asyncio.get_running_loop()
        try:
            call = asyncio.ensure_future(client.get("slow"))
            await asyncio.sleep(0.05)
            armed: Any = wheel._handle  # the wheel's loop timer, for the tick of this call's timeout
            assert armed is not None
            loop.call_at(armed.when(), call.cancel)  # due with it: both run before the task resumes
            await asyncio.wait([call])
            assert call.cancelled()
        finally:
            await client.close()


async def test_a_timeout_fired_by_the_wheel_leaves_no_cycle(transport: str) -> None:
    """Timed out by the wheel, in the caller's task or a task of its own: nothing of ours in a cycle."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client, _ = _on_the_wheel(transport, url)
        try:

            async def calls() -> None:
                with pytest.raises(ClientTimeoutError):
                    await client.get("slow")
                own = asyncio.ensure_future(client.get("slow"))
                await asyncio.wait([own])
                assert isinstance(own.exception(), ClientTimeoutError)
                del own

            assert await our_garbage(calls) == []
        finally:
            await client.close()
