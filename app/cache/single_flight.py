"""Single flight: concurrent misses of one key share one fetch, its result or its error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """One fetch per key at a time; every caller that arrives meanwhile awaits the same one.

    The fetch runs as its own task: a cancelled caller (the first one too) stops waiting,
    the fetch goes on for the others. Once it ends, the key is free and the next caller
    starts a new fetch: nothing is cached here, the store does that.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}
        self._started = 0
        self._joined = 0

    @property
    def in_flight(self) -> int:
        """Keys with a fetch running now."""
        return len(self._flights)

    @property
    def started(self) -> int:
        """Fetches started since creation."""
        return self._started

    @property
    def joined(self) -> int:
        """Callers that shared a fetch another caller started."""
        return self._joined

    async def run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """The result of ``fetch()`` for ``key``, started now or joined if one is running.

        Every waiter gets the result or the fetch's exception (the same instance).
        """
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._flights[key] = task
            self._started += 1
            task.add_done_callback(lambda done: self._finished(key, done))
        else:
            self._joined += 1
        try:
            return await asyncio.shield(task)
        finally:
            # The task holds its exception, whose traceback then holds this frame: letting go
            # of the task here keeps a failed fetch from being a reference cycle per waiter.
            del task

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Retrieved here so a fetch whose waiters were all cancelled logs no
            # "exception was never retrieved"; the waiters still receive it.
            task.exception()
