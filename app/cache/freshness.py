"""Freshness lifetime (RFC 9111 §4.2.1) and, when the policy allows, heuristic freshness (§4.2.2)."""

from __future__ import annotations

from app.cache.directives import CacheControl
from app.cache.entry import CacheEntry
from app.cache.headers import first_header
from app.cache.http_dates import parse_http_date
from app.cache.policy import DEFAULT_POLICY, HEURISTIC_STATUSES, CachePolicy

__all__ = ["freshness_lifetime", "has_explicit_freshness"]


def has_explicit_freshness(cc: CacheControl, expires: str | None, policy: CachePolicy) -> bool:
    """The response states its own lifetime: s-maxage (shared), max-age, or an Expires field."""
    return (policy.shared and cc.s_maxage is not None) or cc.max_age is not None or expires is not None


def freshness_lifetime(entry: CacheEntry, policy: CachePolicy = DEFAULT_POLICY) -> float:
    """Seconds the entry is fresh for, from its own headers, first rule that applies (§4.2.1).

    1. a shared cache's ``s-maxage``; 2. ``max-age``; 3. ``Expires - Date`` (the receipt time
    without a Date; an invalid Expires such as ``0`` is in the past, §5.3); 4. heuristic
    (§4.2.2), only with ``policy.heuristic``, only without explicit freshness, for a
    heuristically cacheable status or a ``public`` response, with a Last-Modified:
    ``heuristic_fraction`` of Date - Last-Modified, at most ``heuristic_max_seconds``;
    5. otherwise 0: stale at once, reusable only after revalidation.
    """
    cc = entry.cache_control
    if policy.shared and cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    date_value = parse_http_date(first_header(entry.headers, "date"))
    if date_value is None:
        date_value = entry.response_time
    expires = first_header(entry.headers, "expires")
    if expires is not None:
        expires_value = parse_http_date(expires)
        return 0.0 if expires_value is None else max(0.0, expires_value - date_value)
    if policy.heuristic and (entry.status in HEURISTIC_STATUSES or cc.public):
        last_modified = parse_http_date(first_header(entry.headers, "last-modified"))
        if last_modified is not None and last_modified < date_value:
            guess = policy.heuristic_fraction * (date_value - last_modified)
            return min(guess, policy.heuristic_max_seconds)
    return 0.0
