"""Maps client errors to gateway responses (DESIGN §6), in one place; no error answer carries a secret."""

from __future__ import annotations

import math

import orjson
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.api.responses import JsonBytesResponse
from app.errors import (
    AuthenticationError,
    ClientError,
    ClientValidationError,
    ResourceNotFoundError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from app.redaction import contains_secret, scrub, scrub_deep

__all__ = ["install_error_handlers", "status_for"]

# Headers the scrubbed copy of a response computes again for its new body.
_BODY_HEADERS = frozenset({"content-length", "content-type"})


def status_for(error: ServiceError) -> int:
    """The gateway status for an upstream failure."""
    # Most specific first: a RetryExhausted error is also its last attempt's class.
    if isinstance(error, ServiceTimeoutError):
        return 504
    if isinstance(error, ServiceUnavailableError):
        return 503
    if isinstance(error, ResourceNotFoundError):
        return 404
    if isinstance(error, ClientValidationError):
        return 422  # the upstream rejected what the caller asked for
    if isinstance(error, AuthenticationError):
        return 502  # our credentials, not the caller's: the gateway is at fault
    return 502


async def _service_error(request: Request, exc: Exception) -> JsonBytesResponse:
    assert isinstance(exc, ServiceError)  # noqa: S101 - registered for ServiceError only
    status = status_for(exc)
    body: dict[str, object] = {"detail": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, ClientError):
        body.update(exc.context())
        if status == 422 and exc.detail:
            body["detail"] = exc.detail  # the upstream's reason is the caller's answer
        if exc.code:
            body["code"] = exc.code
        if exc.retry_after is not None and status == 503:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    # Last line of defence: the error scrubs itself, but a ServiceError that is not a
    # ClientError, or text added above, must not carry a secret out either. An error
    # answer is not the hot path; a walk over a dozen fields costs microseconds.
    return JsonBytesResponse(scrub_deep(body), status_code=status, headers=headers)


def _scrubbed(response: Response) -> Response:
    """``response`` as is, or a copy with every registered secret masked in its body and headers."""
    body = bytes(response.body)
    headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
    if not contains_secret(body.decode("utf-8", "replace")) and not any(
        contains_secret(v) for v in headers.values()
    ):
        return response
    headers = {k: scrub(v) for k, v in headers.items()}
    if not body:
        return Response(status_code=response.status_code, headers=headers)
    return JsonBytesResponse(
        scrub_deep(orjson.loads(body)), status_code=response.status_code, headers=headers
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI's own answer, scrubbed: a route may put upstream text in an HTTPException.
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    return _scrubbed(await http_exception_handler(request, exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    # FastAPI's 422 echoes the input it refused; scrubbed like any other error answer.
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    return _scrubbed(await request_validation_exception_handler(request, exc))


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping, and the scrubbing of FastAPI's own error answers, on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
