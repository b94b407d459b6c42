"""POST /api/v1/resilience/{service}/reset|isolate: on in local/test, token-only in production."""

from __future__ import annotations

import time

import pytest

from app.containers import Container
from app.main import create_app
from settings import load_settings
from tests.api.payloads import REGIME
from tests.support.asgi import serve
from tests.support.upstream import json as json_handler

AE, MLW = "analysis-engine-service", "ml-workbench-service"
TOKEN = "adm-7Hq2vR9sLx4mW8pZ"
PROD_KEYS = {
    "APP_ANALYSIS_ENGINE__API_KEY": "k8s-secret-ae-1f2e3d",
    "APP_ML_WORKBENCH__API_KEY": "k8s-secret-ml-4c5b6a",
}


def make_container(monkeypatch, profile: str, **env: str) -> Container:
    monkeypatch.setenv("APP_ENV", profile)
    for name in ("APP_ADMIN_ENABLED", "APP_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**(PROD_KEYS if profile == "production" else {}), **env}.items():
        monkeypatch.setenv(name, value)
    container = Container()
    container.settings.override(load_settings())
    return container


async def post(http, url: str, token: str | None = None) -> tuple[int, dict, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.post(url, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_isolate_then_reset_through_the_gateway(monkeypatch, http, upstream) -> None:
    """Isolate: calls fail fast with 503 and nothing is sent; reset: they go through again."""
    upstream.route("market-regime/EURUSD", json_handler(REGIME))
    container = make_container(monkeypatch, "test", APP_ANALYSIS_ENGINE__BASE_URL=upstream.base_url)
    async with serve(create_app(container)) as base:
        status, body, _ = await post(http, f"{base}/api/v1/resilience/{AE}/isolate")
        assert status == 200
        assert (body["service"], body["action"], body["breaker"]) == (AE, "isolate", "open")
        assert body["seconds_until_half_open"] is None  # held open until a reset
        started = time.monotonic()
        async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
            refused = await resp.json()
            assert resp.status == 503
        assert time.monotonic() - started < 0.5
        assert refused["error"] == "CircuitBreakerOpenError"
        assert upstream.hits["market-regime/EURUSD"] == 0
        async with http.get(f"{base}/api/v1/resilience") as resp:
            assert (await resp.json())["dependencies"][AE]["breaker"]["isolated"] is True

        status, body, _ = await post(http, f"{base}/api/v1/resilience/{AE}/reset")
        assert status == 200
        assert (body["action"], body["breaker"], body["status"]) == ("reset", "closed", "ok")
        async with http.get(f"{base}/api/v1/regime/EURUSD") as resp:
            assert resp.status == 200
    assert upstream.hits["market-regime/EURUSD"] == 1


async def test_reset_closes_a_tripped_breaker_at_once(monkeypatch, http) -> None:
    """A breaker opened by failures is closed by a reset, without waiting for its timeout."""
    container = make_container(monkeypatch, "local")
    async with serve(create_app(container)) as base:
        breaker = container.ml_workbench.breaker()
        breaker.open()
        assert breaker.seconds_until_half_open() > 0
        status, body, _ = await post(http, f"{base}/api/v1/resilience/{MLW}/reset")
    assert status == 200
    assert body["breaker"] == "closed"
    assert breaker.state_name == "closed"


@pytest.mark.parametrize("action", ["reset", "isolate"])
async def test_unknown_service_is_404(monkeypatch, http, action) -> None:
    """A name that is no dependency: 404 listing the known ones; no breaker changes."""
    container = make_container(monkeypatch, "test")
    async with serve(create_app(container)) as base:
        status, body, _ = await post(http, f"{base}/api/v1/resilience/redis/{action}")
    assert status == 404
    assert AE in body["detail"]
    assert container.analysis_engine.breaker().state_name == "closed"


@pytest.mark.parametrize("env", [{}, {"APP_ADMIN_ENABLED": "false"}], ids=["production", "test-disabled"])
async def test_off_means_404_and_absent_from_the_schema(monkeypatch, http, env) -> None:
    """Production without a token (or APP_ADMIN_ENABLED=false): the paths do not exist."""
    container = make_container(monkeypatch, "production" if not env else "test", **env)
    async with serve(create_app(container)) as base:
        for action in ("reset", "isolate"):
            status, _, _ = await post(http, f"{base}/api/v1/resilience/{AE}/{action}", TOKEN)
            assert status == 404
        async with http.get(f"{base}/openapi.json") as resp:
            paths = (await resp.json())["paths"]
    assert not any(path.endswith(("/reset", "/isolate")) for path in paths)
    assert container.analysis_engine.breaker().state_name == "closed"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
    ],
    ids=["missing", "wrong", "longer", "shorter", "basic", "no-scheme", "empty"],
)
async def test_production_with_a_token_requires_it(monkeypatch, http, authorization) -> None:
    """Anything but the exact bearer token: 401 with WWW-Authenticate, and no breaker changes."""
    container = make_container(monkeypatch, "production", APP_ADMIN_TOKEN=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    async with (
        serve(create_app(container)) as base,
        http.post(f"{base}/api/v1/resilience/{AE}/isolate", headers=headers) as resp,
    ):
        body = await resp.json()
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in str(body)
    assert container.analysis_engine.breaker().state_name == "closed"


async def test_production_with_the_right_token_acts(monkeypatch, http) -> None:
    """The configured token as a bearer token: the action runs."""
    container = make_container(monkeypatch, "production", APP_ADMIN_TOKEN=TOKEN)
    async with serve(create_app(container)) as base:
        status, body, _ = await post(http, f"{base}/api/v1/resilience/{AE}/isolate", TOKEN)
    assert status == 200
    assert body["breaker"] == "open"
    assert container.analysis_engine.breaker().isolated


async def test_a_token_is_required_in_local_too_once_configured(monkeypatch, http) -> None:
    """A configured token protects the endpoints in every profile, not only production."""
    container = make_container(monkeypatch, "local", APP_ADMIN_TOKEN=TOKEN)
    async with serve(create_app(container)) as base:
        assert (await post(http, f"{base}/api/v1/resilience/{AE}/reset"))[0] == 401
        assert (await post(http, f"{base}/api/v1/resilience/{AE}/reset", TOKEN))[0] == 200
