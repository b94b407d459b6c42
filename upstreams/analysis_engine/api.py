"""The Analysis Engine's routes (DESIGN §6)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from upstreams.analysis_engine.indicators import INDICATORS, compute
from upstreams.analysis_engine.prices import MAX_CANDLES, PAIRS, Candles, candles
from upstreams.analysis_engine.regime import detect_regime
from upstreams.common.deadline import ensure_time_left
from upstreams.common.errors import UpstreamError
from upstreams.common.http_cache import Freshness, cached_json

__all__ = ["router"]

router = APIRouter(tags=["analysis"])

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Limit = Annotated[int, Field(ge=1, le=MAX_CANDLES)]
MAX_PERIOD = 500
REGIME_WINDOW = 300

#: How long a cache may reuse a series (and the regime read from it), per timeframe.
#: The data stands for a live market: the newest candle moves until it closes, and a new
#: one opens every period. A cache may therefore show a series at most about 1/12 of a
#: candle late (5 s on 1m), capped at 5 minutes (a chart of daily candles a few minutes
#: behind is fine, an hour behind is not); the same again while one background
#: revalidation runs; and, while the engine fails, up to one candle period late (at most a
#: day), so an outage costs a chart its last candle, not the whole chart (the gateway
#: marks such a stale answer degraded). Every timeframe has an entry (a test checks it).
FRESHNESS: dict[str, Freshness] = {
    "1m": Freshness(max_age=5, stale_while_revalidate=5, stale_if_error=60),
    "5m": Freshness(max_age=25, stale_while_revalidate=25, stale_if_error=300),
    "15m": Freshness(max_age=75, stale_while_revalidate=75, stale_if_error=900),
    "1h": Freshness(max_age=300, stale_while_revalidate=300, stale_if_error=3600),
    "4h": Freshness(max_age=300, stale_while_revalidate=300, stale_if_error=14_400),
    "1d": Freshness(max_age=300, stale_while_revalidate=300, stale_if_error=86_400),
}


class IndicatorSpec(BaseModel):
    """One indicator to compute."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, float] = {}


class IndicatorsRequest(BaseModel):
    """``POST /indicators/calculate`` body."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    timeframe: Timeframe = "1h"
    indicators: Annotated[list[IndicatorSpec], Field(min_length=1, max_length=20)]
    limit: Limit = 200


def _series(symbol: str, timeframe: str, limit: int) -> Candles:
    ensure_time_left()
    key = symbol.upper()
    if key not in PAIRS:
        raise UpstreamError(404, f"unknown symbol {symbol!r}; known: {', '.join(PAIRS)}", "unknown_symbol")
    return candles(key, timeframe).tail(limit)


def _validated_params(index: int, spec: IndicatorSpec) -> tuple[str, dict[str, float]]:
    where = f"indicators.{index}"
    name = spec.name.upper()
    if name not in INDICATORS:
        raise UpstreamError(
            422,
            f"{where}.name: unknown indicator {spec.name!r}; known: {', '.join(INDICATORS)}",
            "validation_error",
        )
    defaults = INDICATORS[name][0]
    unknown = set(spec.params) - set(defaults)
    if unknown:
        raise UpstreamError(
            422,
            f"{where}.params: unknown parameters {sorted(unknown)} for {name}",
            "validation_error",
        )
    params = {**defaults, **spec.params}
    for key, value in params.items():
        if key == "stddev":
            if not 0 < value <= 10:
                raise UpstreamError(422, f"{where}.params.stddev: must be in (0, 10]", "validation_error")
        elif not (float(value).is_integer() and 1 <= value <= MAX_PERIOD):
            raise UpstreamError(
                422,
                f"{where}.params.{key}: must be a whole number from 1 to {MAX_PERIOD}",
                "validation_error",
            )
        else:
            params[key] = int(value)
    if name == "MACD" and params["fast"] >= params["slow"]:
        raise UpstreamError(422, f"{where}.params: fast must be below slow", "validation_error")
    return name, params


@router.get("/prices/{symbol}")
async def get_prices(
    request: Request,
    symbol: Annotated[str, Path(max_length=12)],
    timeframe: Annotated[Timeframe, Query()] = "1h",
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES)] = 200,
) -> Response:
    """OHLC candles, oldest first; cacheable for the timeframe's FRESHNESS, 304 on a matching ETag."""
    c = _series(symbol, timeframe, limit)
    rows = zip(c.timestamps, c.open, c.high, c.low, c.close, c.volume, strict=True)
    content = {
        "symbol": symbol.upper(),
        "timeframe": timeframe,
        "candles": [
            {"timestamp": t, "open": o, "high": h, "low": lo, "close": cl, "volume": v}
            for t, o, h, lo, cl, v in rows
        ],
    }
    return cached_json(request, content, FRESHNESS[timeframe])


@router.post("/indicators/calculate")
async def calculate(body: IndicatorsRequest) -> dict[str, Any]:
    """Indicators over the last ``limit`` candles; a pure computation, safe to retry."""
    specs = [_validated_params(i, spec) for i, spec in enumerate(body.indicators)]
    c = _series(body.symbol, body.timeframe, body.limit)
    results = []
    for name, params in specs:
        ensure_time_left()
        values, components = compute(name, c, params)
        result: dict[str, Any] = {
            "name": name,
            "params": params,
            "values": values,
            "timestamps": list(c.timestamps),
        }
        if components is not None:
            result["components"] = components
        results.append(result)
    return {"symbol": body.symbol.upper(), "timeframe": body.timeframe, "results": results}


@router.get("/market-regime/{symbol}")
async def market_regime(
    request: Request,
    symbol: Annotated[str, Path(max_length=12)],
    timeframe: Annotated[Timeframe, Query()] = "1h",
) -> Response:
    """The current regime from ADX and relative volatility; cached like the series it reads."""
    regime, confidence, metrics = detect_regime(_series(symbol, timeframe, REGIME_WINDOW))
    content = {
        "symbol": symbol.upper(),
        "timeframe": timeframe,
        "regime": regime,
        "confidence": confidence,
        "metrics": metrics,
    }
    return cached_json(request, content, FRESHNESS[timeframe])
