"""Gateway routes with the clients swapped through DI overrides (fakes are for this layer only)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from dependency_injector import providers

from app.api.schemas import ErrorBody
from app.clients import (
    AnalysisEngineClient,
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientAuthenticationError,
    ClientConfig,
    ClientConnectionError,
    ClientTimeoutError,
    ClientValidationError,
    InvalidRequestError,
    MLWorkbenchClient,
    ResourceNotFoundError,
    ResponseDecodeError,
    ServerError,
)
from app.clients.fallback import NO_FALLBACK
from app.errors import retry_exhausted
from app.main import create_app
from tests.api.payloads import INDICATORS, REGIME
from tests.support.asgi import serve
from tests.support.manual_clock import ManualClock
from tests.support.rawtcp import closed_port_url
from tests.support.upstream import delayed
from tests.support.upstream import json as json_handler


class FakeAnalysis:
    """Stands in for AnalysisEngineClient; records calls, or raises ``error``."""

    service_name = "analysis-engine-service"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def get_technical_indicators(self, *args: Any, cache: bool | None = None) -> dict[str, Any]:
        self.calls.append(("indicators", args))
        if self.error:
            raise self.error
        return INDICATORS

    async def detect_market_regime(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("regime", args))
        if self.error:
            raise self.error
        return REGIME


class FakeWorkbench:
    """Stands in for MLWorkbenchClient on the happy path; records what it was asked."""

    service_name = "ml-workbench-service"

    def __init__(self) -> None:
        self.features: dict[str, float] | None = None
        self.fallback: Any = "unset"

    async def predict(
        self, model_id: str, symbol: str, timeframe: str, features: dict[str, float], *, fallback: Any
    ) -> dict[str, Any]:
        self.features = features
        self.fallback = fallback
        return {"model_id": model_id, "symbol": symbol, "prediction": "up", "probability": 0.8}


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(), resp


async def test_override_changes_what_indicators_returns(container, http) -> None:
    """container.analysis_engine.client.override(fake) changes the route's answer."""
    fake = FakeAnalysis()
    container.analysis_engine.client.override(providers.Object(fake))
    async with serve(create_app(container)) as base:
        status, body, _ = await get(
            http,
            f"{base}/api/v1/indicators/eurusd?timeframe=4h&indicators=SMA:20,MACD,BBANDS:20:2.5",
        )
    assert status == 200
    assert body == INDICATORS
    ((kind, args),) = fake.calls
    assert kind == "indicators"
    assert args[0] == "EURUSD"
    assert args[1] == "4h"
    assert [spec.model_dump() for spec in args[2]] == [
        {"name": "SMA", "params": {"period": 20}},
        {"name": "MACD", "params": {"fast": 12, "slow": 26, "signal": 9}},
        {"name": "BBANDS", "params": {"period": 20, "stddev": 2.5}},
    ]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/v1/indicators/EURUSD?indicators=FOO:3", "unknown indicator"),
        ("/api/v1/indicators/EURUSD?indicators=SMA:-3", "whole number from 1 to 500"),
        ("/api/v1/indicators/EURUSD?indicators=SMA:x", "number"),
        ("/api/v1/indicators/EURUSD?indicators=SMA:1:2", "at most 1"),
        ("/api/v1/indicators/EURUSD?timeframe=2h", "timeframe"),
        ("/api/v1/indicators/EURUSD?limit=0", "limit"),
        ("/api/v1/indicators/EUR-USD", "symbol"),
        ("/api/v1/regime/EURUSD?timeframe=1w", "timeframe"),
    ],
)
async def test_bad_requests_get_422_with_the_reason(container, http, path, reason) -> None:
    """The caller's bad input is a 422 whose detail names the problem; nothing goes upstream."""
    fake = FakeAnalysis()
    container.analysis_engine.client.override(providers.Object(fake))
    async with serve(create_app(container)) as base:
        status, body, _ = await get(http, base + path)
    assert status == 422
    assert reason in str(body["detail"])
    assert fake.calls == []


