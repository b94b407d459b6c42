"""Errors as ``{"detail": "...", "code": "..."}`` (DESIGN §6), validation ones naming the field."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["UpstreamError", "install_error_handlers"]


class UpstreamError(Exception):
    """An error answer: status, reason, a machine-readable code, and any headers it needs."""

    def __init__(self, status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    reasons = [f"{_field(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(reasons), "code": "validation_error"}, status_code=422)


async def _upstream(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UpstreamError)  # noqa: S101
    return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status, headers=exc.headers)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "error")
    return JSONResponse({"detail": str(exc.detail), "code": code}, status_code=exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    """Register the error shapes on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(UpstreamError, _upstream)
    app.add_exception_handler(StarletteHTTPException, _http)
