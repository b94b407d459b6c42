"""Maps client errors to gateway responses (DESIGN §6), in one place and one shape; no secret in any.

Every error answer is an ``ErrorBody``: ``{"detail": str, "code": str, "errors": [...] | null,
...}``. The 422 for a request FastAPI refused, the 422 for a parameter the gateway
refused itself (``request_error``), the 422 for a request a client refused
(``InvalidRequestError``) and the 422 for one the upstream refused all take it, and so
do 404, 405, 502, 503 and 504. ``ERROR_RESPONSES`` documents them for the OpenAPI document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.api.responses import JsonBytesResponse
from app.api.schemas import ErrorBody
from app.errors import (
    AuthenticationError,
    ClientError,
    ClientValidationError,
    InvalidRequestError,
    ResourceNotFoundError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from app.redaction import scrub, scrub_deep

__all__ = [
    "ERROR_RESPONSES",
    "error_responses",
    "install_error_handlers",
    "request_error",
    "status_for",
]

#: ``code`` of an error answer by status, when nothing more specific is known.
_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    422: "validation_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}
#: How many field problems a 422 lists, and how long each message may be: a request can
#: be made to fail in thousands of places, and the answer must stay small.
_MAX_PROBLEMS = 20
_MAX_MSG = 300
#: How many problems the one-line ``detail`` names.
_DETAIL_PROBLEMS = 3

_RETRY_AFTER = {
    "Retry-After": {
        "description": (
            "Seconds until the dependency may answer again, when known"
            " (an open breaker, or an upstream's own Retry-After)."
        ),
        "schema": {"type": "integer", "minimum": 1},
    }
}
#: Every error answer the gateway's routes may give, for ``responses=``: one shape (``ErrorBody``).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorBody,
        "description": "Not found: the upstream has no such resource (an unknown symbol).",
    },
    422: {
        "model": ErrorBody,
        "description": (
            "The request's parameters are invalid (`errors` names each field), or the upstream refused them."
        ),
    },
    502: {
        "model": ErrorBody,
        "description": (
            "An upstream answered with something the gateway cannot use (`ResponseDecodeError`),"
            " or refused the gateway's credentials."
        ),
    },
    503: {
        "model": ErrorBody,
        "description": "An upstream is unavailable: breaker open, bulkhead full, refused connection or 5xx.",
        "headers": _RETRY_AFTER,
    },
    504: {"model": ErrorBody, "description": "An upstream did not answer in time."},
}


def error_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error statuses (each an ``ErrorBody``), with what each means there."""
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


def status_for(error: ServiceError) -> int:
    """The gateway status for an upstream failure."""
    # Most specific first: a RetryExhausted error is also its last attempt's class.
    if isinstance(error, ServiceTimeoutError):
        return 504
    if isinstance(error, ServiceUnavailableError):
        return 503
    if isinstance(error, ResourceNotFoundError):
        return 404
    if isinstance(error, ClientValidationError | InvalidRequestError):
        return 422  # the caller's input: refused by the upstream, or by the client before sending
    if isinstance(error, AuthenticationError):
        return 502  # our credentials, not the caller's: the gateway is at fault
    return 502


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _problems(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """The field problems (loc, msg, type; never the input) and a one-line summary of them."""
    problems = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", ""))[:_MAX_MSG],
            "type": str(e.get("type", "")),
        }
        for e in errors[:_MAX_PROBLEMS]
    ]
    detail = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems[:_DETAIL_PROBLEMS])
    if len(errors) > _DETAIL_PROBLEMS:
        detail += f"; and {len(errors) - _DETAIL_PROBLEMS} more"
    return detail or "the request is invalid", problems


def request_error(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 for one parameter a route refused itself, answered like FastAPI's own (``errors`` names it)."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind}])


def _answer(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> JsonBytesResponse:
    # Last line of defence: text from an upstream or from the caller's own input must not
    # carry a registered secret out. An error answer is not the hot path.
    clean = {k: scrub(v) for k, v in (headers or {}).items()}
    return JsonBytesResponse(scrub_deep(body), status_code=status, headers=clean)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # noqa: S101 - registered for ServiceError only
    status = status_for(exc)
    body: dict[str, Any] = {"detail": str(exc), "code": _CODES.get(status, "error"), "errors": None}
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidRequestError):
        body["code"] = "invalid_request"
    if isinstance(exc, ClientError):
        body.update(exc.context())
        if status in (404, 422):  # the upstream's reason is the caller's answer
            if status == 422 and exc.detail:
                body["detail"] = exc.detail
            if exc.code:
                body["code"] = exc.code
        if exc.retry_after is not None and status == 503:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return _answer(body, status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's and the routes' HTTPExceptions (404 for an unknown path, 405 with its
    # Allow header) in the one shape.
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    status, headers = exc.status_code, dict(exc.headers or {})
    if status in (204, 304):  # no body allowed
        return Response(status_code=status, headers={k: scrub(v) for k, v in headers.items()})
    detail: Any = exc.detail
    if detail is None or isinstance(detail, str):
        detail = detail or HTTPStatus(status).phrase
    # else: a route of your own chose a structured detail; it is kept as it is.
    body = {"detail": detail, "code": _CODES.get(status, f"http_{status}"), "errors": None}
    return _answer(body, status, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    # FastAPI's 422 echoes the input it refused; this one names the fields, never the values.
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    detail, problems = _problems(exc.errors())
    return _answer({"detail": detail, "code": "validation_error", "errors": problems}, 422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping, and the one shape of every error answer, on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
