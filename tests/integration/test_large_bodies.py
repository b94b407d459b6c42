"""A request body past 1 MiB: sent whole on every attempt, and no warning from aiohttp.

aiohttp warns (a ResourceWarning, an error in this suite) when a body past 1 MiB is
given to it as bytes; the aiohttp transport hands it a stream instead, a new one for
every attempt, so a retry or a 307 sends the whole body again.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.clients import BaseServiceClient

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

_PAYLOAD = {"blob": "y" * (3 * 1024 * 1024)}


async def test_a_large_body_goes_whole_on_each_attempt_and_after_a_307(
    make_client: Callable[..., BaseServiceClient],
) -> None:
    """3 MiB: a 503, then a 307 to another path, then a 200; the same body reached each."""
    bodies: list[tuple[str, bytes]] = []
    answers = iter(
        [
            web.json_response({"detail": "busy"}, status=503),
            web.Response(status=307, headers={"Location": "/api/v1/moved"}),
            web.json_response({"ok": True}),
        ]
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append((request.path, await request.read()))
        return next(answers)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        client = make_client(
            str(server.make_url("/api/v1")),
            max_retries=1,
            retry_base_delay=0.001,
            follow_redirects=True,
            timeout_seconds=10.0,
        )
        try:
            assert await client.post("upload", json=_PAYLOAD, idempotent=True) == {"ok": True}
        finally:
            await client.close()
    sent = orjson.dumps(_PAYLOAD)
    assert bodies == [("/api/v1/upload", sent), ("/api/v1/upload", sent), ("/api/v1/moved", sent)]
