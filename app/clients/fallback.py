"""Fallbacks: a value (or a function of the error) served when a dependency is unavailable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Final

from app.errors import ClientClosedError, ClientError, ServiceTimeoutError, ServiceUnavailableError

__all__ = ["NO_FALLBACK", "collect_degraded", "falls_back", "mark_degraded", "resolve"]


class _NoFallback:
    def __repr__(self) -> str:
        return "NO_FALLBACK"


#: The default of every ``fallback=`` keyword: errors propagate.
NO_FALLBACK: Final = _NoFallback()

_degraded: ContextVar[list[str] | None] = ContextVar("degraded", default=None)


def falls_back(fallback: Any, error: ClientError) -> bool:
    """True when ``error`` may be answered by ``fallback``.

    Only unavailability and timeouts fall back; a validation, authentication or
    not-found error is the caller's to see, and so is the client's own shutdown
    (``ClientClosedError``): that is not the upstream being unavailable.
    """
    return (
        fallback is not NO_FALLBACK
        and isinstance(error, ServiceUnavailableError | ServiceTimeoutError)
        and not isinstance(error, ClientClosedError)
    )


def resolve(fallback: Any, error: ClientError) -> Any:
    """The fallback's value: called with the error when it is callable."""
    return fallback(error) if callable(fallback) else fallback


def mark_degraded(service_name: str) -> None:
    """Note that a result from ``service_name`` was a fallback, for ``collect_degraded``."""
    collected = _degraded.get()
    if collected is not None and service_name not in collected:
        collected.append(service_name)


@contextlib.contextmanager
def collect_degraded() -> Iterator[list[str]]:
    """Collect the services whose calls in this block were answered by a fallback.

    Tasks started inside the block (``TaskGroup``, ``gather``) share the same list.
    """
    collected: list[str] = []
    token = _degraded.set(collected)
    try:
        yield collected
    finally:
        _degraded.reset(token)
