"""The gateway's own answer models: what /docs and the OpenAPI document promise, error answers included.

The upstream answers the gateway passes on (indicators, regime, prediction) are the
clients' contract models (``app.clients.contracts``). Routes render answers with orjson
or ``model_dump_json``; these models are the documentation and the test oracle of that
output (schemathesis checks every answer against them), not a second serialisation pass.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.clients.contracts import Number, Prediction, RegimeResponse, Timeframe

__all__ = [
    "BreakerAction",
    "BulkheadLoad",
    "ConfigView",
    "DependencyReadiness",
    "ErrorBody",
    "FieldProblem",
    "Health",
    "Readiness",
    "ResilienceStatus",
    "Signal",
]


class FieldProblem(BaseModel):
    """One field the request got wrong: where, why, and the kind of problem (never the value)."""

    loc: list[str | int] = Field(description="Where: `query`, `path` or `body`, then the field's path.")
    msg: str = Field(description="Why, for a human.")
    type: str = Field(description="The kind of problem, e.g. `string_pattern_mismatch`, `missing`.")


class ErrorBody(BaseModel):
    """Every error answer of the gateway has this shape, whatever its status.

    ``detail`` and ``code`` are always there. ``errors`` lists the fields of a request
    that did not validate (a 422 for the caller's own input). When an upstream call
    failed, the fields from ``error`` on say which call and how; they never hold a secret.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "query.timeframe: Input should be '1m', '5m', '15m', '1h', '4h' or '1d'",
                    "code": "validation_error",
                    "errors": [
                        {
                            "loc": ["query", "timeframe"],
                            "msg": "Input should be '1m', '5m', '15m', '1h', '4h' or '1d'",
                            "type": "literal_error",
                        }
                    ],
                }
            ]
        }
    )

    detail: str = Field(description="What went wrong, for a human.")
    code: str = Field(
        description=(
            "What went wrong, for a program: `validation_error` (the request's fields; the"
            " upstream's own code when it refused them), `invalid_request`, `not_found`,"
            " `bad_gateway`, `unavailable`, `timeout`, `method_not_allowed`, `unauthorized`."
        )
    )
    errors: list[FieldProblem] | None = Field(
        default=None, description="The request's fields that did not validate."
    )
    error: str | None = Field(
        default=None, description="The client error's class, e.g. `ClientTimeoutError`."
    )
    service: str | None = Field(default=None, description="The upstream service called.")
    method: str | None = Field(default=None, description="The upstream call's HTTP method.")
    endpoint: str | None = Field(
        default=None, description="The upstream endpoint's template, e.g. `prices/{symbol}`."
    )
    status: int | None = Field(default=None, description="The upstream's HTTP status, when it answered.")
    attempts: int | None = Field(default=None, description="How many attempts the call made.")
    retry_after: float | None = Field(
        default=None, description="Seconds until a retry may succeed, when known."
    )
    instance: str | None = Field(default=None, description="The upstream instance (`host:port`) that failed.")
    token_endpoint: str | None = Field(
        default=None, description="The token endpoint that failed, for a token error."
    )
    token_status: int | None = Field(default=None, description="The token endpoint's HTTP status.")


class Signal(BaseModel):
    """``GET /api/v1/signals/{symbol}``: indicators, regime and a prediction, and what was degraded."""

    symbol: str
    timeframe: Timeframe
    indicators: dict[str, Number | dict[str, Number | None] | None] = Field(
        description="The latest value of each indicator (`RSI_14`), or of each of its lines (`MACD_12_26_9`)."
    )
    regime: RegimeResponse
    features: dict[str, float] = Field(description="The model's inputs, derived from the indicators.")
    prediction: Prediction | None = Field(description="None when the ML Workbench could not answer.")
    action: Literal["buy", "sell", "hold"] | None
    degraded: list[str] = Field(
        description="The services that answered with a fallback or a stale cached answer, or not at all."
    )


class Health(BaseModel):
    """``GET /health``: the process answers."""

    status: Literal["ok"]


class BulkheadLoad(BaseModel):
    """A dependency's bulkhead: calls in flight, waiting, and its limit."""

    in_flight: int
    queued: int
    limit: int


class DependencyReadiness(BaseModel):
    """One dependency as ``/health/ready`` shows it."""

    status: Literal["ok", "degraded", "unavailable"]
    essential: bool
    breaker: str
    seconds_until_half_open: float | None
    bulkhead: BulkheadLoad


class Readiness(BaseModel):
    """``GET /health/ready``: 503 while draining or while an essential dependency is unavailable."""

    status: Literal["ready", "degraded", "unavailable", "draining"]
    dependencies: dict[str, DependencyReadiness]


class ResilienceStatus(BaseModel):
    """``GET /api/v1/resilience``: each dependency over the last seconds, and the config in force."""

    generated_at: float
    config: dict[str, object]
    dependencies: dict[str, dict[str, object]]


class ConfigView(BaseModel):
    """``GET /api/v1/config``: the settings in force, redacted, and each replica's version."""

    version: int
    digest: str
    settings: dict[str, object]
    replicas: dict[str, object]


class BreakerAction(DependencyReadiness):
    """An operator's action on a dependency's breaker, and the dependency after it."""

    service: str
    action: Literal["reset", "isolate"]
    scope: Literal["replica", "fleet"]
