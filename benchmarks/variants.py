"""The client variants under test; each gives ``(call, close)`` for one upstream URL."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Call = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[None]]


async def raw_aiohttp(url: str) -> tuple[Call, Close]:
    """1 and 2: one ClientSession, default settings."""
    session = aiohttp.ClientSession()

    async def call() -> Any:
        async with session.get(url) as resp:
            return await resp.json()

    return call, session.close


def _framework(log: bool, transport: str = "aiohttp") -> Callable[[str], Awaitable[tuple[Call, Close]]]:
    async def make(url: str) -> tuple[Call, Close]:
        from app.clients import BaseServiceClient, ClientConfig  # noqa: PLC0415
        from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415

        base, _, endpoint = url.rpartition("/")
        # The framework's own logging set-up, to a file: JSON lines, written off the loop.
        log_file = open(tempfile.mktemp(prefix="bench-calls-", suffix=".log"), "w")  # noqa: S306, SIM115, ASYNC230
        configure_logging("INFO" if log else "WARNING", json=True, stream=log_file)
        client = BaseServiceClient(
            ClientConfig(
                base_url=base,
                service_name="bench",
                timeout_seconds=10,
                enable_metrics=True,
                enable_request_logging=log,
                bulkhead_max_concurrent=256,
                transport=transport,
            )
        )

        async def call() -> Any:
            return await client.get(endpoint)

        async def close() -> None:
            await client.close()
            stop_logging()
            log_file.close()

        return call, close

    return make


async def aiohttp_retry(url: str) -> tuple[Call, Close]:
    """5: aiohttp-retry's RetryClient with its default exponential retry."""
    from aiohttp_retry import ExponentialRetry, RetryClient  # noqa: PLC0415

    client = RetryClient(retry_options=ExponentialRetry(attempts=4))

    async def call() -> Any:
        async with client.get(url) as resp:
            return await resp.json()

    return call, client.close


async def aiohttp_tenacity(url: str) -> tuple[Call, Close]:
    """6: aiohttp with tenacity's AsyncRetrying around each call."""
    from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential  # noqa: PLC0415

    session = aiohttp.ClientSession()

    async def call() -> Any:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(4), wait=wait_random_exponential(max=10)):
            with attempt:
                async with session.get(url) as resp:
                    return await resp.json()
        return None

    return call, session.close


async def httpx_client(url: str) -> tuple[Call, Close]:
    """7: httpx's AsyncClient."""
    import httpx  # noqa: PLC0415

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))

    async def call() -> Any:
        resp = await client.get(url)
        return resp.json()

    return call, client.aclose


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that expects Content-Length responses."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            start = head.find(b"content-length:") + 15
            length = int(head[start : head.find(b"\r\n", start) if b"\r\n" in head[start:] else len(head)])
            del self.buffer[: end + 4]
            self.need = length
        if len(self.buffer) >= self.need and self.waiter is not None:
            body = bytes(self.buffer[: self.need])
            del self.buffer[: self.need]
            self.need = -1
            self.waiter.set_result(body)


async def protocol_floor(url: str) -> tuple[Call, Close]:
    """8: the Python floor, a bare asyncio.Protocol client (on uvloop): one connection per worker."""
    from yarl import URL  # noqa: PLC0415

    target = URL(url)
    request = f"GET {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    pool: list[_Conn] = []

    async def call() -> Any:
        conn = pool.pop() if pool else (await loop.create_connection(_Conn, target.host, target.port))[1]
        conn.waiter = loop.create_future()
        conn.transport.write(request)  # type: ignore[attr-defined]
        body = await conn.waiter
        pool.append(conn)
        return json.loads(body)

    async def close() -> None:
        for conn in pool:
            conn.transport.close()

    return call, close


#: name -> (label, factory, uses uvloop)
VARIANTS: dict[str, tuple[str, Callable[[str], Awaitable[tuple[Call, Close]]], bool]] = {
    "aiohttp": ("1. raw aiohttp (baseline)", raw_aiohttp, False),
    "aiohttp-uvloop": ("2. raw aiohttp on uvloop", raw_aiohttp, True),
    "framework": ("3. BaseServiceClient, metrics + call log", _framework(log=True), False),
    "framework-nolog": ("3a. BaseServiceClient, metrics, no call log", _framework(log=False), False),
    "framework-runtime": ("4. BaseServiceClient on its default runtime", _framework(log=True), True),
    "framework-lean": (
        "4b. variant 4 on the lean transport (uvloop)",
        _framework(log=True, transport="lean"),
        True,
    ),
    "framework-lean-asyncio": (
        "3b. variant 3 on the lean transport (asyncio)",
        _framework(log=True, transport="lean"),
        False,
    ),
    "aiohttp-retry": ("5. aiohttp-retry RetryClient", aiohttp_retry, False),
    "tenacity": ("6. aiohttp + tenacity per call", aiohttp_tenacity, False),
    "httpx": ("7. httpx AsyncClient", httpx_client, False),
    "floor": ("8. asyncio.Protocol floor on uvloop", protocol_floor, True),
}
