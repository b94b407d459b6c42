"""The lifespan opens and closes the sessions; liveness; bad settings fail in create_app."""

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


def test_bad_settings_fail_in_create_app(monkeypatch) -> None:
    """create_app reads the settings, so a bad value fails there with the clear error."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ML_WORKBENCH__BULKHEAD_MAX_CONCURRENT", "0")
    with pytest.raises(
        SettingsError,
        match=r"ml_workbench.bulkhead_max_concurrent \(APP_ML_WORKBENCH__BULKHEAD_MAX_CONCURRENT\)",
    ):
        create_app()
