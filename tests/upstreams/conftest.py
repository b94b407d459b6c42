"""The reference upstreams served for real on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.asgi import serve
from upstreams.analysis_engine.service import AnalysisEngineSettings
from upstreams.analysis_engine.service import create_app as create_ae
from upstreams.ml_workbench.service import MLWorkbenchSettings
from upstreams.ml_workbench.service import create_app as create_ml


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def ae() -> AsyncIterator[str]:
    async with serve(create_ae(AnalysisEngineSettings(app_env="test"))) as url:
        yield url + "/api/v1"


@pytest.fixture
async def ml() -> AsyncIterator[str]:
    async with serve(create_ml(MLWorkbenchSettings(app_env="test"))) as url:
        yield url + "/api/v1"
