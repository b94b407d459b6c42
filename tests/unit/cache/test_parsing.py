"""Cache-Control, HTTP-date and header-list parsing: RFC 9111 §5.2, §4.2.1 and RFC 9110 §5.6.7 edge cases."""

from __future__ import annotations

import pytest

from app.cache import (
    MAX_DELTA_SECONDS,
    CacheControl,
    format_http_date,
    parse_cache_control,
    parse_http_date,
    split_list,
)

RFC_DATE = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110 §5.6.7's example


def test_every_response_directive_is_read() -> None:
    """Each directive the cache acts on is parsed from one field value."""
    cc = parse_cache_control(
        "max-age=60, s-maxage=120, no-store, no-cache, private, public, must-revalidate, "
        "proxy-revalidate, stale-while-revalidate=30, stale-if-error=600, immutable"
    )
    assert cc == CacheControl(
        max_age=60,
        s_maxage=120,
        no_store=True,
        no_cache=True,
        private=True,
        public=True,
        must_revalidate=True,
        proxy_revalidate=True,
        stale_while_revalidate=30,
        stale_if_error=600,
        immutable=True,
    )


def test_request_directives_are_read() -> None:
    """Request-only directives: min-fresh, max-stale with and without a value, only-if-cached."""
    assert parse_cache_control("max-stale").max_stale == MAX_DELTA_SECONDS
    cc = parse_cache_control("max-stale=5, min-fresh=10, only-if-cached, no-cache, max-age=0")
    assert (cc.max_stale, cc.min_fresh, cc.only_if_cached, cc.no_cache, cc.max_age) == (5, 10, True, True, 0)


def test_odd_spacing_case_and_empty_members_are_tolerated() -> None:
    """Names are case-insensitive; spaces around '=' and empty list members do not matter."""
    cc = parse_cache_control(" ,  MAX-AGE = 60 ,, Public ,  ")
    assert cc.max_age == 60
    assert cc.public


def test_quoted_arguments_are_accepted() -> None:
    """§5.2: recipients accept the quoted-string form of a token argument (max-age="60")."""
    assert parse_cache_control('max-age="60", stale-if-error="5"').max_age == 60
    assert parse_cache_control('max-age="60", stale-if-error="5"').stale_if_error == 5


def test_several_field_lines_combine() -> None:
    """Directives from separate Cache-Control lines combine as one list."""
    cc = parse_cache_control(["max-age=10", "must-revalidate"])
    assert cc.max_age == 10
    assert cc.must_revalidate


def test_a_duplicated_directive_keeps_its_first_value() -> None:
    """§4.2.1: with several max-age values, the first occurrence is used."""
    assert parse_cache_control("max-age=10, max-age=99").max_age == 10
    assert parse_cache_control(["s-maxage=5", "s-maxage=500"]).s_maxage == 5


@pytest.mark.parametrize(
    "value", ["max-age=abc", "max-age=-1", "max-age=", "max-age", "max-age=1.5", "max-age=٣"]
)
def test_an_invalid_max_age_makes_the_response_stale(value) -> None:
    """§4.2.1: invalid freshness information is treated as stale: lifetime 0."""
    assert parse_cache_control(value).max_age == 0


def test_an_invalid_stale_window_is_ignored() -> None:
    """An invalid stale-while-revalidate or stale-if-error never lets a stale answer out."""
    cc = parse_cache_control("stale-while-revalidate=soon, stale-if-error=-5")
    assert cc.stale_while_revalidate is None
    assert cc.stale_if_error is None


def test_a_huge_delta_is_capped_at_two_to_the_31() -> None:
    """§1.2.2: a delta-seconds beyond 2^31 is taken as 2^31."""
    assert parse_cache_control("max-age=99999999999999999999").max_age == 2**31


def test_qualified_no_cache_and_private_list_field_names() -> None:
    """no-cache="a, B" and private="c" name fields (lower-cased) and are not the unqualified form."""
    cc = parse_cache_control('no-cache="Set-Cookie, X-Trace", private="x-user"')
    assert cc.no_cache_fields == {"set-cookie", "x-trace"}
    assert cc.private_fields == {"x-user"}
    assert not cc.no_cache
    assert not cc.private
    assert cc.no_cache_qualified
    assert cc.private_qualified


def test_unqualified_no_cache_wins_over_the_qualified_form() -> None:
    """With both no-cache and no-cache="field", the more restrictive unqualified one applies."""
    cc = parse_cache_control('no-cache="set-cookie", no-cache')
    assert cc.no_cache
    assert not cc.no_cache_qualified


def test_unknown_extensions_are_kept_and_do_not_break_parsing() -> None:
    """An unknown directive with a quoted comma does not split the list wrongly."""
    cc = parse_cache_control('community="UCI, x", max-age=5')
    assert cc.extensions == (("community", "UCI, x"),)
    assert cc.max_age == 5


def test_absent_cache_control_is_empty() -> None:
    """No field at all gives no directive."""
    assert parse_cache_control(None) == CacheControl()
    assert parse_cache_control([]) == CacheControl()


def test_split_list_respects_quotes_and_escapes() -> None:
    """Commas inside a quoted string, escaped quotes too, stay in their member."""
    assert split_list(r'a, "b, \"c\", d", e') == ["a", r'"b, \"c\", d"', "e"]


@pytest.mark.parametrize(
    "text",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_the_three_http_date_forms_parse(text) -> None:
    """RFC 9110 §5.6.7: IMF-fixdate, the obsolete RFC 850 and asctime forms are the same instant."""
    assert parse_http_date(text) == RFC_DATE


@pytest.mark.parametrize("text", ["0", "-1", "tomorrow", "Sun, 32 Nov 1994 08:49:37 GMT", "", None])
def test_invalid_dates_are_none(text) -> None:
    """An invalid HTTP-date, notably "0", parses to None (the caller treats it as the past)."""
    assert parse_http_date(text) is None


def test_format_http_date_round_trips() -> None:
    """format_http_date writes the IMF-fixdate that parse_http_date reads back."""
    assert format_http_date(RFC_DATE) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(RFC_DATE + 3600)) == RFC_DATE + 3600
