"""Reading a response: a bounded body, JSON/text decoding, and the status-to-error table."""

from __future__ import annotations

from typing import Any, Unpack

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from app.clients.exceptions import ClientError, ErrorContext, ResponseDecodeError, error_for_status
from app.resilience.retry import parse_retry_after

__all__ = ["BodyTooLargeError", "decode_body", "read_body", "status_error"]

_CHUNK = 64 * 1024


class BodyTooLargeError(Exception):
    """The body is over the configured limit; reading stopped there."""


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or ``BodyTooLargeError`` as soon as more than ``limit`` bytes arrive."""
    length = resp.content_length
    if length is not None:
        if length > limit:
            raise BodyTooLargeError
        if length <= _CHUNK:
            # The common small reply: one read. aiohttp stops at Content-Length.
            return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def decode_body(status: int, content_type: str, charset: str | None, body: bytes) -> Any:
    """JSON for ``application/json`` and ``+json``; None when empty or 204; else text.

    Raises ``ValueError`` when a JSON content type carries something else.
    """
    if status == 204 or not body:
        return None
    if _is_json(content_type):
        return orjson.loads(body)
    return body.decode(charset or "utf-8", errors="replace")


def _error_fields(content_type: str, body: bytes) -> tuple[str | None, str | None]:
    # Upstreams answer errors as {"detail": "...", "code": "..."}; anything else is ignored.
    if not body or not _is_json(content_type):
        return None, None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    detail, code = data.get("detail"), data.get("code")
    detail_text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    return detail_text[:1000] if detail is not None else None, code if isinstance(code, str) else None


def status_error(
    status: int,
    headers: CIMultiDictProxy[str],
    content_type: str,
    body: bytes,
    **context: Unpack[ErrorContext],
) -> ClientError:
    """The typed error for a non-2xx response (DESIGN §4)."""
    cls = error_for_status(status)
    detail, code = _error_fields(content_type, body)
    retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    location = headers.get("Location") if 300 <= status < 400 else None
    return cls(
        f"HTTP {status}" + (f" {code}" if code else ""),
        status=status,
        retry_after=retry_after,
        detail=detail,
        code=code,
        location=location,
        **context,
    )


def decode_error(message: str, status: int, **context: Unpack[ErrorContext]) -> ResponseDecodeError:
    """A ``ResponseDecodeError`` for a body that is too large or not what it claims."""
    return ResponseDecodeError(message, status=status, **context)
