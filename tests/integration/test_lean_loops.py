"""A client on the lean transport serves a second event loop once the first has closed.

The lean transport keeps no state of a loop's but its pool's connections (dropped with
the loop) and its timer wheel, which it makes anew for a new loop. (An aiohttp session
serves the loop it was opened on, and so does a client on it.) The server runs on a
thread of its own, so it outlives each loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.clients import BaseServiceClient, ClientConfig, ClientTimeoutError


def test_a_lean_client_serves_a_second_event_loop() -> None:
    """Used under one asyncio.run() and then another: its timer wheel follows the loop (answers, timeouts)."""
    with _threaded_server() as url:
        client = BaseServiceClient(
            ClientConfig(
                base_url=url, transport="lean", service_name="loops", timeout_seconds=0.3, max_retries=0
            )
        )

        async def run() -> float:
            assert await client.get("ok") == {"ok": True}
            started = time.monotonic()
            with pytest.raises(ClientTimeoutError):
                await client.get("slow")
            return time.monotonic() - started

        first = asyncio.run(run())

        async def second() -> float:
            try:
                return await run()
            finally:
                await client.close()

        again = asyncio.run(second())
    assert 0.3 <= first <= 0.3 + 0.2
    assert 0.3 <= again <= 0.3 + 0.2


@contextlib.contextmanager
def _threaded_server() -> Iterator[str]:
    """An HTTP server on its own thread (it outlives each test loop): /ok answers, /slow takes 2 s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.endswith("/slow"):
                time.sleep(2)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have gone (timed out)
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="second-loop-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
