"""The calls a client has in flight, on any event loop, and cutting them short when it closes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["InFlight"]

_Draining = tuple[set[asyncio.Task[Any]], asyncio.Future[None]]


class InFlight:
    """The tasks inside a client's ``request()``; ``close()`` cancels them and waits them out.

    ``tasks`` is the live set the client adds each call's task to and discards it from
    (a plain set: that is the per-call cost). A task this cancels is remembered until its
    cancellation has been turned into ``ClientClosedError`` (:meth:`take_abort`) or it has
    left (:meth:`left`).
    """

    __slots__ = ("_aborting", "_draining", "tasks")

    def __init__(self) -> None:
        # Calls in flight (the tasks inside request()), on any loop; close() cuts them short.
        self.tasks: set[asyncio.Task[Any]] = set()
        # Tasks cancelled by a close whose cancellation is not yet turned into ClientClosedError.
        self._aborting: set[asyncio.Task[Any]] = set()
        # Per loop, while a close waits there: the aborted calls not yet out, and its wake-up.
        self._draining: dict[asyncio.AbstractEventLoop, _Draining] = {}

    def abort_here(self) -> set[asyncio.Task[Any]]:
        """Cancel the calls in flight on the running loop; the client turns each into ClientClosedError."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        tasks = {
            t
            for t in tuple(self.tasks)  # tuple(): other loops' threads add and remove too
            if t.get_loop() is loop and t is not me and not t.done() and t not in self._aborting
        }
        for task in tasks:
            self._aborting.add(task)
            task.cancel()
        return tasks

    def abort_elsewhere(self, *skip: asyncio.AbstractEventLoop | None) -> None:
        """Have every other loop with calls in flight (not in ``skip``) cancel them, on its own thread."""
        loops = {t.get_loop() for t in tuple(self.tasks)} - set(skip)
        for loop in loops:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has no calls left
                loop.call_soon_threadsafe(self.abort_here)

    async def end_here(self, grace: float) -> None:
        """Abort this loop's calls and wait (at most ``grace`` seconds) until each has left."""
        tasks = self.abort_here()
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._draining[loop] = (tasks, done)
        try:
            await asyncio.wait({done}, timeout=grace)
        finally:
            self._draining.pop(loop, None)

    def left(self, task: asyncio.Task[Any]) -> None:
        """A call left request() while the client closes: wake the close once all have."""
        # Its cancellation surfaced (and was taken back) or never came: forget it either way.
        self._aborting.discard(task)
        draining = self._draining.get(task.get_loop())
        if draining is not None:
            tasks, done = draining
            tasks.discard(task)
            if not tasks and not done.done():
                done.set_result(None)

    def take_abort(self) -> bool:
        """True when the current task's cancellation came from a close; it is then taken back."""
        task = asyncio.current_task()
        if task is None or task not in self._aborting:
            return False
        self._aborting.discard(task)
        task.uncancel()
        # Cancelled by its own caller as well: that cancellation stands.
        return task.cancelling() == 0
