"""Storing responses (RFC 9111 §3, §3.5): whether a response may enter the store, and why not."""

from __future__ import annotations

from app.cache.directives import parse_cache_control
from app.cache.headers import HeaderInput, Headers, first_header, header_values, normalize_headers
from app.cache.policy import DEFAULT_POLICY, HEURISTIC_STATUSES, CachePolicy
from app.cache.vary import vary_fields

__all__ = ["is_storable", "why_not_storable"]


def why_not_storable(
    *,
    method: str,
    status: int,
    request_headers: HeaderInput | None,
    response_headers: HeaderInput,
    policy: CachePolicy = DEFAULT_POLICY,
    authenticated: bool | None = None,
) -> str | None:
    """None when the response may be stored, else a short reason (a metric label, never a secret).

    ``authenticated`` says the request carried a credential; None infers it from an
    Authorization field. The rules, in order:

    - the method is one the policy caches (GET and HEAD by default);
    - the status is final and understood: not 1xx, not 206 (no range support), not 304
      (a 304 updates a stored response, §4.3.4, it is not one);
    - no ``no-store`` in the request or the response (§5.2.1.5, §5.2.2.5);
    - a shared cache stores no unqualified ``private`` response (§5.2.2.7; a qualified one
      is stored without the fields it names);
    - a shared cache stores an authenticated request's response only with ``public``,
      ``s-maxage`` or ``must-revalidate`` (§3.5);
    - ``Vary: *`` is not stored: it could never be selected (§4.1);
    - the response says it may be cached: ``public``, ``Expires``, ``max-age``,
      ``s-maxage`` (shared), ``private`` (not shared), or a heuristically cacheable status.
    """
    req = normalize_headers(request_headers)
    resp = normalize_headers(response_headers)
    if method.strip().upper() not in policy.methods:
        return "method"
    if status < 200 or status in {206, 304}:
        return "status"
    if parse_cache_control(header_values(req, "cache-control")).no_store:
        return "no-store"
    if authenticated is None:
        authenticated = first_header(req, "authorization") is not None
    return _response_reason(status, resp, policy, authenticated=authenticated)


def _response_reason(status: int, resp: Headers, policy: CachePolicy, *, authenticated: bool) -> str | None:
    cc = parse_cache_control(header_values(resp, "cache-control"))
    checks = (
        (cc.no_store, "no-store"),
        (policy.shared and cc.private, "private"),
        (
            policy.shared
            and authenticated
            and not (cc.public or cc.s_maxage is not None or cc.must_revalidate),
            "authenticated",
        ),
        (vary_fields(resp) is None, "vary-star"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    allowed = (
        cc.public
        or first_header(resp, "expires") is not None
        or cc.max_age is not None
        or (policy.shared and cc.s_maxage is not None)
        or (not policy.shared and (cc.private or cc.private_qualified))
        or status in HEURISTIC_STATUSES
    )
    return None if allowed else "not-cacheable"


def is_storable(
    *,
    method: str,
    status: int,
    request_headers: HeaderInput | None,
    response_headers: HeaderInput,
    policy: CachePolicy = DEFAULT_POLICY,
    authenticated: bool | None = None,
) -> bool:
    """The response may be stored (``why_not_storable`` found no reason against it)."""
    return (
        why_not_storable(
            method=method,
            status=status,
            request_headers=request_headers,
            response_headers=response_headers,
            policy=policy,
            authenticated=authenticated,
        )
        is None
    )