ERRORS = [
    (ClientTimeoutError("timed out"), 504, None),
    (retry_exhausted(ClientTimeoutError("timed out", attempts=3)), 504, None),
    (CircuitBreakerOpenError("open", retry_after=12.2), 503, "13"),
    (BulkheadFullError("full"), 503, None),
    (ServerError("HTTP 503", status=503, retry_after=4), 503, "4"),
    (ClientConnectionError("refused"), 503, None),
    (ResourceNotFoundError("nope", status=404), 404, None),
    (ClientValidationError("bad", status=422, detail="period out of range"), 422, None),
    (ClientAuthenticationError("denied", status=401), 502, None),
    (ResponseDecodeError("garbage", status=200), 502, None),
]


@pytest.mark.parametrize(("error", "status", "retry_after"), ERRORS, ids=lambda e: type(e).__name__)
async def test_upstream_errors_map_to_gateway_statuses(container, http, error, status, retry_after) -> None:
    """Timeout 504; open, full or unavailable 503 (+Retry-After); 404; 422; credentials 502."""
    container.analysis_engine.client.override(providers.Object(FakeAnalysis(error)))
    async with serve(create_app(container)) as base:
        got, body, resp = await get(http, f"{base}/api/v1/regime/EURUSD")
    assert got == status
    assert resp.headers.get("Retry-After") == retry_after
    assert body["error"] == type(error).__name__
    if status == 422:
        assert body["detail"] == "period out of range"


async def test_signals_combine_indicators_regime_and_prediction(container, http) -> None:
    """A signal carries indicators, regime, the features sent and the prediction."""
    workbench = FakeWorkbench()
    container.analysis_engine.client.override(providers.Object(FakeAnalysis()))
    container.ml_workbench.client.override(providers.Object(workbench))
    async with serve(create_app(container)) as base:
        status, body, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
    assert status == 200
    assert body["degraded"] == []
    assert body["prediction"]["prediction"] == "up"
    assert body["action"] == "buy"
    assert body["regime"]["regime"] == "ranging"
    assert workbench.features == pytest.approx(
        {"rsi_14": 0.6, "macd_hist_atr": 0.1, "sma_trend_atr": 10.0, "bb_width": 0.2 / 1.1}
    )
    assert body["indicators"]["MACD_12_26_9"]["histogram"] == 0.001
    assert workbench.fallback is not NO_FALLBACK  # the route degrades through the client's fallback


@pytest.mark.parametrize("fault", ["down", "slow", "breaker_open", "refused"])
async def test_signals_degrade_when_the_workbench_fails(container, http, upstream, fault) -> None:
    """ML Workbench down, slow, breaker-open or unreachable: 200, prediction null, degraded named.

    The workbench here is a real MLWorkbenchClient against a real failing server; only
    the Analysis Engine is a fake.
    """
    if fault == "down":
        upstream.route("*", json_handler({"detail": "boom"}, status=500))
    elif fault == "slow":
        upstream.route("*", delayed(5, json_handler({})))
    url = closed_port_url() if fault == "refused" else upstream.base_url
    client = MLWorkbenchClient(
        ClientConfig(base_url=url, service_name="ml-workbench-service", timeout_seconds=0.2, max_retries=1,
                     retry_base_delay=0.01, retry_max_delay=0.01)
    )  # fmt: skip
    if fault == "breaker_open":
        client.breaker.isolate()
    container.analysis_engine.client.override(providers.Object(FakeAnalysis()))
    container.ml_workbench.client.override(providers.Object(client))
    try:
        async with serve(create_app(container)) as base:
            status, body, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
    finally:
        await client.close()
    assert status == 200
    assert body["prediction"] is None
    assert body["action"] is None
    assert body["degraded"] == ["ml-workbench-service"]
    assert body["regime"] == REGIME
    assert client.observer.stats.snapshot()["counts"]["fallback"] == 1


