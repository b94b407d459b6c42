"""/health/ready: 503 only for an essential dependency (configurable) or while draining."""

from __future__ import annotations

import pytest

from app.containers import Container
from app.main import create_app
from settings import load_settings
from tests.support.asgi import serve

AE, MLW = "analysis-engine-service", "ml-workbench-service"


def make_container(monkeypatch, essential: str | None = None) -> Container:
    monkeypatch.setenv("APP_ENV", "test")
    if essential is not None:
        monkeypatch.setenv("APP_ESSENTIAL_DEPENDENCIES", essential)
    container = Container()
    container.settings.override(load_settings())
    return container


async def ready(http, base: str) -> tuple[int, dict]:
    async with http.get(f"{base}/health/ready") as resp:
        return resp.status, await resp.json()


async def test_all_closed_is_ready_and_lists_each_dependency(monkeypatch, http) -> None:
    """Every breaker closed: 200 "ready", each dependency with its breaker, bulkhead and role."""
    container = make_container(monkeypatch)
    async with serve(create_app(container)) as base:
        status, body = await ready(http, base)
    assert status == 200
    assert body["status"] == "ready"
    assert set(body["dependencies"]) == {AE, MLW}
    ae, mlw = body["dependencies"][AE], body["dependencies"][MLW]
    assert (ae["status"], ae["essential"], ae["breaker"]) == ("ok", True, "closed")
    assert (mlw["status"], mlw["essential"], mlw["breaker"]) == ("ok", False, "closed")
    assert ae["bulkhead"]["limit"] == 100


async def test_a_degradable_dependency_open_is_degraded_not_unready(monkeypatch, http) -> None:
    """The ML Workbench's breaker open: 200 "degraded", the workbench shown as degraded."""
    container = make_container(monkeypatch)
    async with serve(create_app(container)) as base:
        container.ml_workbench.breaker().open()
        status, body = await ready(http, base)
    assert status == 200
    assert body["status"] == "degraded"
    mlw = body["dependencies"][MLW]
    assert (mlw["status"], mlw["breaker"]) == ("degraded", "open")
    assert mlw["seconds_until_half_open"] > 0
    assert body["dependencies"][AE]["status"] == "ok"


@pytest.mark.parametrize("isolate", [False, True], ids=["opened", "isolated"])
async def test_an_essential_dependency_open_is_503(monkeypatch, http, isolate) -> None:
    """The Analysis Engine's breaker open (or isolated): 503 "unavailable"."""
    container = make_container(monkeypatch)
    async with serve(create_app(container)) as base:
        breaker = container.analysis_engine.breaker()
        breaker.isolate() if isolate else breaker.open()
        status, body = await ready(http, base)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["dependencies"][AE]["status"] == "unavailable"
    remaining = body["dependencies"][AE]["seconds_until_half_open"]
    assert remaining is None if isolate else remaining > 0  # isolated: held open until a reset


@pytest.mark.parametrize(
    ("essential", "opened", "expected"),
    [
        ("analysis_engine,ml_workbench", "ml_workbench", 503),
        ('["ml_workbench"]', "ml_workbench", 503),
        ('["ml_workbench"]', "analysis_engine", 200),
        ("", "analysis_engine", 200),
    ],
    ids=["both-essential", "json-list", "only-workbench-essential", "none-essential"],
)
async def test_which_dependencies_are_essential_is_configuration(
    monkeypatch, http, essential, opened, expected
) -> None:
    """APP_ESSENTIAL_DEPENDENCIES (comma list or JSON list) decides what fails readiness."""
    container = make_container(monkeypatch, essential)
    async with serve(create_app(container)) as base:
        getattr(container, opened).breaker().open()
        status, body = await ready(http, base)
    assert status == expected
    assert body["status"] == ("unavailable" if expected == 503 else "degraded")


async def test_half_open_counts_as_available(monkeypatch, http, clock) -> None:
    """A breaker due for its trial (half-open) no longer fails readiness: the trial may close it."""
    container = make_container(monkeypatch)
    container.analysis_engine.clock.override(clock)
    async with serve(create_app(container)) as base:
        breaker = container.analysis_engine.breaker()
        breaker.open()
        assert (await ready(http, base))[0] == 503
        clock.advance(breaker.open_for)
        status, body = await ready(http, base)
    assert status == 200
    assert body["dependencies"][AE]["breaker"] == "half_open"


async def test_draining_is_503(monkeypatch, http) -> None:
    """After SIGTERM (the lifecycle draining) readiness is 503 "draining", so traffic moves away."""
    container = make_container(monkeypatch)
    async with serve(create_app(container)) as base:
        container.lifecycle().begin_draining()
        status, body = await ready(http, base)
    assert status == 503
    assert body["status"] == "draining"
