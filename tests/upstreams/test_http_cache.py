"""HTTP caching on the reference upstreams: Cache-Control per timeframe, strong ETags, 304s, none on errors."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.support.asgi import serve
from upstreams.analysis_engine.api import FRESHNESS
from upstreams.analysis_engine.prices import TIMEFRAMES
from upstreams.analysis_engine.service import AnalysisEngineSettings, create_app
from upstreams.common.http_cache import Freshness, if_none_match_matches, parse_if_none_match, strong_etag
from upstreams.ml_workbench.api import MODELS_FRESHNESS

#: Headers that would let a cache keep or revalidate an answer: none may be on an error.
CACHING_HEADERS = ("Cache-Control", "ETag", "Last-Modified", "Expires", "Vary", "Age")
PRICES = "/prices/EURUSD?timeframe=1h&limit=50"


def directives(value: str) -> dict[str, str | None]:
    """A Cache-Control value as directive -> argument (None without one)."""
    out: dict[str, str | None] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        out[name.lower()] = arg or None
    return out


async def fetch(http, url: str, headers=None) -> tuple[int, Mapping[str, str], bytes]:
    """Status, headers (names case-insensitive) and body of a GET."""
    async with http.get(url, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


async def chaos(http, base: str, **config) -> None:
    """Set the upstream's faults."""
    async with http.put(f"{base}/chaos", json=config) as resp:
        assert resp.status == 200, await resp.text()


def assert_no_caching_headers(headers: Mapping[str, str]) -> None:
    """None of the headers a cache could keep the answer by."""
    present = {name for name in CACHING_HEADERS if name in headers}
    assert not present, f"an error answer carries {present}"


# The table


def test_freshness_covers_every_timeframe() -> None:
    """Each timeframe has an entry, fresh for less than one candle, stale-if-error past swr."""
    assert set(FRESHNESS) == set(TIMEFRAMES)
    for timeframe, minutes in TIMEFRAMES.items():
        f = FRESHNESS[timeframe]
        assert 0 < f.max_age < minutes * 60, timeframe
        assert f.stale_while_revalidate > 0, timeframe
        assert f.stale_if_error >= f.max_age + f.stale_while_revalidate, timeframe
    by_length = [FRESHNESS[tf] for tf in sorted(TIMEFRAMES, key=TIMEFRAMES.__getitem__)]
    assert [f.max_age for f in by_length] == sorted(f.max_age for f in by_length)


def test_cache_control_value() -> None:
    """Freshness renders public, max-age and both stale directives with its numbers."""
    value = Freshness(max_age=7, stale_while_revalidate=8, stale_if_error=9).cache_control
    assert directives(value) == {
        "public": None,
        "max-age": "7",
        "stale-while-revalidate": "8",
        "stale-if-error": "9",
    }


# Analysis Engine: prices and regime


@pytest.mark.parametrize("timeframe", list(TIMEFRAMES))
async def test_prices_headers_per_timeframe(http, ae, timeframe) -> None:
    """A 200 carries its timeframe's Cache-Control, a strong ETag of its bytes, a Date, and no Vary."""
    status, headers, body = await fetch(http, f"{ae}/prices/EURUSD?timeframe={timeframe}&limit=5")
    assert status == 200
    assert headers["Cache-Control"] == FRESHNESS[timeframe].cache_control
    cc = directives(headers["Cache-Control"])
    assert "public" in cc
    assert cc["max-age"] == str(FRESHNESS[timeframe].max_age)
    assert cc["stale-while-revalidate"] == str(FRESHNESS[timeframe].stale_while_revalidate)
    assert cc["stale-if-error"] == str(FRESHNESS[timeframe].stale_if_error)
    assert headers["ETag"] == strong_etag(body)
    assert not headers["ETag"].startswith("W/")
    assert "Date" in headers
    assert "Vary" not in headers
    assert headers["Content-Type"] == "application/json"


