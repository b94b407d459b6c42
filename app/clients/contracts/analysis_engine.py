"""The Analysis Engine's contract (DESIGN §6): what its client sends, and what it answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from app.clients.contracts.fields import (
    Answer,
    Finite,
    Items,
    Number,
    Probability,
    Request,
    Symbol,
    Text,
    Timeframe,
)

__all__ = [
    "Candle",
    "INDICATOR_PARAMS",
    "IndicatorName",
    "IndicatorRequest",
    "IndicatorResult",
    "IndicatorSpec",
    "IndicatorsRequest",
    "IndicatorsResponse",
    "MAX_CANDLES",
    "MAX_ENTRIES",
    "MAX_INDICATORS",
    "MAX_PERIOD",
    "MAX_STDDEV",
    "PriceSeries",
    "PricesQuery",
    "Regime",
    "RegimeQuery",
    "RegimeResponse",
]

#: The engine's limits (upstreams/analysis_engine): candles per series, indicators per
#: request, the longest period, the widest Bollinger band.
MAX_CANDLES = 5000
MAX_INDICATORS = 20
MAX_PERIOD = 500
MAX_STDDEV = 10.0
#: Entries of an answer's small mappings (an indicator's params and lines, a regime's metrics).
MAX_ENTRIES = 100

IndicatorName = Literal["SMA", "EMA", "RSI", "MACD", "BBANDS", "ATR"]
#: Each indicator's parameters and their defaults (the engine fills in what is left out),
#: in the order the gateway's ``indicators=MACD:12:26:9`` query gives them.
INDICATOR_PARAMS: dict[str, dict[str, Number]] = {
    "SMA": {"period": 20},
    "EMA": {"period": 20},
    "RSI": {"period": 14},
    "ATR": {"period": 14},
    "MACD": {"fast": 12, "slow": 26, "signal": 9},
    "BBANDS": {"period": 20, "stddev": 2.0},
}
Regime = Literal["trending_up", "trending_down", "ranging", "volatile"]
Limit = Annotated[int, Field(ge=1, le=MAX_CANDLES)]
ParamName = Annotated[str, Field(min_length=1, max_length=40)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _params_problem(name: str, params: dict[str, Number]) -> str | None:
    """Why the engine would refuse ``params`` for ``name`` (its own rules), or None."""
    defaults = INDICATOR_PARAMS[name]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        return f"unknown parameters {unknown} for {name}; known: {', '.join(defaults)}"
    merged = {**defaults, **params}
    for key, value in merged.items():
        if key == "stddev":
            if not 0 < value <= MAX_STDDEV:
                return f"stddev must be in (0, {MAX_STDDEV:g}]"
        elif not (1 <= value <= MAX_PERIOD and float(value).is_integer()):  # range first: 10**400
            return f"{key} must be a whole number from 1 to {MAX_PERIOD}"
    if name == "MACD" and merged["fast"] >= merged["slow"]:
        return "fast must be below slow"
    return None


# -- requests --------------------------------------------------------------------------


class IndicatorRequest(TypedDict):
    """One indicator to compute as a mapping, e.g. ``{"name": "SMA", "params": {"period": 20}}``.

    Accepted wherever an :class:`IndicatorSpec` is, and checked the same way.
    """

    name: str
    params: dict[str, Any]


class IndicatorSpec(Request):
    """One indicator to compute: a name the engine knows (either case) and its parameters.

    Parameters left out take the engine's defaults (:data:`INDICATOR_PARAMS`). Periods are
    whole numbers from 1 to 500, ``stddev`` is in (0, 10], and MACD's ``fast`` is below
    its ``slow``: what the engine accepts, so a request it would refuse is never sent.
    """

    name: Annotated[IndicatorName, BeforeValidator(_upper)]
    params: dict[ParamName, Number] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Number], info: ValidationInfo) -> dict[str, Number]:
        name = info.data.get("name")
        problem = None if name is None else _params_problem(name, params)
        if problem is not None:
            raise PydanticCustomError("indicator_params", "{reason}", {"reason": problem})
        return params


class IndicatorsRequest(Request):
    """``POST indicators/calculate``: indicators over the last ``limit`` candles of a series."""

    symbol: Symbol
    timeframe: Timeframe = "1h"
    indicators: Annotated[list[IndicatorSpec], Field(min_length=1, max_length=MAX_INDICATORS)]
    limit: Limit = 200


class PricesQuery(Request):
    """``GET prices/{symbol}``: the last ``limit`` candles of a series."""

    symbol: Symbol
    timeframe: Timeframe = "1h"
    limit: Limit = 200


class RegimeQuery(Request):
    """``GET market-regime/{symbol}``."""

    symbol: Symbol
    timeframe: Timeframe = "1h"


# -- answers ---------------------------------------------------------------------------


class Candle(Answer):
    """One OHLC candle."""

    timestamp: Text
    open: Finite
    high: Finite
    low: Finite
    close: Finite
    volume: Finite


class PriceSeries(Answer):
    """Candles for one symbol and timeframe, oldest first."""

    symbol: Text
    timeframe: Timeframe
    candles: Annotated[list[Candle], Items(MAX_CANDLES)]


class IndicatorResult(Answer):
    """One computed indicator; warm-up positions are None.

    ``values`` is the main line (MACD's line, the Bollinger middle band); a multi-line
    indicator also gives every line in ``components`` (MACD: ``macd``, ``signal``,
    ``histogram``; BBANDS: ``upper``, ``middle``, ``lower``).
    """

    name: Text
    params: Annotated[dict[str, Number], Items(MAX_ENTRIES)]
    values: Annotated[list[Number | None], Items(MAX_CANDLES)]
    timestamps: Annotated[list[Text], Items(MAX_CANDLES)]
    components: (
        Annotated[dict[str, Annotated[list[Number | None], Items(MAX_CANDLES)]], Items(MAX_ENTRIES)] | None
    ) = None


class IndicatorsResponse(Answer):
    """The indicators computed for one symbol and timeframe."""

    symbol: Text
    timeframe: Timeframe
    results: Annotated[list[IndicatorResult], Items(MAX_INDICATORS)]


class RegimeResponse(Answer):
    """The market regime of a symbol, with the metrics it was read from."""

    symbol: Text
    timeframe: Timeframe
    regime: Regime
    confidence: Probability
    metrics: Annotated[dict[str, Number | None], Items(MAX_ENTRIES)]
