"""AnalysisEngineClient: prices, technical indicators and market regime (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict, cast

from app.clients.base import BaseServiceClient
from app.clients.fallback import NO_FALLBACK
from app.clients.operations import operation
from app.clients.registry import upstream_client
from app.clients.sync import sync_twin

__all__ = [
    "AnalysisEngineClient",
    "Candle",
    "IndicatorRequest",
    "IndicatorResult",
    "IndicatorsResponse",
    "PriceSeries",
    "RegimeResponse",
]


class Candle(TypedDict):
    """One OHLC candle."""

    timestamp: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class PriceSeries(TypedDict):
    """Candles for one symbol and timeframe, oldest first."""

    symbol: str
    timeframe: str
    candles: list[Candle]


class IndicatorRequest(TypedDict):
    """One indicator to compute, e.g. ``{"name": "SMA", "params": {"period": 20}}``."""

    name: str
    params: dict[str, Any]


class IndicatorResult(TypedDict):
    """One computed series; warm-up positions are None.

    ``values`` is the main line (MACD's line, the Bollinger middle band);
    multi-line indicators also give every line in ``components``.
    """

    name: str
    params: dict[str, Any]
    values: list[float | None]
    timestamps: list[str]
    components: NotRequired[dict[str, list[float | None]]]


class IndicatorsResponse(TypedDict):
    """The indicators computed for one symbol and timeframe."""

    symbol: str
    timeframe: str
    results: list[IndicatorResult]


class RegimeResponse(TypedDict):
    """The market regime of a symbol, with the metrics it was read from."""

    symbol: str
    timeframe: str
    regime: str
    confidence: float
    metrics: dict[str, float]


@upstream_client("analysis_engine")
class AnalysisEngineClient(BaseServiceClient):
    """Client of the Analysis Engine.

    Every method also takes the verbs' per-call options, keyword-only (see
    ``BaseServiceClient.request``):

    * ``timeout``: the deadline of the whole call, retries included, in seconds;
    * ``headers``: extra request headers for this call;
    * ``idempotency_key``: sent as ``Idempotency-Key`` on every attempt, so the
      upstream can deduplicate; it also makes a POST safe to retry;
    * ``fallback``: a value, or a function of the error, returned instead of raising
      when the call is unavailable or timed out.

    Each has a blocking ``*_sync`` twin with the same parameters.
    """

    @operation
    async def get_prices(
        self,
        symbol: str,
        timeframe: str = "1h",
        limit: int = 200,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> PriceSeries:
        """OHLC candles for ``symbol``, oldest first."""
        data = await self.get(
            "prices/{symbol}",
            path_params={"symbol": symbol},
            params={"timeframe": timeframe, "limit": limit},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(PriceSeries, data)

    @operation
    async def get_technical_indicators(
        self,
        symbol: str,
        timeframe: str = "1h",
        indicators: Sequence[IndicatorRequest | Mapping[str, Any]] = (),
        limit: int = 200,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> IndicatorsResponse:
        """Indicators over the symbol's series; a pure computation, so safely retried."""
        data = await self.post(
            "indicators/calculate",
            json={
                "symbol": symbol,
                "timeframe": timeframe,
                "indicators": [dict(i) for i in indicators],
                "limit": limit,
            },
            idempotent=True,
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(IndicatorsResponse, data)

    @operation
    async def detect_market_regime(
        self,
        symbol: str,
        timeframe: str = "1h",
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
    ) -> RegimeResponse:
        """The current market regime of ``symbol``."""
        data = await self.get(
            "market-regime/{symbol}",
            path_params={"symbol": symbol},
            params={"timeframe": timeframe},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
        )
        return cast(RegimeResponse, data)

    get_prices_sync = sync_twin(get_prices)
    get_technical_indicators_sync = sync_twin(get_technical_indicators)
    detect_market_regime_sync = sync_twin(detect_market_regime)
