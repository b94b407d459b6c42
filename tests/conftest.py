"""Fixtures shared by every test: a fake clock, a scripted upstream, a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.clients import BaseServiceClient, ClientConfig
from app.factory import reset_factory
from tests.support.clock import FakeClock
from tests.support.upstream import Upstream


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.server.start_server()
    try:
        yield up
    finally:
        await up.server.close()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., BaseServiceClient]]:
    """Build clients with fast test defaults (no jitter, tiny waits); all closed at teardown."""
    made: list[BaseServiceClient] = []

    def build(base_url: str, cls: type[BaseServiceClient] = BaseServiceClient, **overrides: Any) -> Any:
        clock = overrides.pop("clock", None)
        session = overrides.pop("session", None)
        fields: dict[str, Any] = {
            "base_url": base_url,
            "service_name": "test-upstream",
            "timeout_seconds": 2.0,
            "retry_base_delay": 0.001,
            "retry_max_delay": 0.01,
            "retry_jitter": False,
        }
        fields.update(overrides)
        kwargs: dict[str, Any] = {"session": session}
        if clock is not None:
            kwargs["clock"] = clock
        client = cls(ClientConfig(**fields), **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


@pytest.fixture(autouse=True)
def _fresh_factory() -> Any:
    reset_factory()
    yield
    reset_factory()
