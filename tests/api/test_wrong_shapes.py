"""Valid JSON of the wrong shape from a real upstream: the gateway's 502, never a 500, on every route."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from app.containers import Container
from app.main import create_app
from settings import load_settings
from tests.api.payloads import INDICATORS, PREDICTION, REGIME
from tests.support.asgi import serve

INDICATORS_PATH = "indicators/calculate"
REGIME_PATH = "market-regime/EURUSD"
PREDICT_PATH = "models/direction-logreg-v1/predict"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw(body: str, content_type: str = "application/json") -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body.encode(), headers={"Content-Type": content_type})

    return handler


def answer(data: Any) -> Callable[[web.Request], Any]:
    return raw(orjson.dumps(data).decode())


def changed(good: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``good`` with the item at ``path`` set to ``value`` (or removed: ``DROP``)."""
    out = copy.deepcopy(good)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


DROP = object()


def generic(good: dict[str, Any]) -> list[tuple[str, Callable[[web.Request], Any], str]]:
    """Wrong shapes any JSON object answer can take: (id, handler, the error the gateway names)."""
    return [
        ("list-instead-of-object", answer([good]), "ResponseDecodeError"),
        ("null", raw("null"), "ResponseDecodeError"),
        ("string", answer("ok"), "ResponseDecodeError"),
        ("number", raw("42"), "ResponseDecodeError"),
        ("boolean", raw("true"), "ResponseDecodeError"),
        ("empty-object", answer({}), "ResponseDecodeError"),
        ("empty-body", raw(""), "ResponseDecodeError"),
        ("plain-text", raw("all good", "text/plain"), "ResponseDecodeError"),
        ("deep-nesting-in-a-field", raw(orjson.dumps(good).decode()[:-1] + ', "symbol": ' + nested(900) + "}"),
         "ResponseDecodeError"),
        ("nesting-past-any-decoder", raw(nested(100_000)), "ResponseDecodeError"),
    ]  # fmt: skip


def specific(
    good: dict[str, Any], cases: dict[str, tuple[tuple[Any, ...], Any]]
) -> list[tuple[str, Any, str]]:
    return [
        (name, answer(changed(good, path, value)), "ResponseDecodeError")
        for name, (path, value) in cases.items()
    ]


INDICATORS_SHAPES = generic(INDICATORS) + specific(
    INDICATORS,
    {
        "missing-results": (("results",), DROP),
        "results-an-object": (("results",), {"SMA": [1.0]}),
        "results-null": (("results",), None),
        "values-a-string": (("results", 0, "values"), "1.1,1.2"),
        "value-a-string-number": (("results", 0, "values", 1), "1.1"),
        "value-a-boolean": (("results", 0, "values", 1), True),
        "value-a-list": (("results", 0, "values", 1), [1.1]),
        "param-a-string-number": (("results", 0, "params", "period"), "20"),
        "timestamp-a-number": (("results", 0, "timestamps", 0), 1700000000),
        "name-missing": (("results", 0, "name"), DROP),
        "component-line-null": (("results", 4, "components", "histogram"), None),
        "symbol-a-number": (("symbol",), 1),
    },
)
REGIME_SHAPES = generic(REGIME) + specific(
    REGIME,
    {
        "missing-regime": (("regime",), DROP),
        "missing-confidence": (("confidence",), DROP),
        "confidence-a-string-number": (("confidence",), "0.7"),
        "confidence-a-boolean": (("confidence",), True),
        "confidence-out-of-range": (("confidence",), 7),
        "confidence-null": (("confidence",), None),
        "metrics-a-list": (("metrics",), [1, 2]),
        "metric-a-string-number": (("metrics", "adx"), "14.2"),
        "regime-an-object": (("regime",), {"name": "ranging"}),
    },
)
#: Well-formed for the engine's own routes, but without what a signal is computed from.
SIGNAL_ONLY_SHAPES = specific(
    INDICATORS,
    {
        "atr-missing": (
            ("results", 3),
            {"name": "EMA", "params": {"period": 14}, "values": [1.0], "timestamps": ["b"]},
        ),
        "bbands-without-components": (("results", 5, "components"), DROP),
        "macd-without-histogram": (("results", 4, "components", "histogram"), DROP),
        "rsi-all-warm-up": (("results", 2, "values"), [None, None]),
        "features-overflow": (("results", 3, "values"), [None, 1e-310]),
    },
)
PREDICTION_SHAPES = generic(PREDICTION) + specific(
    PREDICTION,
    {
        "missing-probability": (("probability",), DROP),
        "probability-a-string-number": (("probability",), "0.8"),
        "probability-out-of-range": (("probability",), 1.5),
        "prediction-unknown-class": (("prediction",), "sideways"),
        "prediction-null": (("prediction",), None),
    },
)


def ids(shapes: list[tuple[str, Any, str]]) -> list[str]:
    return [shape[0] for shape in shapes]


@pytest.fixture
def gateway(monkeypatch, upstream) -> Container:
    """The test profile's container, both upstreams served by the scripted real upstream."""
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__BASE_URL", upstream.base_url)
    monkeypatch.setenv("APP_ML_WORKBENCH__BASE_URL", upstream.base_url)
    container = Container()
    container.settings.override(load_settings())
    return container


