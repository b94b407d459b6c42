"""Typed contracts against a real upstream that counts requests: requests refused before sending, answers checked per mode."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from app.clients import (
    AnalysisEngineClient,
    BaseServiceClient,
    Candle,
    ClientConfig,
    DataValidationError,
    IndicatorSpec,
    InvalidRequestError,
    MLWorkbenchClient,
    ModelInfo,
    PriceSeries,
    RegimeResponse,
    ResponseDecodeError,
)
from app.clients.contracts import Number, Text
from app.clients.fallback import collect_degraded
from app.clients.policies import ClientPolicies
from app.observability.metrics import MetricFamilies
from tests.support.upstream import Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations

PRICES = {
    "symbol": "EURUSD",
    "timeframe": "1h",
    "candles": [
        {
            "timestamp": "2026-01-02T00:00:00Z",
            "open": 1.1,
            "high": 1.2,
            "low": 1.0,
            "close": 1.15,
            "volume": 1200,
        }
    ],
}
REGIME = {
    "symbol": "EURUSD",
    "timeframe": "1h",
    "regime": "ranging",
    "confidence": 0.7,
    "metrics": {"adx": 14},
}
MODEL = {"id": "m1", "name": "Direction", "version": "1", "features": ["rsi_14"], "classes": ["down", "up"]}


class Harness:
    """A typed client with its own metric registry, strict unless told, over the counting upstream."""

    def __init__(
        self, upstream: Upstream, cls: type[BaseServiceClient], transport: str, **config: Any
    ) -> None:
        fields: dict[str, Any] = {
            "base_url": upstream.base_url,
            "transport": transport,
            "service_name": "typed-svc",
            "max_retries": 3,
            "retry_base_delay": 0.001,
            "retry_max_delay": 0.01,
            "retry_jitter": False,
            "circuit_breaker_failure_threshold": 1,  # one counted failure would open it
        }
        cfg = ClientConfig(**{**fields, **config})
        self.registry = CollectorRegistry()
        self.policies = ClientPolicies.from_config(cfg, families=MetricFamilies(self.registry))
        self.client: Any = cls(cfg, policies=self.policies)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.client.observer.stats.snapshot()["counts"]
        return counts

    def invalid_answers(self, method: str, endpoint: str) -> float:
        labels = {"peer_service": "typed-svc", "http_request_method": method, "url_template": endpoint}
        return self.registry.get_sample_value("service_client_invalid_answers_total", labels) or 0.0


@pytest.fixture
async def harness(upstream: Upstream, transport: str):
    made: list[Harness] = []

    def build(cls: type[BaseServiceClient] = AnalysisEngineClient, **config: Any) -> Harness:
        made.append(Harness(upstream, cls, transport, **config))
        return made[-1]

    yield build
    for h in made:
        await h.client.close()


# (method, arguments, the field the error must name)
INVALID: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("get_prices", ("EUR/USD",), {}, "symbol"),
    ("get_prices", ("EURUSD", "2h"), {}, "timeframe"),
    ("get_prices", ("EURUSD", "1h", 0), {}, "limit"),
    ("get_prices", ("EURUSD", "1h", 5001), {}, "limit"),
    ("get_prices", ("EURUSD", "1h", "200"), {}, "limit"),
    ("detect_market_regime", ("", "1h"), {}, "symbol"),
    ("get_technical_indicators", ("EURUSD", "1h", [{"name": "FOO", "params": {}}]), {}, "indicators.0.name"),
    ("get_technical_indicators", ("EURUSD", "1h", [{"name": "SMA", "params": {"period": 501}}]), {}, "indicators.0.params"),
    ("get_technical_indicators", ("EURUSD", "1h", [IndicatorSpec(name="SMA")], 10**6), {}, "limit"),
    ("get_technical_indicators", ("EURUSD", "1h", []), {}, "indicators"),
]  # fmt: skip
INVALID_ML: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("predict", ("m1", "EURUSD", "1h", {"rsi_14": math.nan}), {}, "features.rsi_14"),
    ("predict", ("m1", "EURUSD", "1h", {"rsi_14": math.inf}), {}, "features.rsi_14"),
    ("predict", ("m1", "EURUSD", "1h", {"rsi_14": "0.5"}), {}, "features.rsi_14"),
    ("predict", ("m1", "EURUSD", "1w", {"rsi_14": 0.5}), {}, "timeframe"),
    ("predict", ("", "EURUSD", "1h", {"rsi_14": 0.5}), {}, "model_id"),
    ("get_model", ("",), {}, "model_id"),
]


@pytest.mark.parametrize(
    ("cls", "name", "args", "kwargs", "field"),
    [(AnalysisEngineClient, *case) for case in INVALID] + [(MLWorkbenchClient, *case) for case in INVALID_ML],
    ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(INVALID + INVALID_ML)],
)
async def test_an_invalid_request_is_refused_before_anything_is_sent(
    upstream: Upstream, harness: Callable[..., Harness], cls, name, args, kwargs, field
) -> None:
    """A bad argument is an InvalidRequestError naming the field: nothing sent, no retry, no breaker count, no fallback."""
    upstream.route("*", json({}, status=503))
    h = harness(cls)
    with collect_degraded() as degraded, pytest.raises(InvalidRequestError) as info:
        await getattr(h.client, name)(*args, **kwargs, fallback="never")
    error = info.value
    assert isinstance(error, DataValidationError)
    assert f"{field}:" in str(error)
    assert (error.operation, error.attempts, error.status) == (name, 0, None)
    assert upstream.requests == []
    assert (h.client.breaker.state_name, h.client.breaker.fail_counter) == ("closed", 0)
    assert degraded == []
    assert h.counts()["invalid_request"] == 1
    assert sum(h.counts().values()) == 1


async def test_a_refused_request_is_not_seen_by_outlier_detection(upstream: Upstream, harness) -> None:
    """With several instances, refusals pick no instance: no request, failure or ejection on any of them."""
    second = Upstream()
    await second.server.start_server()
    try:
        h = harness(instances=[upstream.base_url, second.base_url], outlier_consecutive_failures=1)
        for _ in range(5):
            with pytest.raises(InvalidRequestError):
                await h.client.get_prices("EURUSD", "1h", 0)
        rows = h.policies.balancer.status()["instances"]
    finally:
        await second.server.close()
    seen = [(r["requests"], r["failures"], r["ejections"], r["state"]) for r in rows]
    assert seen == [(0, 0, 0, "healthy")] * 2
    assert upstream.requests == second.requests == []


async def test_a_refused_request_leaves_the_next_valid_one_alone(upstream: Upstream, harness) -> None:
    """After refusals, a valid call goes out once and answers the typed model: the refusals changed nothing."""
    upstream.route("prices/EURUSD", json(PRICES))
    h = harness()
    for _ in range(5):
        with pytest.raises(InvalidRequestError):
            await h.client.get_prices("EURUSD", "1h", -1)
    prices = await h.client.get_prices("EURUSD", "1h", 1)
    assert isinstance(prices, PriceSeries)
    assert prices.candles[0] == Candle(**PRICES["candles"][0])
    assert [r.path_qs for r in upstream.requests] == ["/api/v1/prices/EURUSD?timeframe=1h&limit=1"]


async def test_the_typed_request_is_what_goes_on_the_wire(upstream: Upstream, harness) -> None:
    """The request model is sent as JSON: names as the engine takes them, ints kept ints, model_id only in the path."""
    upstream.route("indicators/calculate", json({"symbol": "EURUSD", "timeframe": "1h", "results": []}))
    upstream.route(
        "models/m1/predict",
        json({"model_id": "m1", "symbol": "EURUSD", "prediction": "up", "probability": 0.6}),
    )
    engine = harness()
    await engine.client.get_technical_indicators(
        "EURUSD",
        "4h",
        [{"name": "sma", "params": {"period": 20}}, IndicatorSpec(name="BBANDS", params={"stddev": 2.5})],
        50,
    )
    workbench = harness(MLWorkbenchClient)
    prediction = await workbench.client.predict("m1", "EURUSD", "1h", {"rsi_14": 0.5})
    assert upstream.bodies[0] == (
        b'{"symbol":"EURUSD","timeframe":"4h","indicators":[{"name":"SMA","params":{"period":20}},'
        b'{"name":"BBANDS","params":{"stddev":2.5}}],"limit":50}'
    )
    assert upstream.bodies[1] == b'{"symbol":"EURUSD","timeframe":"1h","features":{"rsi_14":0.5}}'
    assert (prediction.prediction, prediction.probability) == ("up", 0.6)


WRONG = [
    ("missing-field", {k: v for k, v in REGIME.items() if k != "confidence"}, "confidence"),
    ("string-for-number", {**REGIME, "confidence": "0.7"}, "confidence"),
    ("nested-string-for-number", {**REGIME, "metrics": {"adx": "14"}}, "metrics.adx"),
    ("unknown-regime", {**REGIME, "regime": "sideways"}, "regime"),
    ("not-an-object", [REGIME], "body"),
]


@pytest.mark.parametrize(("shape", "body", "field"), WRONG, ids=[w[0] for w in WRONG])
async def test_strict_a_wrong_answer_is_a_decode_error_naming_field_and_endpoint(
    upstream: Upstream, harness, caplog, shape, body, field
) -> None:
    """strict: a wrong-shaped answer is ResponseDecodeError naming the field and the endpoint template; counted as decode_error."""
    upstream.route("market-regime/EURUSD", json(body))
    h = harness(circuit_breaker_failure_threshold=5)
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.detect_market_regime("EURUSD")
    message = str(info.value)
    assert f"{field}:" in message  # a number's union (int or float) is named once, as the field
    assert "market-regime/{symbol}" in message
    assert info.value.endpoint == "market-regime/{symbol}"
    assert "sideways" not in message  # fields named, values never shown
    assert upstream.hits["market-regime/EURUSD"] == 1  # an answer that came is not retried
    assert h.counts()["decode_error"] == 1
    assert h.invalid_answers("GET", "market-regime/{symbol}") == 0


async def test_strict_names_the_prices_template(upstream: Upstream, harness) -> None:
    """A candle with a string for a number: the error says candles.0.close and prices/{symbol}, not the filled-in path."""
    bad = {**PRICES, "candles": [{**PRICES["candles"][0], "close": "1.15"}]}
    upstream.route("prices/EURUSD", json(bad))
    h = harness()
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.get_prices("EURUSD")
    assert "candles.0.close:" in str(info.value)
    assert "prices/{symbol}" in str(info.value)
    assert "prices/EURUSD" not in str(info.value)


async def test_lax_returns_what_came_logs_and_counts(upstream: Upstream, harness, caplog) -> None:
    """lax: the answer comes back unvalidated, a warning names the field, and service_client_invalid_answers_total counts it."""
    upstream.route("market-regime/EURUSD", json({**REGIME, "confidence": "high"}))
    h = harness(response_validation="lax")
    with caplog.at_level(logging.WARNING):
        regime = await h.client.detect_market_regime("EURUSD")
    assert isinstance(regime, RegimeResponse)
    assert (regime.regime, regime.confidence) == ("ranging", "high")  # as sent: nothing was coerced
    assert h.invalid_answers("GET", "market-regime/{symbol}") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "confidence" in r.getMessage()]
    assert len(warnings) == 1
    assert "high" not in warnings[0].getMessage()
    assert h.counts()["success"] == 1


async def test_lax_lets_a_valid_answer_through_checked(upstream: Upstream, harness) -> None:
    """Lax with a valid answer: the checked model, and nothing counted as invalid."""
    upstream.route("market-regime/EURUSD", json(REGIME))
    h = harness(response_validation="lax")
    assert await h.client.detect_market_regime("EURUSD") == RegimeResponse.model_validate(REGIME)
    assert h.invalid_answers("GET", "market-regime/{symbol}") == 0


async def test_off_returns_without_checking(upstream: Upstream, harness, caplog) -> None:
    """off: even a wrong answer comes back as sent, with no warning and no count."""
    upstream.route("market-regime/EURUSD", json({**REGIME, "confidence": "high", "metrics": None}))
    h = harness(response_validation="off")
    with caplog.at_level(logging.WARNING):
        regime = await h.client.detect_market_regime("EURUSD")
    assert (regime.confidence, regime.metrics) == ("high", None)
    assert h.invalid_answers("GET", "market-regime/{symbol}") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_list_models_is_a_list_of_models(upstream: Upstream, harness) -> None:
    """list_models validates a list[ModelInfo]; one bad item is a decode error naming its index."""
    upstream.route("models", json([MODEL, {**MODEL, "id": "m2"}]))
    h = harness(MLWorkbenchClient)
    models = await h.client.list_models()
    assert [type(m) for m in models] == [ModelInfo, ModelInfo]
    assert [m.id for m in models] == ["m1", "m2"]
    upstream.route("models", json([MODEL, {**MODEL, "features": "rsi_14"}]))
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.list_models()
    assert "1.features:" in str(info.value)


async def test_a_fallback_is_returned_as_given(upstream: Upstream, harness) -> None:
    """An unavailable call's fallback is the caller's value, not checked against the answer model."""
    upstream.route("market-regime/EURUSD", json({"detail": "down"}, status=503))
    h = harness(max_retries=0, circuit_breaker_failure_threshold=5)
    assert await h.client.detect_market_regime("EURUSD", fallback={"regime": "unknown"}) == {
        "regime": "unknown"
    }


class Quote(BaseModel):
    """A user's own answer model, built from the framework's field types."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    symbol: Text
    bid: Number
    ask: Number


