"""The lean transport's parts: one HTTP/1.1 connection, the pool that keeps them, the request head."""

from app.clients.lean.connection import Broken, Connection, Outcome
from app.clients.lean.pool import Pool
from app.clients.lean.wire import request_head

__all__ = ["Broken", "Connection", "Outcome", "Pool", "request_head"]
