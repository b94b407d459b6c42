"""Trading signals: Analysis Engine indicators and regime, plus an ML Workbench prediction.

The Analysis Engine is essential: a failure, or an answer without what a signal needs,
fails the signal (the mapped status; 502 for a bad answer). The ML Workbench is
degradable: when the prediction call fails in any way (unavailable, timed out, an
error status, or an answer that is not a prediction) the signal is still served, with
``"prediction": null`` and the service named in ``"degraded"``. A wrong-shaped
prediction is no more use than none, and the caller asked for a signal, not for the
model: failing the whole answer for the optional part would make it essential.

``"degraded"`` also names a service whose answer was a fallback or a stale answer from
the response cache (served during an outage): the signal stands, on older data.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from app.api.answers import conforming
from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.contracts import (
    IndicatorResult,
    IndicatorSpec,
    IndicatorsResponse,
    Prediction,
    RegimeResponse,
)
from app.clients.fallback import collect_degraded, mark_degraded
from app.clients.ml_workbench import MLWorkbenchClient
from app.errors import ClientError, ResponseDecodeError

__all__ = [
    "INDICATORS_ENDPOINT",
    "PREDICT_ENDPOINT",
    "REGIME_ENDPOINT",
    "SIGNAL_INDICATORS",
    "build_signal",
    "derive_features",
]

log = logging.getLogger(__name__)

#: The client methods' endpoint templates, for errors that name where a bad answer came from.
INDICATORS_ENDPOINT = "indicators/calculate"
REGIME_ENDPOINT = "market-regime/{symbol}"
PREDICT_ENDPOINT = "models/{model_id}/predict"

#: What a signal needs from the Analysis Engine.
SIGNAL_INDICATORS: list[IndicatorSpec] = [
    IndicatorSpec(name="SMA", params={"period": 20}),
    IndicatorSpec(name="SMA", params={"period": 50}),
    IndicatorSpec(name="RSI", params={"period": 14}),
    IndicatorSpec(name="MACD", params={"fast": 12, "slow": 26, "signal": 9}),
    IndicatorSpec(name="BBANDS", params={"period": 20, "stddev": 2.0}),
    IndicatorSpec(name="ATR", params={"period": 14}),
]


class _Degraded:
    """The prediction call's fallback: tells "fell back" apart from an empty answer (None)."""

    def __repr__(self) -> str:
        return "DEGRADED"


_DEGRADED = _Degraded()


def _last(series: list[float | None]) -> float:
    for value in reversed(series):
        if value is not None:
            return value
    raise ValueError("indicator has no value yet (series shorter than its warm-up)")


def _find(results: list[IndicatorResult], name: str, **params: Any) -> IndicatorResult:
    for result in results:
        if result.name == name and all(result.params.get(k) == v for k, v in params.items()):
            return result
    raise ValueError(f"indicator {name} {params} missing from the Analysis Engine's answer")


def _line(result: IndicatorResult, line: str) -> list[float | None]:
    components = result.components or {}
    if line not in components:
        raise ValueError(f"indicator {result.name} lacks its {line!r} line")
    return components[line]


def derive_features(indicators: IndicatorsResponse) -> dict[str, float]:
    """Scale-free model features from the latest indicator values.

    Dividing by ATR makes them comparable across pairs quoted near 1.0 and near 150.
    Raises ``ValueError`` when the answer lacks a value a feature needs, or when a
    feature comes out infinite.
    """
    results = indicators.results
    atr = _last(_find(results, "ATR", period=14).values)
    if atr <= 0:
        raise ValueError("ATR is zero: the series has no range")
    macd, bands = _find(results, "MACD"), _find(results, "BBANDS")
    middle = _last(_line(bands, "middle"))
    features = {
        "rsi_14": _last(_find(results, "RSI", period=14).values) / 100.0,
        "macd_hist_atr": _last(_line(macd, "histogram")) / atr,
        "sma_trend_atr": (
            _last(_find(results, "SMA", period=20).values) - _last(_find(results, "SMA", period=50).values)
        )
        / atr,
        "bb_width": (_last(_line(bands, "upper")) - _last(_line(bands, "lower"))) / middle if middle else 0.0,
    }
    # Finite inputs can still overflow (1e300 / 1e-300); the model would be sent null.
    bad = [name for name, value in features.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"features {', '.join(bad)} are not finite")
    return features


