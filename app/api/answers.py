"""The shape of each upstream answer the gateway reads, checked before any route uses it.

The clients return decoded JSON as they got it; an upstream answering valid JSON of
the wrong shape (a list, a missing key, a string for a number, null, deep nesting)
would otherwise surface as a ``KeyError`` or ``TypeError`` deep in a route: a 500.
Here it becomes ``BadUpstreamAnswerError``, the gateway's 502, naming the fields.

The models are strict (no ``"1.5"`` for 1.5, no ``true`` for 1, finite numbers only)
and ignore keys they do not know, so an upstream may add fields. Routes answer from
the validated model, not from the raw body, so nothing unchecked reaches the caller.
Kept to the API layer on purpose: typed models in the clients are a later step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from app.errors import ClientResponseError

__all__ = [
    "BadUpstreamAnswerError",
    "IndicatorSeries",
    "IndicatorsAnswer",
    "PredictionAnswer",
    "RegimeAnswer",
    "checked",
]

#: How many problems an error message lists, and how much of each location it shows:
#: the answer is hostile input, and the message goes back to the gateway's caller.
_MAX_PROBLEMS = 3
_MAX_LOC_PART = 40

# Smart-mode union: an int stays an int (``"period": 20`` must not come back as 20.0).
Number = StrictInt | Annotated[float, Field(strict=True, allow_inf_nan=False)]
Probability = Annotated[float, Field(strict=True, ge=0, le=1)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class BadUpstreamAnswerError(ClientResponseError):
    """An upstream answered, but not with what the gateway needs (mapped to 502)."""

    reason = "the upstream's answer is not what the gateway expects"


class _Answer(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class IndicatorSeries(_Answer):
    """One computed indicator: its main line, and every line of a multi-line one."""

    name: Text
    params: dict[str, Number]
    values: list[Number | None]
    timestamps: list[str]
    components: dict[str, list[Number | None]] | None = None


class IndicatorsAnswer(_Answer):
    """The Analysis Engine's ``POST indicators/calculate`` answer."""

    symbol: Text
    timeframe: Text
    results: list[IndicatorSeries]


class RegimeAnswer(_Answer):
    """The Analysis Engine's ``GET market-regime/{symbol}`` answer."""

    symbol: Text
    timeframe: Text
    regime: Text
    confidence: Probability
    metrics: dict[str, Number | None]


class PredictionAnswer(_Answer):
    """The ML Workbench's ``POST models/{model_id}/predict`` answer."""

    model_id: Text
    symbol: Text
    prediction: Literal["up", "down"]
    probability: Probability


A = TypeVar("A", bound=_Answer)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part)[:_MAX_LOC_PART] for part in loc) or "answer"


def describe(error: ValidationError) -> str:
    """The first few problems as ``field: reason``; never the values (they may be anything)."""
    problems = error.errors(include_input=False, include_url=False, include_context=False)
    text = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        text += f"; and {len(problems) - _MAX_PROBLEMS} more"
    return text


def checked(model: type[A], data: Any, *, service_name: str, method: str, endpoint: str) -> A:
    """``data`` as ``model``, or ``BadUpstreamAnswerError`` naming the service and the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadUpstreamAnswerError(
            f"answer does not match {model.__name__}: {describe(exc)}",
            service_name=service_name,
            method=method,
            endpoint=endpoint,
        ) from None
