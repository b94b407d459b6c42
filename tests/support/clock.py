"""FakeClock: a monotonic clock the test moves, so nothing sleeps for real (from the test mode)."""

from __future__ import annotations

from app.clients.testing import FakeClock

__all__ = ["FakeClock"]
