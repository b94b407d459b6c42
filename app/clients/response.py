"""Reading a response: a bounded body, JSON/text decoding, and the status-to-error table."""

from __future__ import annotations

from typing import Any, Unpack

import aiohttp
import orjson
from aiohttp import hdrs
from multidict import CIMultiDictProxy

from app.clients.decoding import BodyDecoder, BodyDecodingError, BodyTooLargeError, is_identity
from app.errors import ClientError, ErrorContext, ResponseDecodeError, error_for_status
from app.resilience.retry import MAX_RETRY_AFTER, parse_retry_after

__all__ = [
    "BodyDecodingError",
    "BodyTooLargeError",
    "decode_body",
    "decode_error",
    "header_text",
    "read_body",
    "status_error",
]

_CHUNK = 64 * 1024
#: Upstream header text kept on an error (``location``): enough for any real URL.
_MAX_HEADER_TEXT = 2048


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The decoded body, or ``BodyTooLargeError`` as soon as it passes ``limit`` bytes.

    The limit is on the body after its Content-Encoding is undone (the sessions leave
    decoding to us); ``BodyDecodingError`` when that coding is unknown or the stream corrupt.
    """
    coding = resp.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and not is_identity(coding):
        return await _read_encoded(resp, coding, limit)
    try:
        length = resp.content_length
    except ValueError:  # aiohttp's parser vets it; never trust that twice
        length = None
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
            # Dropped now: the error's traceback keeps this frame alive as long as the error.
            chunks.clear()
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_encoded(resp: aiohttp.ClientResponse, coding: str, limit: int) -> bytes:
    decoder = BodyDecoder(coding, limit)
    async for chunk in resp.content.iter_chunked(_CHUNK):
        decoder.feed(chunk)
    return decoder.finish()


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def decode_body(status: int, content_type: str, charset: str | None, body: bytes) -> Any:
    """JSON for ``application/json`` and ``+json``; None when empty or 204; else text.

    Raises ``ValueError`` when a JSON content type carries something else. Text in a
    charset Python cannot decode with (unknown, not a text codec, garbage) is read as UTF-8.
    """
    if status == 204 or not body:
        return None
    if _is_json(content_type):
        return orjson.loads(body)
    if charset:
        try:
            return body.decode(charset, errors="replace")
        except (LookupError, ValueError):  # ValueError covers UnicodeError and NUL in the name
            pass
    return body.decode("utf-8", errors="replace")


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
    return (
        detail_text[:1000] if detail is not None else None,
        code[:100] if isinstance(code, str) else None,  # it goes into the message: kept short
    )


def header_text(value: str | None) -> str | None:
    """An upstream header value made safe to keep: valid text, bounded length.

    aiohttp hands over undecodable header bytes as lone surrogates, which no JSON
    encoder or log handler accepts.
    """
    if value is None:
        return None
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value[:_MAX_HEADER_TEXT]


def status_error(
    status: int,
    headers: CIMultiDictProxy[str],
    content_type: str,
    body: bytes,
    *,
    max_retry_after: float = MAX_RETRY_AFTER,
    **context: Unpack[ErrorContext],
) -> ClientError:
    """The typed error for a non-2xx response (DESIGN §4).

    ``retry_after`` is the ``Retry-After`` of a 429 or 503 when it can be used, capped
    at ``max_retry_after`` (the client passes its ``retry_max_delay``); otherwise None.
    """
    cls = error_for_status(status)
    detail, code = _error_fields(content_type, body)
    retry_after = (
        parse_retry_after(headers.get(hdrs.RETRY_AFTER), cap=max_retry_after)
        if status in (429, 503)
        else None
    )
    location = header_text(headers.get(hdrs.LOCATION)) if 300 <= status < 400 else None
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
