"""Lifecycle: whether the gateway is draining, for readiness and long-lived streams."""

from __future__ import annotations

__all__ = ["Lifecycle"]


class Lifecycle:
    """Set to draining by the server on SIGTERM, before it stops taking connections.

    Readiness turns 503 at once, so a load balancer stops sending new requests, and the
    status stream ends, so an open dashboard does not hold the shutdown for its grace.
    Read and written on the event loop's thread only: a plain flag suffices.
    """

    def __init__(self) -> None:
        self.draining = False

    def begin_draining(self) -> None:
        """Mark the service as shutting down."""
        self.draining = True

    def __repr__(self) -> str:
        return f"Lifecycle(draining={self.draining})"