async def test_signals_fail_when_the_analysis_engine_fails(container, http) -> None:
    """Without the Analysis Engine there is no signal: the mapped status, with Retry-After."""
    container.analysis_engine.client.override(
        providers.Object(FakeAnalysis(CircuitBreakerOpenError("open", retry_after=3)))
    )
    container.ml_workbench.client.override(providers.Object(FakeWorkbench()))
    async with serve(create_app(container)) as base:
        status, _, resp = await get(http, f"{base}/api/v1/signals/EURUSD")
    assert status == 503
    assert resp.headers["Retry-After"] == "3"


async def test_request_id_is_echoed_and_generated(container, http) -> None:
    """A well-formed inbound X-Request-ID is echoed; a missing or hostile one is replaced."""
    async with serve(create_app(container)) as base:
        async with http.get(f"{base}/health", headers={"X-Request-ID": "abc-123"}) as resp:
            assert resp.headers["X-Request-ID"] == "abc-123"
        async with http.get(f"{base}/health", headers={"X-Request-ID": "bad id\u00e9"}) as resp:
            assert len(resp.headers["X-Request-ID"]) == 32


async def test_signals_alone_can_close_a_half_open_breaker(container, http, upstream, clock) -> None:
    """A half-open breaker's one trial is not cancelled by its refused sibling call.

    Signals make two concurrent Analysis Engine calls; in half-open one is the trial and
    the other is refused. The trial must still finish, so signal traffic alone closes
    the breaker instead of wasting the trial on every request.
    """
    upstream.route("*", json_handler({}, status=500))
    client = AnalysisEngineClient(
        ClientConfig(base_url=upstream.base_url, service_name="analysis-engine-service", max_retries=0,
                     circuit_breaker_failure_threshold=2, circuit_breaker_reset_timeout_seconds=5),
        clock=clock,
    )  # fmt: skip
    for _ in range(2):
        with pytest.raises(ServerError):
            await client.detect_market_regime("EURUSD")
    assert client.breaker.state_name == "open"
    clock.advance(5)
    upstream.route("indicators/calculate", json_handler(INDICATORS))
    upstream.route("market-regime/EURUSD", json_handler(REGIME))
    container.analysis_engine.client.override(providers.Object(client))
    container.ml_workbench.client.override(providers.Object(FakeWorkbench()))
    try:
        async with serve(create_app(container)) as base:
            first, _, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
            second, body, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
    finally:
        await client.close()
    assert first == 503  # the refused sibling
    assert client.breaker.state_name == "closed"  # the trial finished and closed it
    assert second == 200
    assert body["regime"] == REGIME


@pytest.mark.parametrize(
    ("path", "error", "code"),
    [
        ("/api/v1/regime/EURUSD?timeframe=2h", None, "validation_error"),
        ("/api/v1/indicators/EURUSD?indicators=MACD:30:20", None, "validation_error"),
        (
            "/api/v1/regime/EURUSD",
            InvalidRequestError("request does not match RegimeQuery: symbol: bad", attempts=0),
            "invalid_request",
        ),
        (
            "/api/v1/regime/EURUSD",
            ClientValidationError("HTTP 422", status=422, detail="timeframe: bad", code="validation_error"),
            "validation_error",
        ),
    ],
    ids=["fastapi-query", "gateway-parser", "client-refused", "upstream-refused"],
)
async def test_every_422_has_the_one_error_shape(container, http, path, error, code) -> None:
    """FastAPI's 422, the route's own, a client's InvalidRequestError and an upstream's 422 are all an ErrorBody."""
    container.analysis_engine.client.override(providers.Object(FakeAnalysis(error)))
    async with serve(create_app(container)) as base:
        status, body, _ = await get(http, base + path)
    assert status == 422
    answer = ErrorBody.model_validate(body)
    assert answer.code == code
    assert answer.detail
    if error is None:  # the gateway's own check names the field, and never echoes the value as `input`
        assert answer.errors is not None
        assert answer.errors[0].loc[0] == "query"
        assert all(set(problem) == {"loc", "msg", "type"} for problem in body["errors"])
    else:
        assert answer.error == type(error).__name__


