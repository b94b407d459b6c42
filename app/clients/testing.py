"""Test mode: a fake monotonic clock, fast retry and breaker settings, and client overrides.

As ``stamina.set_testing`` and dependency-injector's ``override`` do for theirs:

- ``FakeClock``: give it to a client (``BaseServiceClient(config, clock=clock)``) or to a
  container's upstream (``container.upstreams()["pricing"].clock.override(clock)``) and
  its backoff waits, breaker timeouts and deadlines run on time the test moves.
- ``FAST_TEST_OVERRIDES`` / ``fast_config(base_url, **fields)``: a config whose retries
  wait milliseconds, without jitter, and whose breaker half-opens after 0.1 s; as env
  lines with ``fast_env("pricing")``.
- ``override_client(container, "pricing", fake)``: the container (routes, and the
  factory's ``get_client``) hands out ``fake`` for that upstream inside the ``with``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar

from dependency_injector import providers

from app.clients.config import ClientConfig

__all__ = ["FAST_TEST_OVERRIDES", "FakeClock", "fast_config", "fast_env", "override_client"]

T = TypeVar("T")

#: ClientConfig fields that make failures quick to see in a test: 2 s attempts, retries
#: after 1 ms, 2 ms, 4 ms ... (at most 10 ms, no jitter, so attempt timing is exact), and
#: a breaker that half-opens 0.1 s after it opens. Thresholds and counts stay the
#: defaults, so a test sees the production behaviour, only faster.
FAST_TEST_OVERRIDES: Mapping[str, Any] = {
    "timeout_seconds": 2.0,
    "retry_base_delay": 0.001,
    "retry_max_delay": 0.01,
    "retry_jitter": False,
    "circuit_breaker_reset_timeout_seconds": 0.1,
}


def fast_config(base_url: str, **fields: Any) -> ClientConfig:
    """A ``ClientConfig`` for ``base_url`` with ``FAST_TEST_OVERRIDES``; ``fields`` win over both."""
    return ClientConfig.model_validate({"base_url": base_url, **FAST_TEST_OVERRIDES, **fields})


def fast_env(name: str, base_url: str | None = None) -> dict[str, str]:
    """``FAST_TEST_OVERRIDES`` as the settings' variables of the upstream ``name`` (and its URL).

    For a test that builds the gateway from the environment:
    ``monkeypatch.setenv`` each of ``fast_env("pricing", server_url)``.
    """
    prefix = f"APP_UPSTREAMS__{name.upper()}__"
    env: dict[str, str] = {}
    for field, value in FAST_TEST_OVERRIDES.items():
        env[prefix + field.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    if base_url is not None:
        env[prefix + "BASE_URL"] = base_url
    return env


class FakeClock:
    """A monotonic clock the test drives: ``now()`` returns what it was set to.

    ``sleep(s)`` moves time forward by ``s`` at once (recorded in ``sleeps``) and yields
    to the event loop once, so a retry's backoff or a rate limiter's wait takes no real
    time; ``advance(s)`` moves it without sleeping, e.g. past a breaker's open period.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The current fake time, in seconds."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait, move time past it, and let other tasks run once."""
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(t={self.t!r})"


class _Upstreams(Protocol):
    """What ``override_client`` needs of a container: its registry of upstreams."""

    def upstreams(self) -> Mapping[str, Any]: ...


@contextlib.contextmanager
def override_client(container: _Upstreams, name: str, client: T) -> Iterator[T]:
    """Within the block, the container's client of the upstream ``name`` is ``client``.

    ``name`` is the upstream's name (``"analysis_engine"``, or ``"pricing"`` for
    ``APP_UPSTREAMS__PRICING__...``). Routes typed with its dependency get ``client``, and
    so does ``app.factory.get_client`` for that name. The previous client (the
    lifespan's, or an outer override) is back after the block; nesting works. It is
    dependency-injector's ``provider.override``, on the right provider.
    """
    sub = container.upstreams()[name]
    with sub.client.override(providers.Object(client)):
        yield client
