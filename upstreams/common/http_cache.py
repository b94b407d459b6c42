"""HTTP caching of the upstreams' reads: Cache-Control, strong ETags and 304s (RFC 9110 §13, RFC 9111)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse

__all__ = ["Freshness", "cached_json", "if_none_match_matches", "parse_if_none_match", "strong_etag"]

#: One If-None-Match list element (RFC 9110 §8.8.3, §13.1.2): ``*`` or an entity-tag, or
#: nothing at all (§5.6.1.2: empty list elements are accepted and ignored), then a comma or
#: the end. An opaque tag may hold commas (etagc is %x21 / %x23-7E / obs-text), so the
#: field is scanned element by element, never split on commas. ``W/`` is case-sensitive.
_ELEMENT = re.compile(r'[ \t]*(?:(\*)|(?:W/)?("[\x21\x23-\x7e\x80-\xff]*"))?[ \t]*(?:,|\Z)')


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a cache may reuse an answer (RFC 9111 §5.2.2.1, RFC 5861), in seconds."""

    #: Fresh for this long: reused without asking the upstream.
    max_age: int
    #: Then served stale for up to this long while one background revalidation runs.
    stale_while_revalidate: int
    #: Then, while the upstream fails (5xx, unreachable), served stale for up to this long.
    stale_if_error: int

    @property
    def cache_control(self) -> str:
        """The ``Cache-Control`` field value.

        Always ``public``: the upstreams may require a credential (bearer JWT or API key),
        and a shared cache (the gateway's Redis store, shared by its replicas) may store a
        response to an authenticated request only with ``public``, ``s-maxage`` or
        ``must-revalidate`` (RFC 9111 §3.5). ``public`` is the right one for the answers this
        module serves: they are the same for every caller, and ``must-revalidate`` would
        forbid the stale serving the two stale directives allow (§5.2.2.2).
        """
        return (
            f"public, max-age={self.max_age}, stale-while-revalidate={self.stale_while_revalidate}, "
            f"stale-if-error={self.stale_if_error}"
        )


def strong_etag(body: bytes) -> str:
    """A strong entity-tag for exactly these bytes: a quoted 128-bit BLAKE2b hash in hex.

    Strong, because equal tags mean byte-for-byte equal bodies (RFC 9110 §8.8.1). Derived
    from the body, not from a version counter, so every instance and every restart of the
    service gives the same tag for the same answer, and a cache can revalidate anywhere.
    """
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def parse_if_none_match(values: Sequence[str]) -> Literal["*"] | frozenset[str] | None:
    """The If-None-Match field lines as ``"*"`` or the set of quoted opaque tags (``W/`` dropped).

    None when the field is absent or malformed (not ``*`` or a list of entity-tags; ``*``
    inside a list is malformed too): the server then ignores it and sends the full answer,
    which is always a correct answer to a conditional GET.
    """
    if not values:
        return None
    # Several field lines are one comma-separated list (RFC 9110 §5.3).
    text = ", ".join(values)
    tags: set[str] = set()
    star = False
    pos = 0
    while pos < len(text):
        match = _ELEMENT.match(text, pos)
        if match is None:
            return None
        pos = match.end()
        if match[1]:
            star = True
        elif match[2]:
            tags.add(match[2])
    if star:
        return None if tags else "*"
    return frozenset(tags)


def if_none_match_matches(values: Sequence[str], etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (or is ``*``), so a GET answers 304.

    The weak comparison, as RFC 9110 §13.1.2 requires for If-None-Match: ``W/"x"`` and
    ``"x"`` match, whichever side is weak.
    """
    parsed = parse_if_none_match(values)
    if parsed is None:
        return False
    if parsed == "*":
        # The resource has a current representation (this is only asked of a 200), so "*" matches.
        return True
    return etag.removeprefix("W/") in parsed


def cached_json(request: Request, content: Any, freshness: Freshness) -> Response:
    """``content`` as a 200 JSON answer with caching headers, or a 304 when the caller holds it.

    Call it only once the answer is known to be a success: errors are raised before it and
    never carry these headers, so a cache does not keep a failure as if it were data.

    - the ETag is computed from the exact bytes sent, so it changes whenever they do;
    - no ``Vary``: the body depends on no request header (the services do not compress, and
      the answer is the same whatever the credential);
    - no ``Last-Modified``: the ETag is exact, and a date would be a weaker validator that
      can lie (a redeploy may change a body whose data ends at the same candle), so
      ``If-Modified-Since`` has nothing to be compared with and is ignored (§13.1.3);
    - the 304 carries the ETag and Cache-Control the 200 would have (§15.4.5), so a cache
      refreshes its stored copy's lifetime; ``Date`` is added by the server (uvicorn) to
      both, and setting it here too would send it twice.
    """
    # Rendered once, and this very response is the 200 sent: the tag is of the bytes on the wire.
    response = JSONResponse(content)
    etag = strong_etag(bytes(response.body))
    headers = {"cache-control": freshness.cache_control, "etag": etag}
    if if_none_match_matches(request.headers.getlist("if-none-match"), etag):
        # No body and no Content-Length or Content-Type: a 304 has no content.
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response
