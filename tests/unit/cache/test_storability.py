"""Storing responses (RFC 9111 §3, §3.5): methods, status codes, no-store, private, authentication, Vary."""

from __future__ import annotations

import pytest

from app.cache import CachePolicy, is_storable, why_not_storable

SHARED = CachePolicy(shared=True)
PRIVATE = CachePolicy(shared=False)


def reason(
    response_headers, *, method="GET", status=200, request_headers=None, policy=SHARED, authenticated=None
):
    return why_not_storable(
        method=method,
        status=status,
        request_headers=request_headers,
        response_headers=response_headers,
        policy=policy,
        authenticated=authenticated,
    )


def test_a_fresh_get_response_is_storable() -> None:
    """GET 200 with max-age is stored."""
    assert reason({"Cache-Control": "max-age=60"}) is None
    assert is_storable(
        method="get", status=200, request_headers=None, response_headers={"Cache-Control": "max-age=1"}
    )


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unsafe_methods_are_not_stored_by_default(method) -> None:
    """Only the policy's methods (GET, HEAD) are cached."""
    assert reason({"Cache-Control": "max-age=60"}, method=method) == "method"


def test_a_policy_may_mark_another_method_cacheable() -> None:
    """A caller that marks POST cacheable gets it stored."""
    policy = CachePolicy(methods=frozenset({"GET", "POST"}))
    assert reason({"Cache-Control": "max-age=60"}, method="POST", policy=policy) is None


@pytest.mark.parametrize("status", [100, 206, 304])
def test_interim_partial_and_not_modified_are_not_stored(status) -> None:
    """1xx is not final; 206 needs range support; a 304 updates an entry, it is not one."""
    assert reason({"Cache-Control": "max-age=60"}, status=status) == "status"


def test_no_store_in_the_response_or_the_request() -> None:
    """§5.2.2.5 and §5.2.1.5: no-store on either side forbids storing."""
    assert reason({"Cache-Control": "max-age=60, no-store"}) == "no-store"
    assert (
        reason({"Cache-Control": "max-age=60"}, request_headers={"Cache-Control": "no-store"}) == "no-store"
    )


def test_private_is_not_stored_by_a_shared_cache_but_is_by_a_private_one() -> None:
    """§5.2.2.7: a shared cache must not store private; a private cache may, even without max-age."""
    assert reason({"Cache-Control": "private, max-age=60"}) == "private"
    assert reason({"Cache-Control": "private"}, status=500, policy=PRIVATE) is None


def test_qualified_private_is_stored_by_a_shared_cache() -> None:
    """private="field" only limits the named fields (they are dropped when storing)."""
    assert reason({"Cache-Control": 'private="x-user", max-age=60'}) is None


@pytest.mark.parametrize("directive", ["public", "s-maxage=60", "must-revalidate, max-age=60"])
def test_authenticated_responses_in_a_shared_cache_need_public_s_maxage_or_must_revalidate(directive) -> None:
    """§3.5: with Authorization, a shared cache stores only with public, s-maxage or must-revalidate."""
    assert reason({"Cache-Control": directive}, request_headers={"Authorization": "Bearer t"}) is None


def test_an_authenticated_response_with_only_max_age_is_not_stored_by_a_shared_cache() -> None:
    """§3.5: max-age alone does not allow a shared cache to store an authenticated response."""
    headers = {"Cache-Control": "max-age=60"}
    assert reason(headers, request_headers={"Authorization": "Bearer t"}) == "authenticated"
    assert reason(headers, authenticated=True) == "authenticated"  # an API key header, as the caller says
    assert reason(headers, request_headers={"Authorization": "Bearer t"}, policy=PRIVATE) is None


def test_vary_star_is_not_stored() -> None:
    """Vary: * could never be selected (§4.1), so it is not stored."""
    assert reason({"Cache-Control": "max-age=60", "Vary": "Accept, *"}) == "vary-star"


def test_a_response_without_any_permission_to_cache() -> None:
    """A 500 without explicit freshness or public is not storable; with public it is."""
    assert reason({}, status=500) == "not-cacheable"
    assert reason({"Cache-Control": "public"}, status=500) is None
    assert reason({"Expires": "0"}, status=500) is None  # storable, and already stale


def test_a_heuristically_cacheable_status_is_storable_without_freshness() -> None:
    """A 200 or 404 with no freshness information is storable (stale, for revalidation)."""
    assert reason({"ETag": '"v1"'}) is None
    assert reason({}, status=404) is None