def _latest(results: list[IndicatorResult]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for r in results:
        key = r.name + "_" + "_".join(str(v) for v in r.params.values())
        latest[key] = (
            {k: next((v for v in reversed(s) if v is not None), None) for k, s in r.components.items()}
            if r.components
            else next((v for v in reversed(r.values) if v is not None), None)
        )
    return latest


async def _prediction(
    workbench: MLWorkbenchClient, model_id: str, symbol: str, timeframe: str, features: dict[str, float]
) -> Prediction | None:
    """The model's prediction, or None (and the ML Workbench marked degraded) when it fails."""
    try:
        # Unavailability and timeouts fall back inside the client (counted and marked there).
        data: Any = await workbench.predict(model_id, symbol, timeframe, features, fallback=_DEGRADED)
        if data is _DEGRADED:
            return None
        return conforming(Prediction, data, workbench, "POST", PREDICT_ENDPOINT)
    except ClientError as exc:
        # The rest: an error status, an undecodable body, or a wrong-shaped answer.
        log.warning(
            "signal served without a prediction: %s",
            exc,
            extra={"fields": {"degraded": workbench.service_name, "error": type(exc).__name__}},
        )
        mark_degraded(workbench.service_name)
        return None


def _action(prediction: Prediction | None) -> str | None:
    if prediction is None:
        return None
    p_up = prediction.probability if prediction.prediction == "up" else 1 - prediction.probability
    return "buy" if p_up >= 0.55 else "sell" if p_up <= 0.45 else "hold"


async def _engine_answers(
    analysis: AnalysisEngineClient, symbol: str, timeframe: str
) -> tuple[IndicatorsResponse, RegimeResponse]:
    """Both Analysis Engine answers, checked; the first failure raised."""
    # Both calls run to completion even when one fails. Cancelling the sibling would
    # waste a half-open breaker's only trial: with the regime call refused, the
    # indicators trial would be cancelled on every request and the breaker would never
    # close. Each call is bounded by its own deadline, and a cancelled request still
    # cancels both.
    indicators_data, regime_data = await asyncio.gather(
        # A pure computation: with the client's response cache on, its POST is cached too.
        analysis.get_technical_indicators(symbol, timeframe, SIGNAL_INDICATORS, cache=True),
        analysis.detect_market_regime(symbol, timeframe),
        return_exceptions=True,
    )
    for outcome in (indicators_data, regime_data):
        if isinstance(outcome, BaseException):
            raise outcome
    return (
        conforming(IndicatorsResponse, indicators_data, analysis, "POST", INDICATORS_ENDPOINT),
        conforming(RegimeResponse, regime_data, analysis, "GET", REGIME_ENDPOINT),
    )


async def build_signal(
    symbol: str,
    timeframe: str,
    analysis: AnalysisEngineClient,
    workbench: MLWorkbenchClient,
    model_id: str,
) -> dict[str, Any]:
    """The signal (a ``Signal``) for ``symbol``: Analysis Engine failures raise; the ML Workbench degrades."""
    # The whole build collects: a fallback or a stale cached answer from either upstream
    # is named in "degraded", the Analysis Engine's too (its calls then succeed, on older data).
    with collect_degraded() as degraded:
        indicators, regime = await _engine_answers(analysis, symbol, timeframe)
        try:
            features = derive_features(indicators)
        except (ValueError, ArithmeticError) as exc:
            raise ResponseDecodeError(
                f"the answer lacks what a signal needs: {exc}",
                service_name=analysis.service_name,
                method="POST",
                endpoint=INDICATORS_ENDPOINT,
            ) from None
        prediction = await _prediction(workbench, model_id, symbol, timeframe, features)
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "indicators": _latest(indicators.results),
        "regime": regime.model_dump(),
        "features": features,
        "prediction": None if prediction is None else prediction.model_dump(),
        "action": _action(prediction),
        "degraded": degraded,
    }
