"""RedirectGuard: a redirect's next hop only under the base URL's origin and path prefix."""

from __future__ import annotations

import pytest
from yarl import URL

from app.clients import ClientResponseError
from app.clients.urls import RedirectGuard
from app.errors import ErrorContext

CTX: ErrorContext = {"service_name": "up", "method": "POST", "endpoint": "r"}
HERE = URL("http://up.test:8080/api/v1/r")


def _hop(status: int, location: str | None, method: str = "POST"):
    guard = RedirectGuard("http://up.test:8080/api/v1/")
    return guard.next_hop(status, location, method=method, url=HERE, body=b"{}", context=CTX)


def test_a_hop_under_the_base_url_keeps_method_and_body() -> None:
    """307 and 308 resend the same request to the new place (relative Locations resolved, fragment dropped)."""
    assert _hop(307, "other#frag") == ("POST", URL("http://up.test:8080/api/v1/other"), b"{}")
    assert _hop(308, "/api/v1/x/y") == ("POST", URL("http://up.test:8080/api/v1/x/y"), b"{}")


@pytest.mark.parametrize(("status", "method"), [(303, "PUT"), (301, "POST"), (302, "POST")])
def test_see_other_and_old_post_redirects_become_get(status, method) -> None:
    """303 (any method), and 301/302 after a POST, continue as a GET without a body."""
    assert _hop(status, "next", method) == ("GET", URL("http://up.test:8080/api/v1/next"), None)


def test_a_301_keeps_a_put() -> None:
    """301 after a method other than POST keeps it."""
    assert _hop(301, "next", "PUT")[0] == "PUT"


@pytest.mark.parametrize(
    ("location", "why", "kept"),
    [
        (None, "without Location", None),
        ("http://evil.test/api/v1/r", "cross-origin", "http://evil.test/api/v1/r"),
        ("https://up.test:8080/api/v1/r", "cross-origin", "https://up.test:8080/api/v1/r"),
        ("http://user:pw@up.test:8080/api/v1/r", "credentials", "http://up.test:8080/api/v1/r"),
        ("/api/v2/r", "outside the base URL", "/api/v2/r"),
        ("/api/v1/../admin", "outside the base URL", "/api/v1/../admin"),
        ("http://[::1/x", "malformed", "http://[::1/x"),
    ],
)
def test_a_hop_elsewhere_is_refused(location, why, kept) -> None:
    """Anywhere but under the base URL is a ClientResponseError that says why; credentials are never kept."""
    with pytest.raises(ClientResponseError, match=why) as info:
        _hop(302, location)
    assert info.value.status == 302
    assert info.value.location == kept
    assert (info.value.service_name, info.value.endpoint) == ("up", "r")
