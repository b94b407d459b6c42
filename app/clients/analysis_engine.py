"""AnalysisEngineClient: prices, technical indicators and market regime (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict, cast

from app.clients.base import BaseServiceClient, operation
from app.clients.fallback import NO_FALLBACK
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


class AnalysisEngineClient(BaseServiceClient):
    """Client of the Analysis Engine.

    Every method takes ``fallback=`` (see ``BaseServiceClient.request``); with one, an
    unavailable or timed-out call returns the fallback's value instead.
    """

    @operation
    async def get_prices(
        self, symbol: str, timeframe: str = "1h", limit: int = 200, *, fallback: Any = NO_FALLBACK
    ) -> PriceSeries:
        """OHLC candles for ``symbol``, oldest first."""
        data = await self.get(
            "prices/{symbol}",
            path_params={"symbol": symbol},
            params={"timeframe": timeframe, "limit": limit},
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
            fallback=fallback,
        )
        return cast(IndicatorsResponse, data)

    @operation
    async def detect_market_regime(
        self, symbol: str, timeframe: str = "1h", *, fallback: Any = NO_FALLBACK
    ) -> RegimeResponse:
        """The current market regime of ``symbol``."""
        data = await self.get(
            "market-regime/{symbol}",
            path_params={"symbol": symbol},
            params={"timeframe": timeframe},
            fallback=fallback,
        )
        return cast(RegimeResponse, data)

    get_prices_sync = sync_twin(get_prices)
    get_technical_indicators_sync = sync_twin(get_technical_indicators)
    detect_market_regime_sync = sync_twin(detect_market_regime)
