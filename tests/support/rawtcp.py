"""TCP peers on 127.0.0.1 that misbehave on purpose: hang, reset, drip, send garbage."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        await reader.readuntil(b"\r\n\r\n")


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, never answer."""
    await _read_request(reader)
    await asyncio.sleep(3600)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close without a byte."""
    await _read_request(reader)
    writer.transport.abort()


async def half_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promise 1000 bytes, send 10, then drop the connection."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    writer.write(b'{"partial"')
    await writer.drain()
    writer.transport.abort()


async def headers_then_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send a status line and headers, then never the body."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(3600)


async def truncated_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a chunked body, send half a chunk, and close."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b'20\r\n{"only": "half')
    await writer.drain()
    writer.close()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer with bytes that are not HTTP."""
    await _read_request(reader)
    writer.write(b"\x00\xffthis is not http at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send headers, then one body byte every 100 ms, forever."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)


def keep_alive(
    answer: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]],
) -> Behaviour:
    """Read requests one after another on one connection; ``answer`` each (given its head).

    ``answer`` writes what it likes; False ends the connection (it has written all it
    will). The writer is drained after each answer; the peer's close ends the loop.
    """

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if not await answer(head, reader, writer):
                return
            await writer.drain()

    return behaviour


def respond(
    head: bytes, body: bytes | Callable[[], Iterable[bytes]] = b"", *, chunked: bool = False
) -> Behaviour:
    """Read a request; send ``head`` verbatim (status line and headers), then ``body``; close.

    ``head`` is raw bytes, so a header can be anything at all; ``Connection: close`` is
    added. The body is sent as given (``head`` frames it, with Content-Length or with
    nothing, the close ending it), or in HTTP/1.1 chunks, one per piece, with
    ``chunked``. A callable body yields its pieces lazily (a stream of gigabytes costs
    nothing until read); writing stops quietly when the client drops the connection.
    """

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        extra = b"\r\nConnection: close" + (b"\r\nTransfer-Encoding: chunked" if chunked else b"")
        writer.write(head.rstrip(b"\r\n") + extra + b"\r\n\r\n")
        pieces = [body] if isinstance(body, bytes) else body()
        with contextlib.suppress(ConnectionError):
            for piece in pieces:
                if not piece:
                    continue
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    return behaviour


@contextlib.asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """Serve ``behaviour`` on a free port; yields the base URL; cancels every handler on exit."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await behaviour(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            writer.transport.abort()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def closed_port_url() -> str:
    """A base URL on a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v1"
