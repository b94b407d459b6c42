"""A real aiohttp upstream on 127.0.0.1 whose routes each test scripts, and which counts hits."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """Routes under ``/api/v1/`` answered by handlers the test sets; every request is recorded."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.in_flight = 0
        self.max_in_flight = 0
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/api/v1"))

    def route(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/api/v1/")
        self.hits[path] += 1
        self.requests.append(request)
        self.bodies.append(await request.read())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            handler = self.handlers.get(path) or self.handlers.get("*")
            if handler is None:
                return web.json_response({"detail": "no route", "code": "not_found"}, status=404)
            return await handler(request)
        finally:
            self.in_flight -= 1


def json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(data, status=status, headers=headers)

    return handler


def sequence(*handlers: Handler) -> Handler:
    """Answer with each handler in turn, then keep answering with the last."""
    queue = list(handlers)

    async def handler(request: web.Request) -> web.StreamResponse:
        current = queue.pop(0) if len(queue) > 1 else queue[0]
        return await current(request)

    return handler


def delayed(seconds: float, then: Handler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return handler
