"""Conditional revalidation (RFC 9111 §4.3): validators to send, and a 304 freshening a stored response."""

from __future__ import annotations

import dataclasses

from app.cache.age import corrected_initial_age
from app.cache.entry import CacheEntry, storable_header_fields
from app.cache.headers import HeaderInput, Headers, first_header, normalize_headers
from app.cache.policy import DEFAULT_POLICY, CachePolicy

__all__ = [
    "NOT_MERGED",
    "conditional_headers",
    "freshen",
    "merge_not_modified",
    "validators_match",
]

#: Fields a 304 never replaces in the stored response (§3.2): the stored body depends on them.
NOT_MERGED = frozenset({"content-length", "content-encoding", "content-range", "content-type"})


def conditional_headers(entry: CacheEntry) -> dict[str, str]:
    """The request fields that revalidate ``entry`` (§4.3.1).

    If-None-Match from its ETag and If-Modified-Since from its Last-Modified, both when it
    has both; empty when it has neither (then the request goes out unconditional).
    """
    found: dict[str, str] = {}
    etag = entry.header("etag")
    if etag:
        found["If-None-Match"] = etag
    last_modified = entry.header("last-modified")
    if last_modified:
        found["If-Modified-Since"] = last_modified
    return found


def _opaque(etag: str) -> str:
    """An entity tag without its weakness flag: for the weak comparison (RFC 9110 §8.8.3.2)."""
    return etag[2:] if etag.startswith("W/") else etag


def validators_match(entry: CacheEntry, not_modified_headers: HeaderInput) -> bool:
    """The 304 is about ``entry`` (§4.3.4).

    Its ETag matches the stored one (weak comparison), else its Last-Modified equals the
    stored one; a 304 with neither validator updates the one entry it revalidated (a single
    stored response is validated at a time here).
    """
    headers = normalize_headers(not_modified_headers)
    etag = first_header(headers, "etag")
    if etag is not None:
        stored = entry.header("etag")
        return stored is not None and _opaque(stored) == _opaque(etag)
    last_modified = first_header(headers, "last-modified")
    if last_modified is not None:
        return entry.header("last-modified") == last_modified
    return True


def merge_not_modified(stored: Headers, not_modified_headers: HeaderInput, policy: CachePolicy) -> Headers:
    """The stored headers updated by a 304's (§3.2, §4.3.4).

    Each field the 304 carries replaces the stored field of that name, except Content-Length
    and the fields describing the stored body, and except what §3.1 keeps out of a store
    (hop-by-hop, the fields a qualified no-cache or, shared, private names).
    """
    incoming = storable_header_fields(normalize_headers(not_modified_headers), policy)
    incoming = tuple((n, v) for n, v in incoming if n not in NOT_MERGED)
    replaced = {name for name, _ in incoming}
    kept = tuple((n, v) for n, v in stored if n not in replaced)
    return kept + incoming


def freshen(
    entry: CacheEntry,
    not_modified_headers: HeaderInput,
    *,
    request_time: float,
    response_time: float,
    stored_at: float,
    policy: CachePolicy = DEFAULT_POLICY,
) -> CacheEntry:
    """``entry`` after a matching 304: merged headers, and its age restarted from the 304's exchange.

    Call ``validators_match`` first; a 304 that does not match leaves the entry unusable and
    the request is sent again unconditionally.
    """
    headers = merge_not_modified(entry.headers, not_modified_headers, policy)
    return dataclasses.replace(
        entry,
        headers=headers,
        initial_age=corrected_initial_age(
            normalize_headers(not_modified_headers), request_time, response_time
        ),
        stored_at=stored_at,
        response_time=response_time,
    )
