"""A private event loop on its own thread, for the clients' sync twins."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

__all__ = ["LoopThread", "SyncCapable", "sync_twin"]

P = ParamSpec("P")
R = TypeVar("R")


class LoopThread:
    """Runs coroutines on an event loop owned by a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, once started."""
        return self._loop

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name=f"{self._name}-sync", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Finished on its own thread: stop() may be called from inside another loop.
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def run(self, fn: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` on the private loop and wait for its result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            # Blocking here would freeze the caller's loop; the coroutine is not even built.
            raise RuntimeError(
                "sync client methods cannot be called from a running event loop; "
                "await the async method instead"
            )
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._ensure())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller's thread stops the call too
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread; a later ``run`` starts a new one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


class SyncCapable(Protocol):
    """An object whose coroutines can be run from plain threads."""

    def _run_sync(self, fn: Callable[P, Coroutine[Any, Any, R]], *a: P.args, **kw: P.kwargs) -> R: ...


S = TypeVar("S", bound=SyncCapable)


def sync_twin(method: Callable[Concatenate[S, P], Awaitable[R]]) -> Callable[Concatenate[S, P], R]:
    """The blocking twin of an async client method, run on the client's private loop."""

    @functools.wraps(method)
    def twin(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        async def call() -> R:
            return await method(self, *args, **kwargs)

        return self._run_sync(call)

    twin.__name__ = f"{method.__name__}_sync"
    twin.__qualname__ = f"{method.__qualname__}_sync"
    twin.__doc__ = f"Blocking twin of :meth:`{method.__name__}`, for code without an event loop."
    return cast(Callable[Concatenate[S, P], R], twin)
