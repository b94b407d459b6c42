"""Trading signals: Analysis Engine indicators and regime, plus an ML Workbench prediction."""

from __future__ import annotations

import asyncio
from typing import Any

from app.clients.analysis_engine import AnalysisEngineClient, IndicatorResult, IndicatorsResponse
from app.clients.exceptions import ClientResponseError
from app.clients.fallback import collect_degraded
from app.clients.ml_workbench import MLWorkbenchClient

__all__ = [
    "BadUpstreamAnswerError",
    "SIGNAL_INDICATORS",
    "build_signal",
    "derive_features",
]


class BadUpstreamAnswerError(ClientResponseError):
    """The Analysis Engine answered without what a signal needs (mapped to 502)."""

    reason = "the Analysis Engine's answer lacks what a signal needs"


#: What a signal needs from the Analysis Engine.
SIGNAL_INDICATORS: list[dict[str, Any]] = [
    {"name": "SMA", "params": {"period": 20}},
    {"name": "SMA", "params": {"period": 50}},
    {"name": "RSI", "params": {"period": 14}},
    {"name": "MACD", "params": {"fast": 12, "slow": 26, "signal": 9}},
    {"name": "BBANDS", "params": {"period": 20, "stddev": 2.0}},
    {"name": "ATR", "params": {"period": 14}},
]


def _last(series: list[float | None]) -> float:
    for value in reversed(series):
        if value is not None:
            return value
    raise ValueError("indicator has no value yet (series shorter than its warm-up)")


def _find(results: list[IndicatorResult], name: str, **params: Any) -> IndicatorResult:
    for result in results:
        if result["name"] == name and all(result["params"].get(k) == v for k, v in params.items()):
            return result
    raise ValueError(f"indicator {name} {params} missing from the Analysis Engine's answer")


def derive_features(indicators: IndicatorsResponse) -> dict[str, float]:
    """Scale-free model features from the latest indicator values.

    Dividing by ATR makes them comparable across pairs quoted near 1.0 and near 150.
    """
    results = indicators["results"]
    atr = _last(_find(results, "ATR", period=14)["values"])
    if atr <= 0:
        raise ValueError("ATR is zero: the series has no range")
    macd = _find(results, "MACD").get("components", {})
    bands = _find(results, "BBANDS").get("components", {})
    middle = _last(bands["middle"])
    return {
        "rsi_14": _last(_find(results, "RSI", period=14)["values"]) / 100.0,
        "macd_hist_atr": _last(macd["histogram"]) / atr,
        "sma_trend_atr": (
            _last(_find(results, "SMA", period=20)["values"])
            - _last(_find(results, "SMA", period=50)["values"])
        )
        / atr,
        "bb_width": (_last(bands["upper"]) - _last(bands["lower"])) / middle if middle else 0.0,
    }


def _latest(results: list[IndicatorResult]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for r in results:
        key = r["name"] + "_" + "_".join(str(v) for v in r["params"].values())
        comps = r.get("components")
        latest[key] = (
            {k: next((v for v in reversed(s) if v is not None), None) for k, s in comps.items()}
            if comps
            else next((v for v in reversed(r["values"]) if v is not None), None)
        )
    return latest


async def build_signal(
    symbol: str,
    timeframe: str,
    analysis: AnalysisEngineClient,
    workbench: MLWorkbenchClient,
    model_id: str,
) -> dict[str, Any]:
    """The signal for ``symbol``: Analysis Engine failures raise; ML Workbench failures degrade."""
    # Both calls run to completion even when one fails. Cancelling the sibling would
    # waste a half-open breaker's only trial: with the regime call refused, the
    # indicators trial would be cancelled on every request and the breaker would never
    # close. Each call is bounded by its own deadline, and a cancelled request still
    # cancels both.
    indicators, regime = await asyncio.gather(
        analysis.get_technical_indicators(symbol, timeframe, SIGNAL_INDICATORS),
        analysis.detect_market_regime(symbol, timeframe),
        return_exceptions=True,
    )
    for outcome in (indicators, regime):
        if isinstance(outcome, BaseException):
            raise outcome
    assert not isinstance(indicators, BaseException)  # noqa: S101 - narrowed above, for mypy
    assert not isinstance(regime, BaseException)  # noqa: S101
    try:
        features = derive_features(indicators)
    except ValueError as exc:
        raise BadUpstreamAnswerError(str(exc)) from None
    # The signal is still worth serving without the model: it degrades, it does not fail.
    with collect_degraded() as degraded:
        prediction = await workbench.predict(model_id, symbol, timeframe, features, fallback=None)
    action = None
    if prediction is not None:
        p_up = (
            prediction["probability"] if prediction["prediction"] == "up" else 1 - prediction["probability"]
        )
        action = "buy" if p_up >= 0.55 else "sell" if p_up <= 0.45 else "hold"
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "indicators": _latest(indicators["results"]),
        "regime": regime,
        "features": features,
        "prediction": dict(prediction) if prediction is not None else None,
        "action": action,
        "degraded": degraded,
    }