async def test_headers_differ_between_timeframes(http, ae) -> None:
    """Every timeframe has its own Cache-Control; a 1m series is fresh for less than a 1d one."""
    values = {}
    for timeframe in TIMEFRAMES:
        _, headers, _ = await fetch(http, f"{ae}/prices/EURUSD?timeframe={timeframe}&limit=5")
        values[timeframe] = headers["Cache-Control"]
    assert len(set(values.values())) == len(TIMEFRAMES)
    assert int(directives(values["1m"])["max-age"] or 0) < int(directives(values["1d"])["max-age"] or 0)


async def test_etag_is_stable_and_tells_answers_apart(http, ae) -> None:
    """The same request gets the same ETag, from any instance; another symbol, timeframe or limit another."""
    first = await fetch(http, f"{ae}{PRICES}")
    again = await fetch(http, f"{ae}{PRICES}")
    assert first[2] == again[2]
    assert first[1]["ETag"] == again[1]["ETag"]
    async with serve(create_app(AnalysisEngineSettings(app_env="test"))) as other:
        elsewhere = await fetch(http, f"{other}/api/v1{PRICES}")
    assert elsewhere[1]["ETag"] == first[1]["ETag"]
    variants = [
        PRICES,
        "/prices/GBPUSD?timeframe=1h&limit=50",
        "/prices/EURUSD?timeframe=4h&limit=50",
        "/prices/EURUSD?timeframe=1h&limit=51",
    ]
    etags = {(await fetch(http, ae + path))[1]["ETag"] for path in variants}
    assert len(etags) == len(variants)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("{etag}", id="exact"),
        pytest.param("W/{etag}", id="weak"),
        pytest.param('"nope", W/"other", {etag}', id="list"),
        pytest.param('"a,b",{etag}', id="comma-in-tag"),
        pytest.param(" , {etag} ,, ", id="empty-elements"),
        pytest.param("*", id="star"),
    ],
)
async def test_if_none_match_gives_304(http, ae, form) -> None:
    """A matching If-None-Match is a 304 with no body, the same ETag and Cache-Control, and a Date."""
    _, full, _ = await fetch(http, f"{ae}{PRICES}")
    etag = full["ETag"]
    status, headers, body = await fetch(
        http, f"{ae}{PRICES}", headers={"If-None-Match": form.format(etag=etag)}
    )
    assert status == 304
    assert body == b""
    assert headers["ETag"] == etag
    assert headers["Cache-Control"] == full["Cache-Control"]
    assert "Date" in headers
    assert "Content-Type" not in headers


async def test_if_none_match_over_several_field_lines(http, ae) -> None:
    """Two If-None-Match lines are one list: the tag on the second still gives a 304."""
    _, full, _ = await fetch(http, f"{ae}{PRICES}")
    lines = [("If-None-Match", '"nope"'), ("If-None-Match", full["ETag"])]
    status, headers, body = await fetch(http, f"{ae}{PRICES}", headers=lines)
    assert (status, body, headers["ETag"]) == (304, b"", full["ETag"])


@pytest.mark.parametrize(
    "form",
    [
        pytest.param('"nope"', id="other-tag"),
        pytest.param('W/"nope"', id="other-weak-tag"),
        pytest.param("{bare}", id="unquoted"),
        pytest.param("w/{etag}", id="lower-case-weak"),
        pytest.param("*, {etag}", id="star-in-list"),
        pytest.param("{etag} {etag}", id="no-comma"),
        pytest.param("", id="empty"),
    ],
)
async def test_non_matching_if_none_match_gives_200(http, ae, form) -> None:
    """Another tag, or a malformed field (then ignored), gets the full 200 with its headers."""
    _, full, expected = await fetch(http, f"{ae}{PRICES}")
    etag = full["ETag"]
    value = form.format(etag=etag, bare=etag.strip('"'))
    status, headers, body = await fetch(http, f"{ae}{PRICES}", headers={"If-None-Match": value})
    assert status == 200
    assert body == expected
    assert (headers["ETag"], headers["Cache-Control"]) == (etag, full["Cache-Control"])


async def test_if_modified_since_alone_is_ignored(http, ae) -> None:
    """Without a Last-Modified to compare with, If-Modified-Since never turns a 200 into a 304."""
    status, headers, body = await fetch(
        http, f"{ae}{PRICES}", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
    )
    assert status == 200
    assert body
    assert "Last-Modified" not in headers


