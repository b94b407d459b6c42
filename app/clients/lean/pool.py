"""The lean transport's connection pool: one host:port, bounded, idle connections reused last-in first-out."""

from __future__ import annotations

import asyncio
from collections import deque

from app.clients.lean.connection import CLOSED, Connection

__all__ = ["KEEPALIVE_SECONDS", "Pool", "PoolClosedError"]

#: An idle connection older than this is not reused (aiohttp's connector keeps them 30 s too):
#: servers drop idle connections after a while, and a request sent on one just dropped fails.
KEEPALIVE_SECONDS = 30.0


class PoolClosedError(Exception):
    """The pool was closed (the transport's ``aclose``) while a caller waited for a connection."""


class Pool:
    """Connections to one upstream address, at most ``limit`` open (busy, idle or connecting) at once.

    LIFO reuse keeps the hottest connection warm and lets the others age out. A
    connection the server closed while idle leaves the pool when its ``connection_lost``
    comes, so a send never picks it. Callers beyond the limit wait, first come first served.
    """

    __slots__ = (
        "_all", "_drained", "_idle", "_loop", "_size", "_sweeper", "_waiters",
        "closed", "host", "limit", "port",
    )  # fmt: skip

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._size = 0  # open or being opened: what the limit bounds
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._drained: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None  # closes idle connections past their time

    @property
    def open_connections(self) -> int:
        """Connections open or being opened (tests compare it with the limit)."""
        return self._size

    @property
    def busy(self) -> int:
        """Connections in an exchange (or being opened for one) right now."""
        return self._size - len(self._idle)

    async def acquire(self, loop: asyncio.AbstractEventLoop, ends: float) -> Connection:
        """A connection for one exchange: an idle one, a new one, or the next one freed.

        ``ends`` (loop time) bounds the wait and the connect (``TimeoutError``); a failed
        connect raises its ``OSError``; a closed pool ``PoolClosedError``.
        """
        self._loop = loop
        idle = self._idle
        while True:
            if self.closed:
                raise PoolClosedError
            while idle:
                conn = idle.pop()
                if not conn.closed and loop.time() - conn.idle_since < KEEPALIVE_SECONDS:
                    return conn
                conn.abort()  # too old to trust; its connection_lost frees the slot
            if self._size < self.limit:
                self._size += 1
                return await self._connect(loop, ends)
            handed = await self._wait(loop, ends)
            if handed is not None:
                if not handed.closed and not self.closed:
                    return handed
                # Handed over just before aclose() ended it: dropped (its slot is freed when
                # it is lost), and the loop's first test raises PoolClosedError.
                self.release(handed)
                continue
            if self.closed:
                raise PoolClosedError
            return await self._connect(loop, ends)  # woken with a slot kept for us

    async def _wait(self, loop: asyncio.AbstractEventLoop, ends: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(ends):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection (or a slot) just as we gave up: pass it on, never lose it.
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                elif not self.closed:
                    self._freed()
            else:
                waiter.cancel()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, ends: float) -> Connection:
        conn = Connection(self._lost)
        self._all.add(conn)
        try:
            async with asyncio.timeout_at(ends):
                await loop.create_connection(lambda: conn, self.host, self.port)
        except BaseException:
            if conn.transport is None:  # never connected: no connection_lost will free the slot
                self._all.discard(conn)
                self._freed()
            else:
                conn.abort()
            raise
        if self.closed:  # closed while we connected
            conn.abort()
            raise PoolClosedError
        return conn

    def release(self, conn: Connection) -> None:
        """Give back a connection after an exchange: reused when it is whole, else dropped."""
        if not conn.keep or conn.closed or self.closed:
            conn.abort()  # its connection_lost frees the slot
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        loop = self._loop
        if loop is None:  # pragma: no cover - a connection comes from acquire, which sets it
            conn.abort()
            return
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(conn.idle_since + KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``KEEPALIVE_SECONDS``; come back for the rest.

        One timer per pool, not per request: a quiet client does not hold sockets forever.
        """
        self._sweeper = None
        loop = self._loop
        if loop is None or self.closed:
            return
        now = loop.time()
        fresh = [c for c in self._idle if now - c.idle_since < KEEPALIVE_SECONDS]
        for conn in self._idle:
            if now - conn.idle_since >= KEEPALIVE_SECONDS:
                conn.abort()  # its connection_lost frees the slot
        self._idle[:] = fresh  # in place: acquire holds the list
        if fresh:
            oldest = min(c.idle_since for c in fresh)
            self._sweeper = loop.call_at(oldest + KEEPALIVE_SECONDS, self._sweep)

    def _lost(self, conn: Connection) -> None:
        """A connection is gone (either side closed it): free its slot for the next caller."""
        if conn in self._all:
            self._all.discard(conn)
            if conn in self._idle:
                self._idle.remove(conn)
            self._freed()
        drained = self._drained
        if drained is not None and not drained.done() and not any(c.transport for c in self._all):
            # Only connected ones are waited for: one still connecting is dropped by _connect.
            drained.set_result(None)

    def _freed(self) -> None:
        self._size -= 1
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._size += 1  # the slot goes to the waiter, which opens a connection in it
                waiter.set_result(None)
                return

    def resize(self, limit: int) -> None:
        """Take a new limit: from the next acquire, and (in the pool's loop) for callers waiting now.

        Callable from any thread: a live reconfigure runs where the config changed.
        """
        self.limit = limit
        loop = self._loop
        if self._waiters and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._grow)

    def _grow(self) -> None:
        waiters = self._waiters
        while waiters and self._size < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)

    async def aclose(self) -> None:
        """Close every connection; exchanges in flight end ``CLOSED``, waiters ``PoolClosedError``."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # the waiter sees the pool closed
        self._waiters.clear()
        self._idle.clear()
        if not any(c.transport for c in self._all):
            return
        drained = self._drained = asyncio.get_running_loop().create_future()
        for conn in list(self._all):
            conn.end(CLOSED)
        # connection_lost comes in the next loop pass: wait for it, so every socket is
        # closed when aclose returns (no ResourceWarning, no descriptor left).
        await drained
