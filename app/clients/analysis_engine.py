"""AnalysisEngineClient: prices, technical indicators and market regime (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.clients.base import BaseServiceClient
from app.clients.contracts.analysis_engine import (
    Candle,
    IndicatorRequest,
    IndicatorResult,
    IndicatorSpec,
    IndicatorsRequest,
    IndicatorsResponse,
    PriceSeries,
    PricesQuery,
    RegimeQuery,
    RegimeResponse,
)
from app.clients.fallback import NO_FALLBACK
from app.clients.operations import operation
from app.clients.registry import upstream_client
from app.clients.sync import sync_twin

__all__ = [
    "AnalysisEngineClient",
    "Candle",
    "IndicatorRequest",
    "IndicatorResult",
    "IndicatorSpec",
    "IndicatorsRequest",
    "IndicatorsResponse",
    "PriceSeries",
    "PricesQuery",
    "RegimeQuery",
    "RegimeResponse",
]

PRICES = "prices/{symbol}"
INDICATORS = "indicators/calculate"
REGIME = "market-regime/{symbol}"


def _specs(indicators: Any) -> Any:
    # Mappings (IndicatorRequest, a MappingProxy …) as the dicts the model validates, any
    # sequence as a list; anything else as given, for the model to name what is wrong.
    if isinstance(indicators, str) or not isinstance(indicators, Sequence):
        return indicators
    return [dict(item) if isinstance(item, Mapping) else item for item in indicators]


@upstream_client("analysis_engine")
class AnalysisEngineClient(BaseServiceClient):
    """Client of the Analysis Engine.

    Methods take and return the pydantic models of ``app.clients.contracts``. The
    arguments are checked first: a bad symbol, timeframe, limit or indicator is an
    ``InvalidRequestError`` naming the field, and nothing is sent. The answer is checked
    per ``config.response_validation`` (``strict``: a ``ResponseDecodeError`` naming the
    field and the endpoint template).

    Every method also takes the verbs' per-call options, keyword-only (see
    ``BaseServiceClient.request``):

    * ``timeout``: the deadline of the whole call, retries included, in seconds;
    * ``headers``: extra request headers for this call;
    * ``idempotency_key``: sent as ``Idempotency-Key`` on every attempt, so the
      upstream can deduplicate; it also makes a POST safe to retry;
    * ``fallback``: a value, or a function of the error, returned (as given, not
      checked) instead of raising when the call is unavailable or timed out;
    * ``cache``: with the client's response cache on, ``False`` bypasses it for this
      call and ``True`` caches a call it would not (the indicators' POST); None: the default.

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
        cache: bool | None = None,
    ) -> PriceSeries:
        """OHLC candles for ``symbol``, oldest first."""
        query = self.validate_request(
            PricesQuery, {"symbol": symbol, "timeframe": timeframe, "limit": limit}, "GET", PRICES
        )
        result: PriceSeries = await self.get(
            PRICES,
            path_params={"symbol": query.symbol},
            params={"timeframe": query.timeframe, "limit": query.limit},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=PriceSeries,
            cache=cache,
        )
        return result

    @operation
    async def get_technical_indicators(
        self,
        symbol: str,
        timeframe: str = "1h",
        indicators: Sequence[IndicatorSpec | IndicatorRequest | Mapping[str, Any]] = (),
        limit: int = 200,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Any = NO_FALLBACK,
        cache: bool | None = None,
    ) -> IndicatorsResponse:
        """Indicators over the symbol's series; a pure computation, so safely retried.

        ``indicators``: at least one, as ``IndicatorSpec`` models or mappings such as
        ``{"name": "SMA", "params": {"period": 20}}``.
        """
        data = {
            "symbol": symbol,
            "timeframe": timeframe,
            "indicators": _specs(indicators),
            "limit": limit,
        }
        request = self.validate_request(IndicatorsRequest, data, "POST", INDICATORS)
        result: IndicatorsResponse = await self.post(
            INDICATORS,
            json=request,
            idempotent=True,
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=IndicatorsResponse,
            cache=cache,
        )
        return result

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
        cache: bool | None = None,
    ) -> RegimeResponse:
        """The current market regime of ``symbol``."""
        query = self.validate_request(RegimeQuery, {"symbol": symbol, "timeframe": timeframe}, "GET", REGIME)
        result: RegimeResponse = await self.get(
            REGIME,
            path_params={"symbol": query.symbol},
            params={"timeframe": query.timeframe},
            timeout=timeout,
            headers=headers,
            idempotency_key=idempotency_key,
            fallback=fallback,
            response_model=RegimeResponse,
            cache=cache,
        )
        return result

    get_prices_sync = sync_twin(get_prices)
    get_technical_indicators_sync = sync_twin(get_technical_indicators)
    detect_market_regime_sync = sync_twin(detect_market_regime)
