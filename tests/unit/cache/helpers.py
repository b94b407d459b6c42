"""Building entries for the cache tests: wall times around RFC 9110's example date."""

from __future__ import annotations

from app.cache import CacheEntry, CachePolicy, HeaderInput, format_http_date, make_entry

#: Wall time of the exchange in the tests: Sun, 06 Nov 1994 08:49:37 GMT.
T0 = 784111777.0
DATE = format_http_date(T0)


def entry(
    headers: HeaderInput,
    *,
    status: int = 200,
    body: bytes = b"{}",
    request_headers: HeaderInput | None = None,
    request_time: float = T0,
    response_time: float = T0,
    stored_at: float = 0.0,
    policy: CachePolicy | None = None,
) -> CacheEntry:
    """An entry received at ``response_time`` (wall) and stored at monotonic ``stored_at``."""
    return make_entry(
        status=status,
        response_headers=headers,
        body=body,
        request_headers=request_headers,
        request_time=request_time,
        response_time=response_time,
        stored_at=stored_at,
        policy=policy or CachePolicy(),
    )