async def get(http, url: str) -> tuple[int, str, bytes]:
    async with http.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


def assert_bad_gateway(status: int, content_type: str, body: bytes, error: str, caplog) -> None:
    assert status == 502, body
    assert content_type == "application/json"
    parsed = orjson.loads(body)
    assert parsed["error"] == error
    assert parsed["service"] == "analysis-engine-service"
    assert (parsed["code"], parsed["endpoint"]) in {
        ("bad_gateway", INDICATORS_PATH),
        ("bad_gateway", "market-regime/{symbol}"),
    }
    assert "Traceback" not in body.decode()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("shape", "handler", "error"), INDICATORS_SHAPES, ids=ids(INDICATORS_SHAPES))
async def test_indicators_route(gateway, upstream, http, caplog, shape, handler, error) -> None:
    """/indicators: a wrong-shaped Analysis Engine answer is a 502 naming the service, not a 500."""
    upstream.route(INDICATORS_PATH, handler)
    async with serve(create_app(gateway)) as base:
        got = await get(http, f"{base}/api/v1/indicators/EURUSD?indicators=SMA:20")
    assert_bad_gateway(*got, error, caplog)


@pytest.mark.parametrize(("shape", "handler", "error"), REGIME_SHAPES, ids=ids(REGIME_SHAPES))
async def test_regime_route(gateway, upstream, http, caplog, shape, handler, error) -> None:
    """/regime: a wrong-shaped Analysis Engine answer is a 502 naming the service, not a 500."""
    upstream.route(REGIME_PATH, handler)
    async with serve(create_app(gateway)) as base:
        got = await get(http, f"{base}/api/v1/regime/EURUSD")
    assert_bad_gateway(*got, error, caplog)


@pytest.mark.parametrize(
    ("part", "shape", "handler", "error"),
    [("indicators", *s) for s in INDICATORS_SHAPES + SIGNAL_ONLY_SHAPES]
    + [("regime", *s) for s in REGIME_SHAPES],
    ids=[f"indicators-{i}" for i in ids(INDICATORS_SHAPES + SIGNAL_ONLY_SHAPES)]
    + [f"regime-{i}" for i in ids(REGIME_SHAPES)],
)
async def test_signals_route_with_a_bad_engine_answer(
    gateway, upstream, http, caplog, part, shape, handler, error
) -> None:
    """/signals: either Analysis Engine answer wrong-shaped is a 502; the model is never asked."""
    upstream.route(INDICATORS_PATH, handler if part == "indicators" else answer(INDICATORS))
    upstream.route(REGIME_PATH, handler if part == "regime" else answer(REGIME))
    upstream.route(PREDICT_PATH, answer(PREDICTION))
    async with serve(create_app(gateway)) as base:
        got = await get(http, f"{base}/api/v1/signals/EURUSD")
    assert_bad_gateway(*got, error, caplog)
    assert upstream.hits[PREDICT_PATH] == 0


@pytest.mark.parametrize(("shape", "handler", "error"), PREDICTION_SHAPES, ids=ids(PREDICTION_SHAPES))
async def test_signals_route_with_a_bad_prediction_degrades(
    gateway, upstream, http, caplog, shape, handler, error
) -> None:
    """/signals: a wrong-shaped prediction is a failed model: 200, prediction null, the workbench degraded."""
    upstream.route(INDICATORS_PATH, answer(INDICATORS))
    upstream.route(REGIME_PATH, answer(REGIME))
    upstream.route(PREDICT_PATH, handler)
    async with serve(create_app(gateway)) as base:
        status, _, body = await get(http, f"{base}/api/v1/signals/EURUSD")
    assert status == 200
    signal = orjson.loads(body)
    assert (signal["prediction"], signal["action"]) == (None, None)
    assert signal["degraded"] == ["ml-workbench-service"]
    assert signal["regime"] == REGIME
    warnings = [r for r in caplog.records if r.name == "app.api.signals" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert error in warnings[0].getMessage() or error in str(warnings[0].__dict__.get("fields"))
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_the_well_formed_answers_pass_unchanged(gateway, upstream, http) -> None:
    """The control: the same upstream with well-formed answers gives 200 and the answers as sent."""
    upstream.route(INDICATORS_PATH, answer(INDICATORS))
    upstream.route(REGIME_PATH, answer({**REGIME, "extra": {"ignored": [1, 2]}}))
    upstream.route(PREDICT_PATH, answer(PREDICTION))
    async with serve(create_app(gateway)) as base:
        indicators = await get(http, f"{base}/api/v1/indicators/EURUSD")
        regime = await get(http, f"{base}/api/v1/regime/EURUSD")
        signal = await get(http, f"{base}/api/v1/signals/EURUSD")
    assert (indicators[0], regime[0], signal[0]) == (200, 200, 200)
    assert orjson.loads(indicators[2]) == INDICATORS
    assert orjson.loads(regime[2]) == REGIME  # unknown keys are not passed on unchecked
    assert orjson.loads(signal[2])["prediction"] == PREDICTION
