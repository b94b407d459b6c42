"""A stored response: status, the headers kept for storage, body, Vary selection and its age's origin."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from app.cache.age import corrected_initial_age, current_age
from app.cache.directives import CacheControl, parse_cache_control
from app.cache.headers import HeaderInput, Headers, header_values, normalize_headers
from app.cache.policy import DEFAULT_POLICY, CachePolicy
from app.cache.vary import VaryValues, select_vary

__all__ = ["CacheEntry", "HOP_BY_HOP", "make_entry", "storable_header_fields"]

#: RFC 9110 §7.6.1 connection-specific fields: never stored (RFC 9111 §3.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer"}
)


def storable_header_fields(headers: Headers, policy: CachePolicy = DEFAULT_POLICY) -> Headers:
    """``headers`` without what §3.1 keeps out of a store.

    Removed: hop-by-hop fields and those the Connection field names; the fields a qualified
    ``no-cache="..."`` names (so the stored response may be reused without them, §5.2.2.4);
    in a shared cache, the fields a qualified ``private="..."`` names (§5.2.2.7).
    """
    cc = parse_cache_control(header_values(headers, "cache-control"))
    dropped = set(HOP_BY_HOP)
    for value in header_values(headers, "connection"):
        dropped.update(name.strip().lower() for name in value.split(","))
    dropped.update(cc.no_cache_fields)
    if policy.shared:
        dropped.update(cc.private_fields)
    return tuple((name, value) for name, value in headers if name not in dropped)


@dataclass(frozen=True)
class CacheEntry:
    """One stored response.

    ``initial_age`` is §4.2.3's corrected initial age at storage; ``stored_at`` the monotonic
    time of storage; ``response_time`` the wall time the response arrived (the Date of a
    response without one, for heuristic freshness).
    """

    status: int
    headers: Headers
    body: bytes
    vary: VaryValues
    initial_age: float
    stored_at: float
    response_time: float
    #: The request method that produced it (a HEAD response has no body to serve a GET).
    method: str = "GET"
    _size: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        header_bytes = sum(len(n) + len(v) + 4 for n, v in self.headers)
        vary_bytes = sum(len(n) + len(v or "") for n, v in self.vary or ())
        object.__setattr__(self, "_size", len(self.body) + header_bytes + vary_bytes)

    @property
    def size(self) -> int:
        """Bytes the entry accounts for: body, header names and values, recorded Vary values."""
        return self._size

    @cached_property
    def cache_control(self) -> CacheControl:
        """The stored response's Cache-Control directives."""
        return parse_cache_control(header_values(self.headers, "cache-control"))

    def header(self, name: str) -> str | None:
        """The first value of the field ``name`` (lower-case), or None."""
        values = header_values(self.headers, name)
        return values[0] if values else None

    def age(self, now: float) -> float:
        """The entry's current age at monotonic time ``now`` (§4.2.3)."""
        return current_age(self.initial_age, self.stored_at, now)


def make_entry(
    *,
    status: int,
    response_headers: HeaderInput,
    body: bytes,
    request_headers: HeaderInput | None,
    request_time: float,
    response_time: float,
    stored_at: float,
    method: str = "GET",
    policy: CachePolicy = DEFAULT_POLICY,
) -> CacheEntry:
    """An entry for a response: headers kept for storage, Vary recorded, initial age computed.

    ``request_time`` and ``response_time`` are wall-clock seconds (a ``WallClock``);
    ``stored_at`` is the monotonic time (a ``Clock``) the response arrived. Whether the
    response may be stored at all is ``why_not_storable``'s question, asked first.
    """
    headers = normalize_headers(response_headers)
    return CacheEntry(
        status=status,
        headers=storable_header_fields(headers, policy),
        body=body,
        vary=select_vary(headers, normalize_headers(request_headers)),
        initial_age=corrected_initial_age(headers, request_time, response_time),
        stored_at=stored_at,
        response_time=response_time,
        method=method.upper(),
    )
