"""The Analysis Engine over HTTP: the contract, and 404/422 naming the field."""

from __future__ import annotations

import pytest

from tests.support.asgi import serve
from upstreams.analysis_engine.service import AnalysisEngineSettings, create_app


async def test_prices(http, ae) -> None:
    """Candles, oldest first, ``limit`` of them, the same on every call."""
    async with http.get(f"{ae}/prices/GBPUSD?timeframe=15m&limit=3") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert (body["symbol"], body["timeframe"], len(body["candles"])) == ("GBPUSD", "15m", 3)
    assert set(body["candles"][0]) == {"timestamp", "open", "high", "low", "close", "volume"}
    assert body["candles"][0]["timestamp"] < body["candles"][1]["timestamp"]
    async with http.get(f"{ae}/prices/GBPUSD?timeframe=15m&limit=3") as resp:
        assert await resp.json() == body


async def test_indicators(http, ae) -> None:
    """Each requested indicator comes back with its params, values, timestamps and components."""
    req = {
        "symbol": "eurusd",
        "timeframe": "1h",
        "indicators": [
            {"name": "SMA", "params": {"period": 3}},
            {"name": "MACD"},
            {"name": "bbands"},
        ],
        "limit": 60,
    }
    async with http.post(f"{ae}/indicators/calculate", json=req) as resp:
        body = await resp.json()
    assert resp.status == 200
    sma, macd, bb = body["results"]
    assert sma["params"] == {"period": 3}
    assert sma["values"][:2] == [None, None]
    assert sma["values"][2] is not None
    assert len(sma["values"]) == len(sma["timestamps"]) == 60
    assert macd["params"] == {"fast": 12, "slow": 26, "signal": 9}
    assert set(macd["components"]) == {"macd", "signal", "histogram"}
    assert set(bb["components"]) == {"upper", "middle", "lower"}


async def test_regime(http, ae) -> None:
    """A regime from the four, a confidence in [0, 1] and the metrics it used."""
    async with http.get(f"{ae}/market-regime/USDJPY?timeframe=4h") as resp:
        body = await resp.json()
    assert body["regime"] in {"trending_up", "trending_down", "ranging", "volatile"}
    assert 0 <= body["confidence"] <= 1
    assert {"adx", "plus_di", "minus_di", "atr_pct", "volatility_ratio"} <= set(body["metrics"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [
        ("GET", "/prices/XAUUSD", None, 404, "unknown symbol"),
        ("GET", "/market-regime/BTCUSD", None, 404, "unknown symbol"),
        ("GET", "/prices/EURUSD?timeframe=2h", None, 422, "timeframe"),
        ("GET", "/prices/EURUSD?limit=0", None, 422, "limit"),
        ("GET", "/prices/EURUSD?limit=5001", None, 422, "limit"),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "VWAP"}]},
            422,
            "indicators.0.name",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "SMA", "params": {"period": 0}}]},
            422,
            "indicators.0.params.period",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "RSI", "params": {"period": 9999}}]},
            422,
            "indicators.0.params.period",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "SMA", "params": {"span": 3}}]},
            422,
            "indicators.0.params",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "MACD", "params": {"fast": 30}}]},
            422,
            "fast must be below slow",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": [{"name": "SMA"}], "limit": 0},
            422,
            "limit",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "indicators": []},
            422,
            "indicators",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "EURUSD", "timeframe": "3h", "indicators": [{"name": "SMA"}]},
            422,
            "timeframe",
        ),
        (
            "POST",
            "/indicators/calculate",
            {"symbol": "XXXYYY", "indicators": [{"name": "SMA"}]},
            404,
            "unknown symbol",
        ),
    ],
)
async def test_bad_input(http, ae, method, path, body, status, names) -> None:
    """Unknown symbols are 404; bad parameters are 422 with a reason naming the field."""
    async with http.request(method, ae + path, json=body) as resp:
        payload = await resp.json()
    assert resp.status == status
    assert names in payload["detail"]
    assert payload["code"]


async def test_api_key_is_required_when_configured(http) -> None:
    """With AE_API_KEY set, a call without the key is a 401; health stays open."""
    app = create_app(AnalysisEngineSettings(app_env="test", api_key="ae-key-123456"))
    async with serve(app) as url:
        async with http.get(f"{url}/api/v1/prices/EURUSD") as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "unauthorized"
        async with http.get(f"{url}/api/v1/prices/EURUSD", headers={"X-API-Key": "ae-key-123456"}) as resp:
            assert resp.status == 200
        async with http.get(f"{url}/health") as resp:
            assert resp.status == 200


async def test_expired_deadline_is_not_worked_on(http, ae) -> None:
    """A request whose X-Request-Timeout-Ms is already spent gets a 504, not a computation."""
    async with http.get(f"{ae}/prices/EURUSD", headers={"X-Request-Timeout-Ms": "0"}) as resp:
        assert resp.status == 504
        assert (await resp.json())["code"] == "deadline_exceeded"