class QuoteClient(BaseServiceClient):
    """A user's own client of a pricing service: its verbs take ``response_model=``."""

    async def quote(self, symbol: str) -> Quote:
        result: Quote = await self.get(
            "quotes/{symbol}", path_params={"symbol": symbol}, response_model=Quote
        )
        return result

    async def quotes(self) -> list[Quote]:
        result: list[Quote] = await self.get("quotes", response_model=list[Quote])
        return result


async def test_response_model_on_a_users_own_client(upstream: Upstream, harness) -> None:
    """A BaseServiceClient subclass gets typed answers from response_model=, a model or a list of them."""
    upstream.route("quotes/EURUSD", json({"symbol": "EURUSD", "bid": 1.1, "ask": 2, "venue": "x"}))
    upstream.route(
        "quotes",
        json([{"symbol": "EURUSD", "bid": 1.1, "ask": 1.2}, {"symbol": "GBPUSD", "bid": 1, "ask": 1.3}]),
    )
    h = harness(QuoteClient)
    quote = await h.client.quote("EURUSD")
    assert quote == Quote(symbol="EURUSD", bid=1.1, ask=2)
    assert isinstance(quote.ask, int)  # ints stay ints
    assert [q.symbol for q in await h.client.quotes()] == ["EURUSD", "GBPUSD"]
    upstream.route("quotes/EURUSD", json({"symbol": "EURUSD", "bid": "1.1", "ask": 1.2}))
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.quote("EURUSD")
    assert "bid: Input should be a valid number" in str(info.value)  # int-or-float named once, as the field
    assert "bid.int" not in str(info.value)
    assert "quotes/{symbol}" in str(info.value)


