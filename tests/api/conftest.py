"""API-layer fixtures: a container on the test profile, the app served for real."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.containers import Container
from settings import load_settings


@pytest.fixture
def container(monkeypatch) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    c = Container()
    c.settings.override(load_settings())
    return c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
