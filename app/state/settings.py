"""SharedStateSettings: how a replica talks to Redis, as plain values."""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["FailureMode", "SharedStateSettings"]

#: What a global limit does while Redis is unavailable: ``local`` (the limit divided by the
#: replicas last seen), ``open`` (admit every call) or ``closed`` (refuse every call).
FailureMode = Literal["local", "open", "closed"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SharedStateSettings:
    """Redis's address and every bound on talking to it; built from the settings by the container."""

    url: str = dataclasses.field(repr=False)  # may hold a password
    deadline_seconds: float = 0.02
    connect_timeout_seconds: float = 0.25
    socket_timeout_seconds: float = 0.25
    health_check_interval_seconds: float = 5.0
    breaker_failure_threshold: int = 3
    breaker_reset_seconds: float = 2.0
    key_prefix: str = "rc:"
    replica_lease_seconds: float = 5.0
    failure_mode: FailureMode = "local"

    def __post_init__(self) -> None:
        for name in (
            "deadline_seconds",
            "connect_timeout_seconds",
            "socket_timeout_seconds",
            "health_check_interval_seconds",
            "breaker_reset_seconds",
            "replica_lease_seconds",
        ):
            if not getattr(self, name) > 0:  # "not >" also refuses nan
                raise ValueError(f"{name} must be > 0")
        if self.breaker_failure_threshold < 1:
            raise ValueError("breaker_failure_threshold must be >= 1")
        if not self.key_prefix:
            raise ValueError("key_prefix must not be empty")
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must be a redis://, rediss:// or unix:// URL")
