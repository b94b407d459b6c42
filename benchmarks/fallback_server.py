"""A minimal HTTP/1.1 keep-alive server (``python -m benchmarks.fallback_server PORT [DELAY_MS]``).

Used when nginx cannot be installed, for ``/slow`` (the memory benchmark's endpoint,
which holds every answer until the requests stop coming), and, with ``DELAY_MS``, for
the many-instances benchmark's instances (every answer held that long), none of which
nginx can do.
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks.payloads import ERROR, LARGE, SMALL

#: ``/slow`` answers once no request for it came for this long: all of them at once.
#: (Longer than TCP's first SYN retransmit, 1 s: a connect dropped by a full accept queue
#: and sent again is not mistaken for the end of the requests.)
SLOW_QUIET_SECONDS = 3.0
#: Every other answer is held this long (``DELAY_MS``); 0 answers at once.
DELAY_SECONDS = 0.0


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: keep-alive\r\n\r\n"
        + body
    )


RESPONSES = {
    b"/small": _response(b"200 OK", SMALL),
    b"/large": _response(b"200 OK", LARGE),
    b"/error": _response(b"503 Service Unavailable", ERROR),
    b"/slow": _response(b"200 OK", SMALL),
}
NOT_FOUND = _response(b"404 Not Found", b'{"detail":"no route"}')


class _Held:
    """The ``/slow`` answers held, released together once the requests stop arriving.

    However long a client takes to send its calls, every one of them is in flight before
    the first answer, and every client meets the same burst of answers: what the memory
    benchmark compares. (A fixed delay per request answered a slower sender's first calls
    while it still sent the last, so its peak mixed sending and reading.)
    """

    def __init__(self) -> None:
        self.answers: list[tuple[Server, bytes]] = []
        self.timer: asyncio.TimerHandle | None = None

    def hold(self, server: Server, reply: bytes) -> None:
        self.answers.append((server, reply))
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(SLOW_QUIET_SECONDS, self.release)

    def release(self) -> None:
        answers, self.answers, self.timer = self.answers, [], None
        for server, reply in answers:
            server._write(reply)


HELD = _Held()


class Server(asyncio.Protocol):
    """Answers GETs by path; bodies of requests are not expected."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].split(b"?")[0]
            reply = RESPONSES.get(path, NOT_FOUND)
            if path == b"/slow":
                HELD.hold(self, reply)
            elif DELAY_SECONDS:
                asyncio.get_running_loop().call_later(DELAY_SECONDS, self._write, reply)
            else:
                self._write(reply)

    def _write(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", port, backlog=16384, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import resource

    # 10k connections at once for the memory benchmark: lift the soft descriptor limit.
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    if len(sys.argv) > 2:
        DELAY_SECONDS = float(sys.argv[2]) / 1000
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
