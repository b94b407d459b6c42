"""Conditional revalidation (RFC 9111 §4.3): validators sent, a 304's headers merged, the age restarted."""

from __future__ import annotations

from app.cache import (
    CachePolicy,
    conditional_headers,
    format_http_date,
    freshen,
    freshness_lifetime,
    validators_match,
)

from .helpers import DATE, T0, entry

LAST_MODIFIED = format_http_date(T0 - 3600)


def test_both_validators_are_sent() -> None:
    """§4.3.1: If-None-Match from ETag and If-Modified-Since from Last-Modified."""
    stored = entry({"ETag": '"v1"', "Last-Modified": LAST_MODIFIED})
    assert conditional_headers(stored) == {"If-None-Match": '"v1"', "If-Modified-Since": LAST_MODIFIED}


def test_no_validator_means_no_conditional_request() -> None:
    """Without ETag or Last-Modified there is nothing to revalidate with."""
    assert conditional_headers(entry({"Cache-Control": "max-age=1"})) == {}


def test_a_304_merges_its_headers_into_the_stored_response() -> None:
    """§4.3.4 / §3.2: the 304's fields replace the stored ones, others stay, Content-Length is kept."""
    stored = entry(
        {
            "Content-Type": "application/json",
            "Content-Length": "2",
            "ETag": '"v1"',
            "Cache-Control": "max-age=10",
            "Date": DATE,
            "X-Keep": "yes",
        },
        body=b"{}",
    )
    not_modified = {
        "ETag": '"v1"',
        "Cache-Control": "max-age=600",
        "Date": format_http_date(T0 + 100),
        "Content-Length": "0",
        "Connection": "close, x-hop",
        "X-Hop": "dropped",
        "X-New": "added",
    }
    assert validators_match(stored, not_modified)
    fresh = freshen(stored, not_modified, request_time=T0 + 100, response_time=T0 + 100, stored_at=100.0)
    headers = dict(fresh.headers)
    assert headers["cache-control"] == "max-age=600"
    assert headers["date"] == format_http_date(T0 + 100)
    assert headers["content-length"] == "2"
    assert headers["content-type"] == "application/json"
    assert headers["x-keep"] == "yes"
    assert headers["x-new"] == "added"
    assert "x-hop" not in headers
    assert "connection" not in headers
    assert [name for name, _ in fresh.headers].count("cache-control") == 1
    assert fresh.body == b"{}"
    assert freshness_lifetime(fresh) == 600


def test_freshening_restarts_the_age_from_the_304_exchange() -> None:
    """After a 304 the entry's age is the 304's age, counted from its arrival."""
    stored = entry({"ETag": '"v1"', "Cache-Control": "max-age=10", "Date": DATE}, stored_at=0.0)
    assert stored.age(50.0) == 50
    fresh = freshen(
        stored, {"ETag": '"v1"', "Age": "3"}, request_time=T0 + 50, response_time=T0 + 50, stored_at=50.0
    )
    assert fresh.age(50.0) == 3
    assert fresh.age(52.0) == 5


def test_validators_match_weakly_on_etag_and_exactly_on_last_modified() -> None:
    """A weak ETag matches its strong twin; another ETag does not; Last-Modified must be equal."""
    stored = entry({"ETag": '"v1"', "Last-Modified": LAST_MODIFIED})
    assert validators_match(stored, {"ETag": 'W/"v1"'})
    assert not validators_match(stored, {"ETag": '"v2"'})
    assert validators_match(stored, {"Last-Modified": LAST_MODIFIED})
    assert not validators_match(stored, {"Last-Modified": format_http_date(T0)})
    assert not validators_match(entry({}), {"ETag": '"v1"'})


def test_a_304_without_validators_updates_the_entry_it_revalidated() -> None:
    """With one stored response being validated, a validator-less 304 applies to it."""
    assert validators_match(entry({"ETag": '"v1"'}), {"Cache-Control": "max-age=5"})


def test_a_304_cannot_reintroduce_fields_a_qualified_no_cache_or_private_excludes() -> None:
    """§3.1: fields named by no-cache="..." (and private="..." in a shared cache) are never stored."""
    stored = entry(
        {
            "Cache-Control": 'no-cache="set-cookie", private="x-user", max-age=5',
            "Set-Cookie": "a=1",
            "X-User": "u",
        }
    )
    assert "set-cookie" not in dict(stored.headers)
    assert "x-user" not in dict(stored.headers)
    fresh = freshen(
        stored,
        {
            "Cache-Control": 'no-cache="set-cookie", private="x-user", max-age=5',
            "Set-Cookie": "b=2",
            "X-User": "v",
        },
        request_time=T0,
        response_time=T0,
        stored_at=1.0,
    )
    assert "set-cookie" not in dict(fresh.headers)
    assert "x-user" not in dict(fresh.headers)
    kept = entry({"Cache-Control": 'private="x-user"', "X-User": "u"}, policy=CachePolicy(shared=False))
    assert dict(kept.headers)["x-user"] == "u"
