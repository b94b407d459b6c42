"""Typed contracts: the pydantic models of each upstream's requests and answers (DESIGN §6, §9).

Requests are checked before anything is sent (``InvalidRequestError`` naming the field);
answers are checked per the client's ``response_validation`` (``ResponseDecodeError``
naming the field and the endpoint template). The field types (``Symbol``, ``Number`` …)
are for models of your own upstreams.
"""

from app.clients.contracts.analysis_engine import (
    INDICATOR_PARAMS,
    MAX_CANDLES,
    MAX_ENTRIES,
    MAX_INDICATORS,
    MAX_PERIOD,
    MAX_STDDEV,
    Candle,
    IndicatorName,
    IndicatorRequest,
    IndicatorResult,
    IndicatorSpec,
    IndicatorsRequest,
    IndicatorsResponse,
    PriceSeries,
    PricesQuery,
    Regime,
    RegimeQuery,
    RegimeResponse,
)
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
from app.clients.contracts.ml_workbench import (
    MAX_FEATURES,
    MAX_MODELS,
    ModelId,
    ModelInfo,
    ModelList,
    ModelRef,
    Prediction,
    PredictRequest,
)

__all__ = [
    "Answer",
    "Candle",
    "Finite",
    "INDICATOR_PARAMS",
    "IndicatorName",
    "IndicatorRequest",
    "IndicatorResult",
    "IndicatorSpec",
    "IndicatorsRequest",
    "IndicatorsResponse",
    "Items",
    "MAX_CANDLES",
    "MAX_ENTRIES",
    "MAX_FEATURES",
    "MAX_INDICATORS",
    "MAX_MODELS",
    "MAX_PERIOD",
    "MAX_STDDEV",
    "ModelId",
    "ModelInfo",
    "ModelList",
    "ModelRef",
    "Number",
    "PredictRequest",
    "Prediction",
    "PriceSeries",
    "PricesQuery",
    "Probability",
    "Regime",
    "RegimeQuery",
    "RegimeResponse",
    "Request",
    "Symbol",
    "Text",
    "Timeframe",
]
