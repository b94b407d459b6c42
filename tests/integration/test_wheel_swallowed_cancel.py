"""The wheel's cancellation is taken back even when something below the transport swallows it.

The aiohttp transport's timeout cancels the attempt's task. Should a layer below (an
injected session's own code, say) catch that cancellation and raise another error, the
task must not keep counting a cancellation nobody asked for: ``asyncio.timeout()`` in the
caller would then take its own expiry for a cancellation from outside.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import aiohttp
import pytest

from app.clients import BaseServiceClient, ClientConfig, ClientConnectionError
from app.clients.timer_wheel import TimerWheel
from tests.support import rawtcp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp discourages subclassing its session

    class SwallowingSession(aiohttp.ClientSession):
        """A session whose request turns a cancellation into a dropped connection."""

        async def _request(self, *args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
            try:
                return await super()._request(*args, **kwargs)
            except asyncio.CancelledError:
                raise aiohttp.ServerDisconnectedError from None


async def test_a_swallowed_wheel_cancellation_leaves_the_task_uncancelled() -> None:
    """The attempt fails as the session says; the caller's task counts no cancellation after it."""
    async with rawtcp.raw_server(rawtcp.hang) as url, SwallowingSession() as session:
        client = BaseServiceClient(
            ClientConfig(base_url=url, service_name="swallowed", timeout_seconds=0.2, max_retries=0),
            session=session,
        )
        client._transport._timers = TimerWheel(asyncio.get_running_loop(), exact_below=0)  # type: ignore[attr-defined]
        try:
            with pytest.raises(ClientConnectionError):
                await client.get("slow")
        finally:
            await client.close()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    with pytest.raises(TimeoutError):  # a timeout of the caller's own is still a timeout
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