async def test_unknown_paths_and_methods_answer_in_the_error_shape(container, http) -> None:
    """A 404 for an unknown path and a 405 (with Allow) for a wrong method are ErrorBody answers too."""
    async with serve(create_app(container)) as base:
        status, body, _ = await get(http, f"{base}/api/v1/nothing-here")
        async with http.post(f"{base}/api/v1/regime/EURUSD") as resp:
            not_allowed, allowed, wrong = resp.status, resp.headers.get("Allow"), await resp.json()
    assert (status, ErrorBody.model_validate(body).code) == (404, "not_found")
    assert (not_allowed, allowed, ErrorBody.model_validate(wrong).code) == (405, "GET", "method_not_allowed")


class StaleHarness:
    """A real AnalysisEngineClient with its response cache on, over a scripted upstream that can go down."""

    def __init__(self, upstream) -> None:
        self.down = False
        self.clock = ManualClock()
        cacheable = {"Cache-Control": "max-age=10, stale-if-error=300"}
        for path, payload in (("indicators/calculate", INDICATORS), ("market-regime/EURUSD", REGIME)):
            upstream.route(path, self._answer(payload, cacheable))
        self.client = AnalysisEngineClient(
            ClientConfig(base_url=upstream.base_url, service_name="analysis-engine-service", max_retries=0,
                         cache_enabled=True),
            clock=self.clock,
        )  # fmt: skip

    def _answer(self, payload: dict[str, Any], headers: dict[str, str]) -> Any:
        async def handler(request: Any) -> Any:
            if self.down:
                return await json_handler({"detail": "down"}, status=503)(request)
            return await json_handler(payload, headers=headers)(request)

        return handler


async def test_signals_name_the_analysis_engine_when_its_answers_are_stale(container, http, upstream) -> None:
    """With the engine down, answers its cache may serve stale (stale-if-error) make a signal, and `degraded` says so."""
    harness = StaleHarness(upstream)
    container.analysis_engine.client.override(providers.Object(harness.client))
    container.ml_workbench.client.override(providers.Object(FakeWorkbench()))
    try:
        async with serve(create_app(container)) as base:
            fresh_status, fresh, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
            harness.down = True
            await harness.clock.advance(20)  # past max-age, within stale-if-error
            stale_status, stale, _ = await get(http, f"{base}/api/v1/signals/EURUSD")
    finally:
        await harness.client.close()
    assert (fresh_status, fresh["degraded"]) == (200, [])
    assert (stale_status, stale["degraded"]) == (200, ["analysis-engine-service"])
    assert stale["regime"] == fresh["regime"] == REGIME
    assert stale["prediction"] == fresh["prediction"]
    assert upstream.hits["indicators/calculate"] == 2  # the POST was cached, then tried once more


async def test_a_lax_client_s_wrong_answer_is_still_a_502(container, http, upstream) -> None:
    """A client in lax mode hands over a wrong-shaped answer; the gateway checks it against its contract: 502, not 500."""
    upstream.route("market-regime/EURUSD", json_handler({**REGIME, "confidence": "high"}))
    client = AnalysisEngineClient(
        ClientConfig(
            base_url=upstream.base_url, service_name="analysis-engine-service", response_validation="lax"
        )
    )
    container.analysis_engine.client.override(providers.Object(client))
    try:
        async with serve(create_app(container)) as base:
            status, body, _ = await get(http, f"{base}/api/v1/regime/EURUSD")
    finally:
        await client.close()
    assert status == 502
    assert (body["error"], body["code"], body["endpoint"]) == (
        "ResponseDecodeError",
        "bad_gateway",
        "market-regime/{symbol}",
    )
    assert "confidence" in body["detail"]
