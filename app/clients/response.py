"""What a response means, whatever transport read it: the decoded body, or the typed error for it."""

from __future__ import annotations

from typing import Any, NoReturn, Unpack

import orjson
from aiohttp import hdrs
from aiohttp.helpers import parse_content_type
from multidict import CIMultiDictProxy

from app.clients.decoding import BodyDecodingError, BodyTooLargeError
from app.clients.transport import RAW_CONDITIONAL
from app.errors import ClientError, ErrorContext, ResponseDecodeError, error_for_status
from app.resilience.pipeline import CallRecord
from app.resilience.retry import MAX_RETRY_AFTER, parse_retry_after

__all__ = [
    "BodyDecodingError",
    "BodyTooLargeError",
    "RawResponse",
    "answer",
    "decode_body",
    "decode_error",
    "header_text",
    "media_type",
    "status_error",
    "unreadable",
]

#: Upstream header text kept on an error (``location``): enough for any real URL.
_MAX_HEADER_TEXT = 2048


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def decode_body(status: int, content_type: str, charset: str | None, body: bytes) -> Any:
    """JSON for ``application/json`` and ``+json``; None when empty or 204; else text.

    Raises ``ValueError`` when a JSON content type carries something else. Text in a
    charset Python cannot decode with (unknown, not a text codec, garbage) is read as UTF-8.
    """
    if status == 204 or not body:
        return None
    if content_type == "application/json" or _is_json(content_type):  # the common one without a call
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


_NOT_DECODED: Any = object()


class RawResponse:
    """A 2xx or a 304 as read, for the response cache: status, headers (lower-case names), body."""

    __slots__ = ("_decoded", "body", "charset", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        content_type: str,
        charset: str | None,
        body: bytes,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.charset = charset
        self.body = body
        self._decoded: Any = _NOT_DECODED

    @classmethod
    def read(
        cls, status: int, headers: CIMultiDictProxy[str], content_type: str, charset: str | None, body: bytes
    ) -> RawResponse:
        """A response's parts, its header values made safe to keep (see ``header_text``)."""
        fields = tuple((name.lower(), header_text(value) or "") for name, value in headers.items())
        return cls(status, fields, content_type, charset, body)

    @property
    def is_json(self) -> bool:
        """A JSON body (``application/json`` or ``+json``), not empty, not a 204's."""
        return self.status != 204 and bool(self.body) and _is_json(self.content_type)

    def check(self, context: ErrorContext) -> None:
        """``ResponseDecodeError`` unless the body decodes; the value is kept for the next ``value``."""
        self._decoded = self.value(context)

    def value(self, context: ErrorContext) -> Any:
        """The decoded body, as ``answer`` gives it for a 2xx; ``ResponseDecodeError`` when it is not JSON.

        Each call gives a value of its own (callers may change theirs), except that the
        one ``check`` decoded is handed to the first caller instead of decoding again.
        """
        decoded = self._decoded
        if decoded is not _NOT_DECODED:
            self._decoded = _NOT_DECODED
            return decoded
        try:
            return decode_body(self.status, self.content_type, self.charset, self.body)
        except ValueError as exc:
            raise decode_error("body is not valid JSON", self.status, **context) from exc

    def __repr__(self) -> str:
        return f"RawResponse(status={self.status}, {len(self.body)} bytes)"


def decode_error(message: str, status: int, **context: Unpack[ErrorContext]) -> ResponseDecodeError:
    """A ``ResponseDecodeError`` for a body that is too large or not what it claims."""
    return ResponseDecodeError(message, status=status, **context)


def media_type(headers: CIMultiDictProxy[str]) -> tuple[str, str | None]:
    """An answer's media type and charset, as aiohttp reads them (its own parser, cached).

    One call for both, where aiohttp's ``content_type`` and ``charset`` properties each
    look the header up and compare it with the one they parsed last.
    """
    raw = headers.get(hdrs.CONTENT_TYPE)
    if raw is None:
        return "application/octet-stream", None  # RFC 9110's default, as aiohttp's
    media, params = parse_content_type(raw)
    return media, params.get("charset")


def answer(  # noqa: PLR0917 - once per call: positional arguments cost the least
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes,
    max_retry_after: float,
    record: CallRecord,
    whole: int = 0,
) -> Any:
    """A whole response's value: a 2xx's decoded body; otherwise its status's typed error is raised.

    With ``whole`` (the request's ``raw``: ``RAW_BODY`` or ``RAW_CONDITIONAL``), a 2xx (and
    for ``RAW_CONDITIONAL`` a 304) comes back as a ``RawResponse``, its body not decoded.
    The error names the call from ``record`` (its context built only then, not per answer).
    Both transports end here, so they read the media type and charset the same way.
    """
    content_type, charset = media_type(headers)
    if whole and (200 <= status < 300 or (status == 304 and whole == RAW_CONDITIONAL)):
        return RawResponse.read(status, headers, content_type, charset, body)
    if not 200 <= status < 300:  # a final 1xx (or a status under 100) is no answer either
        raise status_error(
            status, headers, content_type, body, max_retry_after=max_retry_after, **record.context()
        )
    try:
        return decode_body(status, content_type, charset, body)
    except ValueError as exc:
        # The content type is the upstream's text: it is not repeated in the message.
        raise decode_error("body is not valid JSON", status, **record.context()) from exc


def unreadable(
    exc: BodyTooLargeError | BodyDecodingError,
    status: int,
    headers: CIMultiDictProxy[str],
    *,
    limit: int,
    max_retry_after: float,
    context: ErrorContext,
) -> NoReturn:
    """Raise the error for a body that could not be read within ``limit``: its status's, or a decode error."""
    if not 200 <= status < 300:
        raise status_error(status, headers, "", b"", max_retry_after=max_retry_after, **context) from exc
    if isinstance(exc, BodyTooLargeError):
        raise decode_error(f"body over the {limit}-byte limit", status, **context) from None
    raise decode_error(f"body cannot be decoded: {exc}", status, **context) from exc
