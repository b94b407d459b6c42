"""The gateway's API: indicators, market regime and trading signals (DESIGN §6)."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from typing import Annotated, Literal

from dependency_injector.wiring import inject
from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel

from app.api.answers import IndicatorsAnswer, RegimeAnswer, checked
from app.api.deps import AnalysisEngineDep, MLWorkbenchDep, SettingsDep
from app.api.indicators import parse_indicators
from app.api.responses import JsonBytesResponse
from app.api.signals import INDICATORS_ENDPOINT, REGIME_ENDPOINT, build_signal

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["gateway"])

Symbol = Annotated[
    str,
    Path(pattern=r"^[A-Za-z]{6}$", description="A currency pair, e.g. EURUSD", examples=["EURUSD"]),
]
Timeframe = Annotated[Literal["1m", "5m", "15m", "1h", "4h", "1d"], Query()]
Limit = Annotated[int, Query(ge=1, le=5000)]


def _json(answer: BaseModel) -> Response:
    # The checked model, not the upstream's body: only what was validated goes out.
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")


@router.get("/indicators/{symbol}")
@inject
async def indicators(
    symbol: Symbol,
    client: AnalysisEngineDep,
    timeframe: Timeframe = "1h",
    indicators: Annotated[str, Query(max_length=500, examples=["SMA:20,RSI:14"])] = "SMA:20,RSI:14",
    limit: Limit = 200,
) -> Response:
    """Technical indicators for ``symbol``, computed by the Analysis Engine."""
    try:
        requested = parse_indicators(indicators)
    except ValueError as exc:
        raise HTTPException(422, detail=f"indicators: {exc}") from None
    data = await client.get_technical_indicators(symbol.upper(), timeframe, requested, limit)
    service = client.service_name
    return _json(
        checked(IndicatorsAnswer, data, service_name=service, method="POST", endpoint=INDICATORS_ENDPOINT)
    )


@router.get("/regime/{symbol}")
@inject
async def regime(symbol: Symbol, client: AnalysisEngineDep, timeframe: Timeframe = "1h") -> Response:
    """The market regime of ``symbol``."""
    data = await client.detect_market_regime(symbol.upper(), timeframe)
    service = client.service_name
    return _json(checked(RegimeAnswer, data, service_name=service, method="GET", endpoint=REGIME_ENDPOINT))


@router.get("/signals/{symbol}")
@inject
async def signals(
    symbol: Symbol,
    analysis: AnalysisEngineDep,
    workbench: MLWorkbenchDep,
    settings: SettingsDep,
    timeframe: Timeframe = "1h",
) -> Response:
    """Indicators, regime and a prediction; degraded, not failed, without the model."""
    data = await build_signal(symbol.upper(), timeframe, analysis, workbench, settings.signal_model_id)
    return JsonBytesResponse(data)
