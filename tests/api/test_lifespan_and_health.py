"""The lifespan opens and closes the sessions; health and readiness report the breakers."""

from __future__ import annotations

import pytest

from app.clients import AnalysisEngineClient, MLWorkbenchClient
from app.main import create_app
from settings import SettingsError
from tests.support.asgi import serve


async def test_lifespan_opens_and_closes_the_sessions(container, http) -> None:
    """Sessions and clients exist while the app runs and are closed after, with no warning."""
    async with serve(create_app(container)) as base:
        # Async Resources hand out an awaitable of the instance the lifespan made.
        session = await container.analysis_engine.session()
        client = await container.analysis_engine.client()
        assert isinstance(client, AnalysisEngineClient)
        assert isinstance(await container.ml_workbench.client(), MLWorkbenchClient)
        assert not session.closed
        assert client._session is session  # the client sends through the lifespan's session
        assert client.breaker is container.analysis_engine.breaker()
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok"}
    assert session.closed
    assert not container.analysis_engine.session.initialized
    assert not container.analysis_engine.client.initialized


async def test_ready_reports_breakers_and_503_when_open(container, http) -> None:
    """/health/ready lists each dependency's breaker; an open breaker makes it 503."""
    async with serve(create_app(container)) as base:
        async with http.get(f"{base}/health/ready") as resp:
            body = await resp.json()
            assert resp.status == 200
        assert set(body["dependencies"]) == {"analysis-engine-service", "ml-workbench-service"}
        assert body["dependencies"]["analysis-engine-service"]["breaker"] == "closed"
        container.ml_workbench.breaker().open()
        async with http.get(f"{base}/health/ready") as resp:
            body = await resp.json()
            assert resp.status == 503
        assert body["dependencies"]["ml-workbench-service"]["breaker"] == "open"
        assert body["dependencies"]["ml-workbench-service"]["seconds_until_half_open"] > 0


async def test_docs_are_served(container, http) -> None:
    """The OpenAPI docs page and schema are served."""
    async with serve(create_app(container)) as base:
        async with http.get(f"{base}/docs") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/openapi.json") as resp:
            paths = (await resp.json())["paths"]
    assert {"/api/v1/signals/{symbol}", "/api/v1/indicators/{symbol}", "/health/ready"} <= set(paths)


def test_bad_settings_fail_in_create_app(monkeypatch) -> None:
    """create_app reads the settings, so a bad value fails there with the clear error."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ML_WORKBENCH__BULKHEAD_MAX_CONCURRENT", "0")
    with pytest.raises(
        SettingsError,
        match=r"ml_workbench.bulkhead_max_concurrent \(APP_ML_WORKBENCH__BULKHEAD_MAX_CONCURRENT\)",
    ):
        create_app()
