"""GatewayServer: uvicorn's server with the gateway's graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from types import FrameType
from typing import cast

import uvicorn
from dependency_injector import providers

from app.clients.base import BaseServiceClient
from app.containers import Container

__all__ = ["CANCEL_AFTER_CLOSE_SECONDS", "GatewayServer"]

#: After the grace, how long the requests whose clients were closed have to write their
#: 503 before uvicorn cancels what is left (the last resort: a cancelled request gets
#: no answer at all).
CANCEL_AFTER_CLOSE_SECONDS = 5.0

log = logging.getLogger(__name__)


class GatewayServer(uvicorn.Server):
    """uvicorn's ``Server``; on the first SIGTERM or SIGINT it drains within ``grace`` seconds.

    - At once: the container's ``Lifecycle`` turns to draining (readiness answers 503, the
      status stream ends), and uvicorn stops accepting connections and waits for the
      requests in flight.
    - The grace is at least the longest request the upstream deadlines allow (the
      settings refuse less), so each request gets its own answer: 200, or its typed
      503/504.
    - A request still running when the grace is over (say, one queued in a bulkhead with
      no deadline) has its upstream clients closed under it: its calls end with
      ``ClientClosedError``, a typed 503.
    - ``CANCEL_AFTER_CLOSE_SECONDS`` later, uvicorn cancels whatever is left.

    Then the lifespan closes the clients and sessions.
    """

    def __init__(self, config: uvicorn.Config, container: Container, grace: float) -> None:
        super().__init__(config)
        self.container = container
        self.grace = grace
        self._watchdog: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start draining on the first signal; uvicorn's own handling follows."""
        if not self.should_exit:
            self._follow_reloads()
            self.container.lifecycle().begin_draining()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # before the loop runs: nothing is in flight to wait for
                pass
            else:
                # A signal handler interrupts the loop between any two bytecodes: schedule,
                # do not create the task here.
                loop.call_soon_threadsafe(self._start_watchdog)
        super().handle_exit(sig, frame)

    def _follow_reloads(self) -> None:
        """The grace as the settings in force now allow: a reload may have raised a deadline.

        Never shorter than the one it started with: calls admitted before a reload that
        lowered a deadline keep theirs.
        """
        now = self.container.config_store().settings.grace_seconds
        if now > self.grace:
            self.grace = now
            self.config.timeout_graceful_shutdown = math.ceil(now + CANCEL_AFTER_CLOSE_SECONDS)

    def _start_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._close_clients_after_grace())

    async def _close_clients_after_grace(self) -> None:
        await asyncio.sleep(self.grace)
        if not self.server_state.tasks and not self.server_state.connections:
            return  # everything answered in time; the lifespan closes the clients
        log.warning(
            "shutdown grace of %g s is over with %d request(s) in flight: closing the upstream "
            "clients, their calls end with 503",
            self.grace,
            len(self.server_state.tasks),
        )
        for upstream in self.container.upstreams().values():
            # Only the clients: the sessions are the lifespan's to close, after this.
            # An async Resource hands out an awaitable of the instance the lifespan made.
            resource = cast(providers.Resource[Awaitable[BaseServiceClient]], upstream.client)
            if resource.initialized:
                client = await resource()
                await client.close()
