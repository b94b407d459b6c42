"""Shared state between replicas through Redis: off by default; never blocks a call (DESIGN §9)."""

from app.state.budget import GlobalRetryBudget
from app.state.gcra import GlobalRateLimiter
from app.state.metrics import SharedStateFamilies, shared_state_families
from app.state.settings import FailureMode, SharedStateSettings
from app.state.shared import SharedState, SharedStateUnavailable, redact_url
from app.state.shared_breaker import SharedBreaker

__all__ = [
    "FailureMode",
    "GlobalRateLimiter",
    "GlobalRetryBudget",
    "SharedBreaker",
    "SharedState",
    "SharedStateFamilies",
    "SharedStateSettings",
    "SharedStateUnavailable",
    "redact_url",
    "shared_state_families",
]
