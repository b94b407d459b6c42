"""SyncBridge: the sync twins' loop thread owns its transport, and closes it there."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from app.clients.sync import SyncBridge
from app.clients.transport import Request


class _Transport:
    def __init__(self) -> None:
        self.closed_on: threading.Thread | None = None

    async def send(self, request: Request, headers: Mapping[str, str], timeout: float) -> Any:
        return None

    async def aclose(self) -> None:
        self.closed_on = threading.current_thread()


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{name}-sync"]


def test_close_blocking_ends_the_calls_then_closes_the_transport_on_the_bridge_loop() -> None:
    """From a plain thread: the calls are ended and the transport closed on the loop thread, which then stops."""
    transport = _Transport()
    bridge = SyncBridge("bridge-a", transport)
    ended: list[bool] = []

    async def end_calls() -> None:
        ended.append(asyncio.get_running_loop() is bridge.loop)

    assert bridge.run(asyncio.sleep, 0) is None  # starts the thread
    [thread] = _threads("bridge-a")
    bridge.close_blocking(end_calls, 2.0, None)
    assert ended == [True]
    assert transport.closed_on is thread
    assert not thread.is_alive()
    assert bridge.loop is None


async def test_aclose_from_another_loop() -> None:
    """From an event loop: the same, awaited without blocking that loop."""
    transport = _Transport()
    bridge = SyncBridge("bridge-b", transport)
    await asyncio.to_thread(bridge.run, asyncio.sleep, 0)
    [thread] = _threads("bridge-b")

    async def end_calls() -> None:
        return None

    await bridge.aclose(end_calls, 2.0)
    assert transport.closed_on is thread
    assert not _threads("bridge-b")


def test_a_bridge_never_used_starts_no_thread_to_close() -> None:
    """Closing a bridge whose loop never started neither starts one nor touches the transport."""
    transport = _Transport()
    bridge = SyncBridge("bridge-c", transport)

    async def end_calls() -> None:
        raise AssertionError("nothing to end")

    bridge.close_blocking(end_calls, 2.0, None)
    assert transport.closed_on is None
    assert not _threads("bridge-c")
