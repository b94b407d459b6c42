"""Freshness lifetime and age (RFC 9111 §4.2.1-§4.2.3): max-age, s-maxage, Expires, Date, Age, heuristics."""

from __future__ import annotations

import pytest

from app.cache import (
    CachePolicy,
    age_value,
    corrected_initial_age,
    format_http_date,
    freshness_lifetime,
    normalize_headers,
)

from .helpers import DATE, T0, entry

SHARED = CachePolicy(shared=True)
PRIVATE = CachePolicy(shared=False)


def test_max_age_is_the_lifetime() -> None:
    """§4.2.1: max-age gives the lifetime."""
    assert freshness_lifetime(entry({"Cache-Control": "max-age=60", "Date": DATE})) == 60


def test_s_maxage_overrides_max_age_in_a_shared_cache_only() -> None:
    """§4.2.1: a shared cache uses s-maxage first; a private cache ignores it."""
    headers = {"Cache-Control": "max-age=60, s-maxage=600"}
    assert freshness_lifetime(entry(headers), SHARED) == 600
    assert freshness_lifetime(entry(headers), PRIVATE) == 60


def test_max_age_overrides_expires() -> None:
    """§5.3: with max-age present, Expires is ignored."""
    headers = {"Cache-Control": "max-age=5", "Date": DATE, "Expires": format_http_date(T0 + 3600)}
    assert freshness_lifetime(entry(headers)) == 5


def test_expires_minus_date() -> None:
    """§4.2.1: without max-age, the lifetime is Expires - Date, whatever the local clock says."""
    headers = {"Date": DATE, "Expires": format_http_date(T0 + 300)}
    assert freshness_lifetime(entry(headers, response_time=T0 + 10_000)) == 300


def test_expires_without_date_counts_from_the_receipt_time() -> None:
    """§4.2.1: with no Date, the time the response was received stands for it."""
    headers = {"Expires": format_http_date(T0 + 300)}
    assert freshness_lifetime(entry(headers, response_time=T0 + 100)) == 200


@pytest.mark.parametrize("expires", ["0", "yesterday", format_http_date(T0 - 60)])
def test_an_invalid_or_past_expires_is_stale(expires) -> None:
    """§5.3: an invalid Expires, notably "0", is a time in the past: lifetime 0."""
    assert freshness_lifetime(entry({"Date": DATE, "Expires": expires})) == 0


def test_duplicate_expires_uses_the_first() -> None:
    """§4.2: with two Expires lines, the first occurrence is used."""
    headers = [
        ("Date", DATE),
        ("Expires", format_http_date(T0 + 60)),
        ("Expires", format_http_date(T0 + 9999)),
    ]
    assert freshness_lifetime(entry(headers)) == 60


def test_no_explicit_freshness_and_no_heuristic_is_stale() -> None:
    """Heuristic freshness is off by default: an explicit-less 200 is stored stale (lifetime 0)."""
    headers = {"Date": DATE, "Last-Modified": format_http_date(T0 - 10 * 86_400)}
    assert freshness_lifetime(entry(headers)) == 0


def test_heuristic_freshness_is_ten_percent_of_the_last_modified_age() -> None:
    """§4.2.2 when enabled: 10% of Date - Last-Modified for a heuristically cacheable status."""
    policy = CachePolicy(heuristic=True)
    headers = {"Date": DATE, "Last-Modified": format_http_date(T0 - 1000)}
    assert freshness_lifetime(entry(headers), policy) == pytest.approx(100)


def test_heuristic_freshness_is_capped() -> None:
    """§4.2.2: the heuristic lifetime is capped (one day by default)."""
    policy = CachePolicy(heuristic=True, heuristic_max_seconds=3600)
    headers = {"Date": DATE, "Last-Modified": format_http_date(T0 - 365 * 86_400)}
    assert freshness_lifetime(entry(headers), policy) == 3600


def test_heuristic_freshness_needs_a_heuristically_cacheable_status() -> None:
    """A 500 gets no heuristic lifetime; a 404 does."""
    policy = CachePolicy(heuristic=True)
    headers = {"Date": DATE, "Last-Modified": format_http_date(T0 - 1000)}
    assert freshness_lifetime(entry(headers, status=500), policy) == 0
    assert freshness_lifetime(entry(headers, status=404), policy) == pytest.approx(100)


def test_the_policy_refuses_a_nonsense_heuristic_fraction() -> None:
    """A fraction outside [0, 1] is refused when the policy is built."""
    with pytest.raises(ValueError, match="heuristic_fraction"):
        CachePolicy(heuristic_fraction=2.0)


def test_initial_age_from_the_age_header_plus_response_delay() -> None:
    """§4.2.3: corrected_age_value = Age + (response_time - request_time)."""
    headers = normalize_headers({"Date": DATE, "Age": "30"})
    assert corrected_initial_age(headers, request_time=T0 - 2, response_time=T0) == 32


def test_initial_age_from_an_old_date() -> None:
    """§4.2.3: apparent_age = response_time - Date wins when larger than the corrected Age."""
    headers = normalize_headers({"Date": format_http_date(T0 - 100), "Age": "10"})
    assert corrected_initial_age(headers, request_time=T0, response_time=T0) == 100


def test_a_date_in_the_future_gives_no_negative_age() -> None:
    """§4.2.3: apparent_age is never negative (a Date ahead of the local clock)."""
    headers = normalize_headers({"Date": format_http_date(T0 + 500)})
    assert corrected_initial_age(headers, request_time=T0, response_time=T0) == 0


@pytest.mark.parametrize(("value", "expected"), [("7", 7), ("7, 9", 7), ("-3", 0), ("abc", 0), ("1.5", 0)])
def test_age_field_first_member_or_ignored(value, expected) -> None:
    """§5.1: a list-valued Age uses its first member; an invalid Age is ignored."""
    assert age_value(normalize_headers({"Age": value})) == expected


def test_current_age_adds_resident_time_on_the_monotonic_clock() -> None:
    """§4.2.3: current_age = corrected_initial_age + resident time; the wall clock is not read again."""
    stored = entry({"Date": DATE, "Age": "20", "Cache-Control": "max-age=60"}, stored_at=500.0)
    assert stored.age(500.0) == 20
    assert stored.age(530.0) == 50
    assert stored.age(400.0) == 20  # a monotonic reading before storage adds nothing