async def test_regime_is_cached_like_its_series(http, ae) -> None:
    """The regime carries its timeframe's Cache-Control and an ETag, and answers If-None-Match."""
    status, headers, body = await fetch(http, f"{ae}/market-regime/USDJPY?timeframe=4h")
    assert status == 200
    assert headers["Cache-Control"] == FRESHNESS["4h"].cache_control
    assert headers["ETag"] == strong_etag(body)
    status, again, body = await fetch(
        http, f"{ae}/market-regime/USDJPY?timeframe=4h", headers={"If-None-Match": headers["ETag"]}
    )
    assert (status, body, again["ETag"]) == (304, b"", headers["ETag"])


async def test_indicators_post_is_not_cacheable(http, ae) -> None:
    """The POST computation carries neither Cache-Control nor ETag."""
    req = {"symbol": "EURUSD", "indicators": [{"name": "SMA"}], "limit": 30}
    async with http.post(f"{ae}/indicators/calculate", json=req) as resp:
        assert resp.status == 200
        assert_no_caching_headers(resp.headers)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/prices/XAUUSD", 404),
        ("/market-regime/BTCUSD", 404),
        ("/prices/EURUSD?timeframe=2h", 422),
        ("/prices/EURUSD?limit=0", 422),
    ],
)
async def test_errors_carry_no_caching_headers(http, ae, path, status) -> None:
    """A 404 or 422 has no Cache-Control or ETag, and If-None-Match: * does not make it a 304."""
    got, headers, _ = await fetch(http, ae + path, headers={"If-None-Match": "*"})
    assert got == status
    assert_no_caching_headers(headers)


async def test_expired_deadline_carries_no_caching_headers(http, ae) -> None:
    """A 504 for a spent deadline is not cacheable data either."""
    status, headers, _ = await fetch(http, f"{ae}{PRICES}", headers={"X-Request-Timeout-Ms": "0"})
    assert status == 504
    assert_no_caching_headers(headers)


@pytest.mark.parametrize("error_status", [503, 404])
async def test_chaos_errors_carry_no_caching_headers(http, ae, error_status) -> None:
    """An injected fault, even against a matching If-None-Match, has no caching headers; then 304 again."""
    _, full, _ = await fetch(http, f"{ae}{PRICES}")
    conditional = {"If-None-Match": full["ETag"]}
    await chaos(http, ae, error_rate=1.0, error_status=error_status)
    status, headers, body = await fetch(http, f"{ae}{PRICES}", headers=conditional)
    assert status == error_status
    assert b'"chaos"' in body
    assert_no_caching_headers(headers)
    async with http.delete(f"{ae}/chaos") as resp:
        assert resp.status == 200
    status, headers, _ = await fetch(http, f"{ae}{PRICES}", headers=conditional)
    assert (status, headers["ETag"]) == (304, full["ETag"])


# ML Workbench: model metadata


@pytest.mark.parametrize("path", ["/models", "/models/direction-logreg-v1"])
async def test_models_are_cached(http, ml, path) -> None:
    """Model metadata carries the models' Cache-Control and a strong ETag, and answers If-None-Match."""
    status, headers, body = await fetch(http, ml + path)
    assert status == 200
    assert headers["Cache-Control"] == MODELS_FRESHNESS.cache_control
    assert headers["ETag"] == strong_etag(body)
    assert "Vary" not in headers
    status, again, body = await fetch(http, ml + path, headers={"If-None-Match": f"W/{headers['ETag']}"})
    assert (status, body) == (304, b"")
    assert (again["ETag"], again["Cache-Control"]) == (headers["ETag"], headers["Cache-Control"])
    status, _, body = await fetch(http, ml + path, headers={"If-None-Match": '"stale"'})
    assert status == 200
    assert body


async def test_models_list_and_one_model_differ(http, ml) -> None:
    """The list and each model have their own ETag; models are fresher for longer than prices."""
    tags = {
        (await fetch(http, ml + path))[1]["ETag"]
        for path in ("/models", "/models/direction-logreg-v1", "/models/baseline-prior-v1")
    }
    assert len(tags) == 3
    assert MODELS_FRESHNESS.max_age >= max(f.max_age for f in FRESHNESS.values())


