"""The gateway's API: indicators, market regime and trading signals (DESIGN §6)."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from typing import Annotated

from dependency_injector.wiring import inject
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from app.api.answers import conforming
from app.api.deps import AnalysisEngineDep, MLWorkbenchDep, SettingsDep
from app.api.errors import ERROR_RESPONSES, request_error
from app.api.indicators import INDICATORS_PATTERN, parse_indicators
from app.api.responses import JsonBytesResponse
from app.api.routing import InjectedRoute
from app.api.schemas import Signal
from app.api.signals import INDICATORS_ENDPOINT, REGIME_ENDPOINT, build_signal
from app.clients.contracts import MAX_CANDLES, IndicatorsResponse, RegimeResponse, Timeframe

__all__ = ["router"]

router = APIRouter(route_class=InjectedRoute, prefix="/api/v1", tags=["gateway"], responses=ERROR_RESPONSES)

Symbol = Annotated[
    str,
    Path(pattern=r"^[A-Za-z]{6}$", description="A currency pair, e.g. EURUSD", examples=["EURUSD"]),
]
TimeframeQuery = Annotated[Timeframe, Query()]
Limit = Annotated[int, Query(ge=1, le=MAX_CANDLES)]
IndicatorsQuery = Annotated[
    str,
    Query(
        max_length=500,
        examples=["SMA:20,RSI:14"],
        description=(
            "Comma-separated `NAME[:param…]`, at most 20; parameters are positional and optional:"
            " SMA, EMA, RSI, ATR take `period`; MACD `fast:slow:signal` (`fast` below `slow`);"
            " BBANDS `period:stddev`. Periods are whole numbers from 1 to 500, `stddev` is in (0, 10]."
        ),
        # Documented, and checked by parse_indicators (whose reasons name the bad item).
        json_schema_extra={"pattern": INDICATORS_PATTERN},
    ),
]


def _json(answer: BaseModel) -> Response:
    # The checked model, not the upstream's body: only what was validated goes out.
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")


@router.get("/indicators/{symbol}", response_model=IndicatorsResponse)
@inject
async def indicators(
    symbol: Symbol,
    client: AnalysisEngineDep,
    timeframe: TimeframeQuery = "1h",
    indicators: IndicatorsQuery = "SMA:20,RSI:14",
    limit: Limit = 200,
) -> Response:
    """Technical indicators for ``symbol``, computed by the Analysis Engine."""
    try:
        requested = parse_indicators(indicators)
    except ValueError as exc:
        raise request_error(("query", "indicators"), str(exc)) from None
    # A pure computation: with the client's response cache on, its POST is cached too.
    answer = await client.get_technical_indicators(symbol.upper(), timeframe, requested, limit, cache=True)
    return _json(conforming(IndicatorsResponse, answer, client, "POST", INDICATORS_ENDPOINT))


@router.get("/regime/{symbol}", response_model=RegimeResponse)
@inject
async def regime(symbol: Symbol, client: AnalysisEngineDep, timeframe: TimeframeQuery = "1h") -> Response:
    """The market regime of ``symbol``."""
    answer = await client.detect_market_regime(symbol.upper(), timeframe)
    return _json(conforming(RegimeResponse, answer, client, "GET", REGIME_ENDPOINT))


@router.get("/signals/{symbol}", response_model=Signal)
@inject
async def signals(
    symbol: Symbol,
    analysis: AnalysisEngineDep,
    workbench: MLWorkbenchDep,
    settings: SettingsDep,
    timeframe: TimeframeQuery = "1h",
) -> Response:
    """Indicators, regime and a prediction; degraded, not failed, without the model."""
    signal = await build_signal(symbol.upper(), timeframe, analysis, workbench, settings.signal_model_id)
    return JsonBytesResponse(signal)
