"""Helpers shared by the discovery tests: a recorder of applied sets, a scripted source, a poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from app.discovery import DiscoveryError


class Recorder:
    """The ``apply`` callback: remembers every set it was given."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, ...]] = []

    def __call__(self, instances: tuple[str, ...]) -> None:
        self.applied.append(instances)

    @property
    def last(self) -> tuple[str, ...] | None:
        return self.applied[-1] if self.applied else None


class ScriptedSource:
    """A source whose updates are whatever the test puts in its queue; an exception there is raised."""

    kind = "scripted"
    description = "scripted://test"

    def __init__(self, first: tuple[str, ...] | DiscoveryError | None = None) -> None:
        self.first = first
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.refreshed = 0
        self.started = 0
        self.closed = 0

    def initial(self) -> tuple[str, ...] | None:
        if isinstance(self.first, DiscoveryError):
            raise self.first
        return self.first

    def refresh(self) -> None:
        self.refreshed += 1

    async def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        self.started += 1
        try:
            while True:
                item = await self.queue.get()
                if item is StopAsyncIteration:
                    return
                if isinstance(item, BaseException) and not isinstance(item, DiscoveryError):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self.closed += 1


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what or check}")
        await asyncio.sleep(0.01)


def updates(registry, service: str, source: str, result: str) -> float:
    """``service_client_discovery_updates_total`` for one result."""
    value = registry.get_sample_value(
        "service_client_discovery_updates_total",
        {"peer_service": service, "source": source, "result": result},
    )
    return value or 0.0
