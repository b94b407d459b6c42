"""The sync twins' side of a client: a private event loop on its own thread, and its transport."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from app.clients.transport import Transport

__all__ = ["LoopThread", "SyncBridge", "SyncCapable", "sync_twin"]

P = ParamSpec("P")
R = TypeVar("R")


class LoopThread:
    """Runs coroutines on an event loop owned by a daemon thread, started on first use.

    ``close()`` ends it for good: whatever still runs on the loop is cancelled and
    awaited, so a thread blocked in ``run`` always returns (with ``closed_error()`` when
    the close cut its call short), and a later ``run`` raises ``closed_error()`` instead
    of starting a new thread.
    """

    def __init__(self, name: str, closed_error: Callable[[], BaseException] | None = None) -> None:
        self._name = name
        self._closed_error = closed_error or (lambda: RuntimeError(f"{name}: loop thread closed"))
        self._lock = threading.Lock()
        #: The loop, once started (None again after ``close``). An attribute, not a property:
        #: every async call reads it (which transport serves the loop it runs on).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Finished on its own thread: close() may be called from inside another loop.
            # Anything still pending is cancelled and run to its end, so every waiting
            # run() gets an answer and no task is destroyed pending.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Schedule ``coro`` on the loop (started if need be); the caller decides how to wait."""
        with self._lock:
            if self._closed:
                coro.close()  # never started: closing it avoids a "never awaited" warning
                raise self._closed_error()
            if self.loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name=f"{self._name}-sync", daemon=True
                )
                thread.start()
                self.loop, self._thread = loop, thread
            # Under the lock: close() cannot stop the loop between the check and this.
            return asyncio.run_coroutine_threadsafe(coro, self.loop)

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
        future = self.submit(fn(*args, **kwargs))
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise self._closed_error() from None
            raise
        except BaseException:
            future.cancel()  # Ctrl-C in the caller's thread stops the call too
            raise

    def close(self) -> None:
        """Stop the loop for good (pending work is cancelled) and join its thread."""
        with self._lock:
            self._closed = True
            loop, thread = self.loop, self._thread
            self.loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():  # a thread cannot join itself
            thread.join()


class SyncBridge(LoopThread):
    """A client's loop thread together with the transport its sync twins send through.

    The transport is the bridge's own (a session serves the loop it was opened on): it
    opens its session on the bridge's loop at the first sync call, and the bridge closes
    it there, after the calls still running on that loop have been ended.
    """

    def __init__(
        self, name: str, transport: Transport, closed_error: Callable[[], BaseException] | None = None
    ) -> None:
        super().__init__(name, closed_error)
        self.transport = transport

    async def aclose(self, end_calls: Callable[[], Awaitable[None]], timeout: float) -> None:
        """From another loop: ``end_calls`` and close the transport on the bridge's loop, then stop it.

        Bounded by ``timeout``: a close never hangs its caller, whatever the sync side does.
        """
        if self.loop is not None:
            with contextlib.suppress(Exception):  # a loop closed under us has nothing to close
                await asyncio.wait_for(asyncio.wrap_future(self.submit(self._shutdown(end_calls))), timeout)
        self.close()

    def close_blocking(
        self,
        end_calls: Callable[[], Awaitable[None]],
        timeout: float,
        here: asyncio.AbstractEventLoop | None,
    ) -> None:
        """As :meth:`aclose`, for a thread that may not await (``here`` is its running loop, if any)."""
        loop = self.loop
        if loop is not None and loop is not here:
            future = self.submit(self._shutdown(end_calls))
            with contextlib.suppress(Exception):
                future.result(timeout=timeout)
        # On the bridge's own loop nothing can be waited for: its calls end as the loop stops.
        self.close()

    async def _shutdown(self, end_calls: Callable[[], Awaitable[None]]) -> None:
        await end_calls()
        await self.transport.aclose()


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
