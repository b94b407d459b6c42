"""What a call sends: headers, query and JSON body, encoded once per call or refused as unsendable."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp.hdrs import ACCEPT, CONTENT_TYPE, X_REQUEST_ID
from aiohttp.hdrs import ACCEPT_ENCODING as ACCEPT_ENCODING_NAME
from multidict import CIMultiDict, istr
from pydantic import BaseModel
from yarl import URL

from app.auth import Credentials, credentials_from_config, static_credentials
from app.clients.config import ClientConfig
from app.clients.decoding import ACCEPT_ENCODING
from app.observability.metrics import MetricFamilies
from app.redaction import register_secret
from app.resilience.clock import Clock

__all__ = ["UnsendableError", "call_credentials", "client_headers", "encode_request"]

# RFC 9110 §5.1: a field name is a token. A value holds no CR, LF, NUL or other control
# character (HTAB aside), and no lone surrogate (no encoding can send one).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


# The header names every call sets are folded once (aiohttp.hdrs' names are istr, and
# this one too): a CIMultiDict does not fold an istr again.
_IDEMPOTENCY_KEY = istr("Idempotency-Key")


class UnsendableError(Exception):
    """A request that cannot be sent as given; the message says why, naming no value."""


def client_headers(config: ClientConfig) -> CIMultiDict[str]:
    """The headers every call of a client sends: its API key and static ``auth`` (registered as secrets).

    A ``CIMultiDict``, as each call's copy is: aiohttp takes one as it is, where it would
    convert a dict into a second one that lives as long as the call (~0.5 KB a call in flight).
    """
    # Accept-Encoding: only what decoding.py decodes in bounded steps (aiohttp's own
    # decoding is switched off per request by the transport).
    headers: CIMultiDict[str] = CIMultiDict(
        {ACCEPT: "application/json", ACCEPT_ENCODING_NAME: ACCEPT_ENCODING}
    )
    if config.api_key is not None:
        key = config.api_key.get_secret_value()
        register_secret(key)
        headers[istr(config.api_key_header)] = key
    static = static_credentials(config.auth)
    if static is not None:
        headers[istr(static.header)] = static.static_value
    return headers


def call_credentials(
    config: ClientConfig, clock: Clock, families: MetricFamilies | None
) -> Credentials | None:
    """The credentials a client asks for per call (a token that changes); None if its fixed headers do."""
    if config.auth is None:
        return None
    credentials = credentials_from_config(
        config.auth, service_name=config.service_name, clock=clock, families=families
    )
    return None if credentials.static_value is not None else credentials


def encode_request(  # noqa: PLR0917 - once per call: positional arguments cost the least
    base: CIMultiDict[str],
    request_id: str,
    url: URL,
    params: Mapping[str, Any] | None,
    json: Any,
    headers: Mapping[str, str] | None,
    idempotency_key: str | None,
) -> tuple[URL, CIMultiDict[str], bytes | None]:
    """The URL (with its query), headers and body every attempt of a call sends.

    Raises ``UnsendableError`` when any of them cannot be sent.
    """
    hdrs = base.copy()
    if headers or idempotency_key is not None:
        problem = _header_problem(headers, idempotency_key)
        if problem is not None:
            raise UnsendableError(problem)
        if headers:
            hdrs.update(headers)  # in any case: the caller's "accept" replaces our "Accept"
        if idempotency_key is not None:
            hdrs[_IDEMPOTENCY_KEY] = idempotency_key
    hdrs[X_REQUEST_ID] = request_id
    body = None
    if isinstance(json, BaseModel):
        # A typed request (a validated model): pydantic writes its JSON itself, by alias.
        body = json.model_dump_json(by_alias=True).encode()
        hdrs[CONTENT_TYPE] = "application/json"
    elif json is not None:
        try:
            body = orjson.dumps(json)
        except TypeError as exc:  # orjson.JSONEncodeError: an int past 64 bits, an unknown type
            raise UnsendableError(f"request body cannot be encoded as JSON: {exc}") from exc
        hdrs[CONTENT_TYPE] = "application/json"
    if params:
        # Encoded once here, not by aiohttp on every attempt, so a value it cannot
        # encode is a typed error before anything is sent.
        problem = _query_problem(params)
        if problem is not None:
            raise UnsendableError(problem)
        try:
            url = url.extend_query(params)
        except (TypeError, ValueError) as exc:
            raise UnsendableError("query parameters cannot be encoded") from exc
    return url, hdrs, body


#: Per-call headers the caller may not set: how the body is framed on the wire.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _header_problem(headers: Mapping[str, str] | None, idempotency_key: str | None) -> str | None:
    """Why these per-call headers cannot be sent, or None (configured ones are vetted at load)."""
    items = list(headers.items()) if headers else []
    if idempotency_key is not None:
        items.append(("Idempotency-Key", idempotency_key))
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            return "a header name is not a valid HTTP token"  # the name itself may be garbage
        if not isinstance(value, str):
            return f"header {name!r} has a {type(value).__name__} value, not text"
        if _BAD_VALUE.search(value):
            # aiohttp would refuse CR/LF only once connected (an untyped ValueError), and
            # send NUL and other control characters as they are.
            return f"header {name!r} holds CR, LF, NUL, another control character or a lone surrogate"
        if name.lower() in _FRAMING:
            # The transport frames the body it sends; a second, different framing header
            # would reach the wire beside its own, and the upstream (or a proxy on the way)
            # would pick one: a smuggled or cut request.
            return f"header {name!r} frames the body, which the client does itself"
    return None


def _query_problem(params: Any) -> str | None:
    """Why ``params`` cannot be sent as a query string, or None.

    yarl refuses the same values with a TypeError or ValueError that names the value
    (which may be a secret), and silently drops lone surrogates; this names the key only.
    """
    if not isinstance(params, Mapping):
        return "params must be a mapping"
    for key, value in params.items():
        if not isinstance(key, str) or (not key.isascii() and _BAD_VALUE.search(key)):
            return "a query parameter name is not valid text"
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                return f"query parameter {key!r} has a {type(item).__name__} value"
            if isinstance(item, float) and not math.isfinite(item):
                return f"query parameter {key!r} is not a finite number"
            if isinstance(item, str) and not item.isascii() and _BAD_VALUE.search(item):
                return f"query parameter {key!r} is not valid text (a lone surrogate)"
    return None
