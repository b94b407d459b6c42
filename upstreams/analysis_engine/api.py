"""The Analysis Engine's routes (DESIGN §6)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from upstreams.analysis_engine.indicators import INDICATORS, compute
from upstreams.analysis_engine.prices import MAX_CANDLES, PAIRS, Candles, candles
from upstreams.analysis_engine.regime import detect_regime
from upstreams.common.deadline import ensure_time_left
from upstreams.common.errors import UpstreamError

__all__ = ["router"]

router = APIRouter(tags=["analysis"])

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Limit = Annotated[int, Field(ge=1, le=MAX_CANDLES)]
MAX_PERIOD = 500
REGIME_WINDOW = 300


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
    symbol: Annotated[str, Path(max_length=12)],
    timeframe: Annotated[Timeframe, Query()] = "1h",
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES)] = 200,
) -> dict[str, Any]:
    """OHLC candles, oldest first."""
    c = _series(symbol, timeframe, limit)
    rows = zip(c.timestamps, c.open, c.high, c.low, c.close, c.volume, strict=True)
    return {
        "symbol": symbol.upper(),
        "timeframe": timeframe,
        "candles": [
            {"timestamp": t, "open": o, "high": h, "low": lo, "close": cl, "volume": v}
            for t, o, h, lo, cl, v in rows
        ],
    }


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
    symbol: Annotated[str, Path(max_length=12)],
    timeframe: Annotated[Timeframe, Query()] = "1h",
) -> dict[str, Any]:
    """The current regime from ADX and relative volatility."""
    regime, confidence, metrics = detect_regime(_series(symbol, timeframe, REGIME_WINDOW))
    return {
        "symbol": symbol.upper(),
        "timeframe": timeframe,
        "regime": regime,
        "confidence": confidence,
        "metrics": metrics,
    }
