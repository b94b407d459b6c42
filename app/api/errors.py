"""Maps client errors to gateway responses (DESIGN §6), in one place."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request

from app.api.responses import JsonBytesResponse
from app.clients.exceptions import (
    AuthenticationError,
    ClientError,
    ClientValidationError,
    ResourceNotFoundError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)

__all__ = ["install_error_handlers", "status_for"]


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
    return JsonBytesResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
