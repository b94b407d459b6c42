"""Vary matching (RFC 9111 §4.1) and the cache key: method, URL and credential scope."""

from __future__ import annotations

import pytest

from app.cache import cache_key, normalize_headers, normalize_url, select_vary, vary_fields, vary_matches

from .helpers import entry


def h(**fields):
    return normalize_headers({k.replace("_", "-"): v for k, v in fields.items()})


def test_a_stored_response_records_the_request_headers_vary_names() -> None:
    """The entry keeps the values of the request fields named by Vary (case-insensitive names)."""
    stored = entry(
        {"Vary": "accept-encoding, Accept"}, request_headers={"Accept": "application/json", "X-Other": "1"}
    )
    assert stored.vary == (("accept", "application/json"), ("accept-encoding", None))


def test_vary_matches_the_same_values_and_refuses_others() -> None:
    """A request with the same values selects the entry; another value or a new field does not."""
    recorded = select_vary(h(Vary="Accept"), h(Accept="application/json"))
    assert vary_matches(recorded, h(Accept="application/json"))
    assert not vary_matches(recorded, h(Accept="text/html"))
    assert not vary_matches(recorded, h())


def test_an_absent_field_matches_only_an_absent_field() -> None:
    """A field absent from the original request must be absent from the new one."""
    recorded = select_vary(h(Vary="Accept-Language"), h())
    assert vary_matches(recorded, h(Accept="x"))
    assert not vary_matches(recorded, h(Accept_Language="fr"))


def test_vary_values_are_normalized_for_whitespace_and_line_splits() -> None:
    """§4.1: values may be normalized: spaces and several lines of one list field compare equal."""
    recorded = select_vary(h(Vary="Accept"), normalize_headers([("Accept", "a,   b")]))
    assert vary_matches(recorded, normalize_headers([("Accept", "a"), ("Accept", "b")]))


def test_vary_star_never_matches() -> None:
    """§4.1: Vary: * always fails to match, even the same request."""
    assert vary_fields(h(Vary="*")) is None
    recorded = select_vary(h(Vary="*"), h(Accept="x"))
    assert recorded is None
    assert not vary_matches(recorded, h(Accept="x"))


def test_no_vary_matches_every_request() -> None:
    """A response without Vary is selected by any request."""
    assert vary_matches(select_vary(h(), h(Accept="x")), h(Accept="y"))


def test_two_credential_scopes_never_share_a_key() -> None:
    """The same request under two credentials gives two keys and two digests."""
    a = cache_key("GET", "https://api.example/prices?tf=1h", "client-a")
    b = cache_key("GET", "https://api.example/prices?tf=1h", "client-b")
    assert a != b
    assert a.digest != b.digest


def test_the_method_is_part_of_the_key() -> None:
    """GET and HEAD of one URL are different entries; the method is case-insensitive."""
    assert cache_key("get", "http://x/a", "s") == cache_key("GET", "http://x/a", "s")
    assert cache_key("HEAD", "http://x/a", "s") != cache_key("GET", "http://x/a", "s")


def test_urls_are_normalized() -> None:
    """Scheme and host case, a default port, an empty path and a fragment do not split entries; the query does."""
    assert normalize_url("HTTPS://API.Example:443?q=1#frag") == "https://api.example/?q=1"
    assert normalize_url("http://h:8080/p") == "http://h:8080/p"
    assert cache_key("GET", "http://h/p?a=1", "s") != cache_key("GET", "http://h/p?a=2", "s")


def test_a_url_with_userinfo_is_refused() -> None:
    """Credentials belong in the scope, never in a key."""
    with pytest.raises(ValueError, match="userinfo"):
        normalize_url("https://user:pw@h/p")


def test_the_repr_does_not_show_the_scope() -> None:
    """A logged key shows a fingerprint of the scope, not the scope."""
    key = cache_key("GET", "http://h/p", "tenant-secret-scope")
    assert "tenant-secret-scope" not in repr(key)
    assert "http://h/p" in repr(key)