async def test_model_errors_carry_no_caching_headers(http, ml) -> None:
    """An unknown model's 404, a predict answer and an injected fault have no caching headers."""
    status, headers, _ = await fetch(http, f"{ml}/models/nope", headers={"If-None-Match": "*"})
    assert status == 404
    assert_no_caching_headers(headers)
    req = {
        "symbol": "EURUSD",
        "features": {"rsi_14": 0.5, "macd_hist_atr": 0, "sma_trend_atr": 0, "bb_width": 0},
    }
    async with http.post(f"{ml}/models/direction-logreg-v1/predict", json=req) as resp:
        assert resp.status == 200
        assert_no_caching_headers(resp.headers)
    await chaos(http, ml, error_rate=1.0, error_status=503)
    status, headers, _ = await fetch(http, f"{ml}/models")
    assert status == 503
    assert_no_caching_headers(headers)


# If-None-Match parsing


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param([""], frozenset(), id="empty"),
        pytest.param([" , ,"], frozenset(), id="only-empty-elements"),
        pytest.param(["*"], "*", id="star"),
        pytest.param([" * "], "*", id="star-with-spaces"),
        pytest.param(['"a"'], frozenset({'"a"'}), id="one"),
        pytest.param(['W/"a", "b"'], frozenset({'"a"', '"b"'}), id="weak-dropped"),
        pytest.param(['"a,b", "c"'], frozenset({'"a,b"', '"c"'}), id="comma-inside"),
        pytest.param(['""'], frozenset({'""'}), id="empty-tag"),
        pytest.param(['"a"', 'W/"b"'], frozenset({'"a"', '"b"'}), id="two-lines"),
        pytest.param(['"caf\xe9"'], frozenset({'"caf\xe9"'}), id="obs-text"),
        pytest.param(["*, *"], "*", id="star-twice"),
        pytest.param(['*, "a"'], None, id="star-in-list"),
        pytest.param(["*", '"a"'], None, id="star-and-tag-lines"),
        pytest.param(["a"], None, id="unquoted"),
        pytest.param(['w/"a"'], None, id="lower-case-weak"),
        pytest.param(['W/ "a"'], None, id="space-after-weak"),
        pytest.param(['"a'], None, id="unterminated"),
        pytest.param(['"a" "b"'], None, id="no-comma"),
        pytest.param(['"a b"'], None, id="space-inside"),
        pytest.param(['"a"x'], None, id="trailing-junk"),
    ],
)
def test_parse_if_none_match(lines, expected) -> None:
    """Each field form parses to its tags, ``*``, or None (absent or malformed, so ignored)."""
    assert parse_if_none_match(lines) == expected


@pytest.mark.parametrize(
    ("lines", "etag", "matches"),
    [
        pytest.param(['"a"'], '"a"', True, id="same"),
        pytest.param(['W/"a"'], '"a"', True, id="weak-request"),
        pytest.param(['"a"'], 'W/"a"', True, id="weak-etag"),
        pytest.param(['"b", "a"'], '"a"', True, id="in-list"),
        pytest.param(["*"], '"a"', True, id="star"),
        pytest.param(['"ab"'], '"a"', False, id="prefix-is-not-a-match"),
        pytest.param(['"a,b"'], '"a"', False, id="comma-is-not-a-separator-inside"),
        pytest.param([], '"a"', False, id="absent"),
        pytest.param(['*, "a"'], '"a"', False, id="malformed-ignored"),
    ],
)
def test_if_none_match_matches(lines, etag, matches) -> None:
    """Weak comparison on either side; a malformed or absent field matches nothing."""
    assert if_none_match_matches(lines, etag) is matches


def test_strong_etag() -> None:
    """A quoted strong tag, the same for the same bytes and different for one byte more."""
    tag = strong_etag(b'{"a":1}')
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert len(tag) == 34
    assert tag == strong_etag(b'{"a":1}')
    assert tag != strong_etag(b'{"a":1} ')
