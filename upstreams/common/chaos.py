"""Fault injection: errors, latency and dropped connections, switched on over HTTP."""

from __future__ import annotations

import asyncio
import random
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upstreams.common.deadline import parse_timeout_header

__all__ = ["ChaosConfig", "ChaosMiddleware", "ChaosState", "chaos_router"]


#: How long after the caller's deadline its 504 comes. A caller that keeps its deadline has
#: given up by then and reports its own timeout; answering at the deadline itself raced
#: that timeout (the same instant on both sides), and a loaded machine let the 504 win.
_DEADLINE_GRACE = 0.05


class ChaosConfig(BaseModel):
    """The faults to inject into every API call (DESIGN §6); all off by default."""

    model_config = ConfigDict(extra="forbid")

    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_status: Annotated[int, Field(ge=400, le=599)] = 503
    latency_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    latency_jitter_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    drop_connection_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    retry_after_seconds: Annotated[int | None, Field(ge=0, le=86_400)] = None
    #: Seeds the fault dice, so a test gets the same sequence of faults every run.
    seed: int | None = None


class ChaosStats(BaseModel):
    """What the faults did since the config was last set."""

    requests: int = 0
    errors_injected: int = 0
    connections_dropped: int = 0
    delayed: int = 0
    deadline_exceeded: int = 0


class ChaosState:
    """The live config, its dice and its counters."""

    def __init__(self) -> None:
        self.config = ChaosConfig()
        self.stats = ChaosStats()
        self.rng = random.Random()  # noqa: S311 - fault dice, not cryptography

    def set(self, config: ChaosConfig) -> None:
        self.config = config
        self.stats = ChaosStats()
        self.rng = random.Random(config.seed)  # noqa: S311

    @property
    def active(self) -> bool:
        c = self.config
        return bool(c.error_rate or c.latency_ms or c.latency_jitter_ms or c.drop_connection_rate)


def chaos_router(state: ChaosState) -> APIRouter:
    """``PUT``, ``GET`` and ``DELETE`` on ``/api/v1/chaos``."""
    router = APIRouter(prefix="/api/v1/chaos", tags=["chaos"])

    @router.put("")
    async def put_chaos(config: ChaosConfig) -> dict[str, object]:
        state.set(config)
        return {"config": state.config.model_dump(), "stats": state.stats.model_dump()}

    @router.get("")
    async def get_chaos() -> dict[str, object]:
        return {"config": state.config.model_dump(), "stats": state.stats.model_dump()}

    @router.delete("")
    async def clear_chaos(request: Request) -> dict[str, object]:
        state.set(ChaosConfig())
        return {"config": state.config.model_dump(), "stats": state.stats.model_dump()}

    return router


def _transport(send: Send) -> asyncio.Transport | None:
    # uvicorn's `send` is a bound method of its per-request cycle, which holds the
    # socket's transport. ASGI has no "drop this connection" message, so this is the
    # one way to close it without a response, as a crashed or partitioned peer does.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


class ChaosMiddleware:
    """Applies the faults to calls under ``paths`` (never to ``/api/v1/chaos`` or ``/health``).

    ``paths`` are path prefixes, ``/api/v1/`` by default (the token service names its
    token endpoint instead). Must be the outermost middleware, so it sees the server's
    own ``send``.
    """

    def __init__(self, app: ASGIApp, state: ChaosState, paths: tuple[str, ...] = ("/api/v1/",)) -> None:
        self.app = app
        self.state = state
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        state = self.state
        if (
            scope["type"] != "http"
            or not state.active
            or not path.startswith(self.paths)
            or path.startswith("/api/v1/chaos")
        ):
            await self.app(scope, receive, send)
            return
        config, stats, rng = state.config, state.stats, state.rng
        stats.requests += 1
        delay = (config.latency_ms + rng.uniform(0, config.latency_jitter_ms)) / 1000
        if delay > 0:
            stats.delayed += 1
            budget = parse_timeout_header(scope["headers"])
            past_deadline = budget is not None and budget < delay
            gone, receive = await _wait(
                receive, budget + _DEADLINE_GRACE if budget is not None and past_deadline else delay
            )
            if gone:
                return  # the caller hung up: nobody to answer, no work to do
            if past_deadline:
                # The caller will have given up before the answer arrives: say so just after its deadline.
                stats.deadline_exceeded += 1
                await _reply(send, 504, b'{"detail":"deadline exceeded","code":"deadline_exceeded"}')
                return
        if config.drop_connection_rate and rng.random() < config.drop_connection_rate:
            stats.connections_dropped += 1
            transport = _transport(send)
            if transport is not None:
                transport.abort()
                # Let the server see the connection go before this call returns, so it
                # does not report a handler that "returned without starting a response".
                for _ in range(3):
                    await asyncio.sleep(0)
                return
            # Without the transport: promise a body and never send it; the server closes.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"100")],
                }
            )
            raise ConnectionAbortedError("chaos: connection dropped")
        if config.error_rate and rng.random() < config.error_rate:
            stats.errors_injected += 1
            headers = []
            if config.retry_after_seconds is not None:
                headers.append((b"retry-after", str(config.retry_after_seconds).encode()))
            body = b'{"detail":"injected fault","code":"chaos"}'
            await _reply(send, config.error_status, body, headers)
            return
        await self.app(scope, receive, send)


async def _wait(receive: Receive, seconds: float) -> tuple[bool, Receive]:
    """Sleep ``seconds`` unless the client disconnects first.

    Returns whether it disconnected, and a ``receive`` that replays the body messages
    read while watching, so the app still gets the whole request.
    """
    buffered: list[Message] = []

    async def until_disconnect() -> None:
        while (message := await receive())["type"] != "http.disconnect":
            buffered.append(message)

    try:
        async with asyncio.timeout(seconds):
            await until_disconnect()
    except TimeoutError:
        gone = False
    else:
        gone = True

    async def replay() -> Message:
        return buffered.pop(0) if buffered else await receive()

    return gone, replay


async def _reply(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