async def test_a_user_request_model_is_checked_before_sending(upstream: Upstream, harness) -> None:
    """validate_request on a user's own client: a bad field is an InvalidRequestError, and nothing is sent."""

    class Order(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        symbol: Text
        qty: int

    h = harness(BaseServiceClient)
    with pytest.raises(InvalidRequestError) as info:
        h.client.validate_request(Order, {"symbol": "EURUSD", "qty": "many"}, "POST", "orders")
    assert "qty:" in str(info.value)
    assert upstream.requests == []
    order = h.client.validate_request(Order, {"symbol": "EURUSD", "qty": 3}, "POST", "orders")
    upstream.route("orders", json({"symbol": "EURUSD", "qty": 3}))
    assert await h.client.post("orders", json=order, response_model=Order) == order
    assert upstream.bodies == [b'{"symbol":"EURUSD","qty":3}']


def test_sync_twins_are_typed_too(upstream_sync_url, transport) -> None:
    """The blocking twin validates the same way: a typed answer, and a refused request before anything is sent."""
    url, hits = upstream_sync_url
    with AnalysisEngineClient(
        {"base_url": url, "service_name": "sync-typed", "max_retries": 0, "transport": transport}
    ) as client:
        regime = client.detect_market_regime_sync("EURUSD")
        with pytest.raises(InvalidRequestError):
            client.detect_market_regime_sync("EURUSD", "2h")
    assert regime == RegimeResponse.model_validate(REGIME)
    assert hits == ["/api/v1/market-regime/EURUSD"]


@pytest.fixture
def upstream_sync_url():
    """A regime upstream on its own thread and loop, for the blocking twins."""
    loop = asyncio.new_event_loop()
    hits: list[str] = []

    async def regime(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.json_response(REGIME)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", regime)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/api/v1", hits
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def test_a_huge_wrong_answer_is_refused_at_its_first_bad_item(upstream: Upstream, harness: Any) -> None:
    """300,000 empty candles: refused at the first (lists are bounded and fail fast), not after millions of errors."""
    body = b'{"symbol":"EURUSD","timeframe":"1h","candles":[' + b",".join([b"{}"] * 300_000) + b"]}"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    upstream.route("prices/EURUSD", handler)
    h = harness(max_retries=0)
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.get_prices("EURUSD")
    message = str(info.value)
    assert "candles" in message
    assert len(message) < 1000  # a few problems named, not 1.8 million


@pytest.mark.parametrize("mode", ["lax", "off"])
async def test_an_answer_key_named_like_an_argument_is_no_crash(
    upstream: Upstream, harness: Any, mode: str
) -> None:
    """A "cls" key in an answer let through (lax, off) is ignored, not a TypeError."""
    upstream.route("market-regime/EURUSD", json({**REGIME, "cls": "x", "confidence": "high"}))
    h = harness(response_validation=mode)
    regime = await h.client.detect_market_regime("EURUSD")
    assert regime.regime == "ranging"


async def test_an_int_past_64_bits_becomes_a_float(upstream: Upstream, harness: Any) -> None:
    """A metric past 64 bits is taken as the (finite) float it is, so every JSON encoder of ours can write it back."""
    upstream.route(
        "market-regime/EURUSD", json({**REGIME, "metrics": {"adx": 123456789012345678901234567890}})
    )
    h = harness(max_retries=0)
    regime = await h.client.detect_market_regime("EURUSD")
    assert isinstance(regime.metrics["adx"], float)
    assert regime.metrics["adx"] == pytest.approx(1.2345678901234568e29)


async def test_a_huge_period_is_an_invalid_request(upstream: Upstream, harness: Any) -> None:
    """A period of 10**400 is an InvalidRequestError, not an OverflowError; nothing is sent."""
    h = harness()
    with pytest.raises(InvalidRequestError, match="period"):
        await h.client.get_technical_indicators(
            "EURUSD", "1h", [{"name": "SMA", "params": {"period": 10**400}}]
        )
    assert upstream.hits["indicators/calculate"] == 0


async def test_an_answers_own_keys_are_not_echoed(upstream: Upstream, harness: Any) -> None:
    """A hostile metric name (a token, say) is shown as <key> in the error, never as sent."""
    upstream.route("market-regime/EURUSD", json({**REGIME, "metrics": {"Bearer eyJhbGciOi.hostile": "x"}}))
    h = harness(max_retries=0)
    with pytest.raises(ResponseDecodeError) as info:
        await h.client.detect_market_regime("EURUSD")
    assert "metrics.<key>" in str(info.value)
    assert "eyJhbGciOi" not in str(info.value)
