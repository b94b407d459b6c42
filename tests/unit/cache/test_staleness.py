"""Serving decisions: fresh, stale-while-revalidate, stale-if-error, must-revalidate, no-cache (RFC 9111, 5861, 8246)."""

from __future__ import annotations

from app.cache import Action, CachePolicy, assess, parse_cache_control

from .helpers import DATE, entry

SWR_SIE = {"Cache-Control": "max-age=60, stale-while-revalidate=30, stale-if-error=300", "Date": DATE}


def test_fresh_within_max_age() -> None:
    """Age below the lifetime: serve, no upstream call."""
    verdict = assess(entry(SWR_SIE), 59.0)
    assert verdict.action is Action.SERVE
    assert verdict.fresh
    assert (verdict.age, verdict.lifetime, verdict.staleness) == (59.0, 60.0, 0.0)


def test_stale_within_the_swr_window_is_served_while_revalidating() -> None:
    """RFC 5861 §3: up to stale-while-revalidate seconds past the lifetime, serve and refresh."""
    at_edge = assess(entry(SWR_SIE), 90.0)
    assert at_edge.action is Action.SERVE_STALE_AND_REVALIDATE
    assert at_edge.staleness == 30
    assert at_edge.serve_on_error


def test_beyond_swr_but_within_sie_must_fetch_and_may_serve_stale_on_error() -> None:
    """RFC 5861 §4: past swr, fetch; if the fetch fails within stale-if-error, the stale entry may answer."""
    verdict = assess(entry(SWR_SIE), 91.0)
    assert verdict.action is Action.REVALIDATE
    assert verdict.serve_on_error
    assert assess(entry(SWR_SIE), 360.0).serve_on_error


def test_beyond_every_window_must_fetch_and_never_serve_stale() -> None:
    """Past stale-if-error, the entry is no answer, even on error."""
    verdict = assess(entry(SWR_SIE), 361.0)
    assert verdict.action is Action.REVALIDATE
    assert not verdict.serve_on_error


def test_the_age_header_counts_against_the_windows() -> None:
    """An entry that arrived 50 s old is stale 11 s after storage."""
    stored = entry({**SWR_SIE, "Age": "50"}, stored_at=1000.0)
    assert assess(stored, 1009.0).action is Action.SERVE
    assert assess(stored, 1011.0).action is Action.SERVE_STALE_AND_REVALIDATE


def test_must_revalidate_forbids_any_stale_answer() -> None:
    """§4.2.4: must-revalidate overrides stale-while-revalidate and stale-if-error once stale."""
    stored = entry(
        {"Cache-Control": "max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=300"}
    )
    assert assess(stored, 30.0).action is Action.SERVE
    verdict = assess(stored, 61.0)
    assert verdict.action is Action.REVALIDATE
    assert not verdict.serve_on_error


def test_s_maxage_and_proxy_revalidate_forbid_stale_in_a_shared_cache_only() -> None:
    """§5.2.2.10: s-maxage implies proxy-revalidate, which binds shared caches, not private ones."""
    for directive in ("s-maxage=60", "max-age=60, proxy-revalidate"):
        stored = entry({"Cache-Control": f"{directive}, stale-while-revalidate=30, stale-if-error=300"})
        assert assess(stored, 70.0, policy=CachePolicy(shared=True)).action is Action.REVALIDATE
        assert not assess(stored, 70.0, policy=CachePolicy(shared=True)).serve_on_error
    private = entry({"Cache-Control": "max-age=60, proxy-revalidate, stale-while-revalidate=30"})
    assert assess(private, 70.0, policy=CachePolicy(shared=False)).action is Action.SERVE_STALE_AND_REVALIDATE


def test_response_no_cache_always_revalidates() -> None:
    """§5.2.2.4: no-cache makes a stored response usable only after validation, even within max-age."""
    stored = entry({"Cache-Control": "no-cache, max-age=600, stale-while-revalidate=30, stale-if-error=60"})
    verdict = assess(stored, 1.0)
    assert verdict.action is Action.REVALIDATE
    assert not verdict.serve_on_error


def test_request_no_cache_and_max_age_zero_revalidate_a_fresh_entry() -> None:
    """§5.2.1: request no-cache or max-age=0 forces a call; the fresh entry still answers an error."""
    stored = entry(SWR_SIE)
    for directive in ("no-cache", "max-age=0"):
        verdict = assess(stored, 10.0, request=parse_cache_control(directive))
        assert verdict.action is Action.REVALIDATE
        assert verdict.serve_on_error
    assert assess(stored, 10.0, request=parse_cache_control("max-age=20")).action is Action.SERVE


def test_request_min_fresh() -> None:
    """§5.2.1.3: min-fresh=N needs the entry fresh for N more seconds."""
    stored = entry(SWR_SIE)
    assert assess(stored, 50.0, request=parse_cache_control("min-fresh=5")).action is Action.SERVE
    assert assess(stored, 50.0, request=parse_cache_control("min-fresh=20")).action is Action.REVALIDATE


def test_immutable_ignores_a_reload_but_not_a_forced_reload() -> None:
    """RFC 8246: while fresh, an immutable response is served despite request max-age=0, not despite no-cache."""
    stored = entry({"Cache-Control": "max-age=600, immutable"})
    assert assess(stored, 10.0, request=parse_cache_control("max-age=0")).action is Action.SERVE
    assert assess(stored, 10.0, request=parse_cache_control("no-cache")).action is Action.REVALIDATE


def test_an_entry_without_freshness_or_windows_must_be_fetched() -> None:
    """A stored 200 with only an ETag is stale at once: revalidate, no stale answer."""
    verdict = assess(entry({"ETag": '"v1"'}), 0.0)
    assert verdict.action is Action.REVALIDATE
    assert not verdict.serve_on_error
