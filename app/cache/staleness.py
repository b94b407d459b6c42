"""Serving decisions (RFC 9111 §4.2, §4.2.4; RFC 5861; RFC 8246) as pure functions of an entry and now."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from app.cache.directives import CacheControl
from app.cache.entry import CacheEntry
from app.cache.freshness import freshness_lifetime
from app.cache.policy import DEFAULT_POLICY, CachePolicy

__all__ = ["Action", "Verdict", "assess"]


class Action(enum.Enum):
    """What to do with a stored entry for a request."""

    #: Fresh: serve it, no upstream call.
    SERVE = "serve"
    #: Stale within stale-while-revalidate: serve it and revalidate in the background.
    SERVE_STALE_AND_REVALIDATE = "serve-stale-and-revalidate"
    #: Not servable as is: call upstream (conditionally when the entry has validators).
    REVALIDATE = "revalidate"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one entry at one instant, with the figures it was made from."""

    action: Action
    age: float
    lifetime: float
    #: When the upstream call of a REVALIDATE fails (an error or a 5xx), the entry may be
    #: served instead, within stale-if-error; the answer is then degraded.
    serve_on_error: bool

    @property
    def fresh(self) -> bool:
        """The entry is fresh and the request accepts it."""
        return self.action is Action.SERVE

    @property
    def staleness(self) -> float:
        """Seconds past the freshness lifetime (0 while fresh)."""
        return max(0.0, self.age - self.lifetime)


def _stale_forbidden(cc: CacheControl, policy: CachePolicy) -> bool:
    """§4.2.4: must-revalidate, and in a shared cache proxy-revalidate or s-maxage, forbid serving stale."""
    return cc.must_revalidate or (policy.shared and (cc.proxy_revalidate or cc.s_maxage is not None))


def assess(
    entry: CacheEntry,
    now: float,
    *,
    request: CacheControl | None = None,
    policy: CachePolicy = DEFAULT_POLICY,
) -> Verdict:
    """Whether ``entry`` is fresh, servable stale while revalidating, servable stale on error, or neither.

    ``now`` is monotonic time (a ``Clock``). Rules:

    - response ``no-cache`` (unqualified) or request ``no-cache``: never SERVE, always
      revalidate (§5.2.2.4, §5.2.1.4); a qualified ``no-cache`` removed its fields at storage;
    - fresh is ``age < lifetime``, further limited by the request's ``max-age`` (age at
      most that) and ``min-fresh`` (still fresh that much longer), §5.2.1; for an
      ``immutable`` response (RFC 8246) request ``max-age``/``min-fresh`` (a reload) are not a
      reason to revalidate while fresh, a request ``no-cache`` (a forced reload) still is;
      a fresh entry the request declined is still ``serve_on_error``;
    - once stale: ``must-revalidate`` (and ``proxy-revalidate`` or ``s-maxage`` in a shared
      cache) forbid any stale answer (§4.2.4); otherwise SERVE_STALE_AND_REVALIDATE within
      ``stale-while-revalidate`` seconds of staleness, and ``serve_on_error`` within
      ``stale-if-error`` seconds (RFC 5861 §3, §4). Request ``max-stale`` is not honoured.
    """
    req = request or CacheControl()
    cc = entry.cache_control
    age = entry.age(now)
    lifetime = freshness_lifetime(entry, policy)
    entry_fresh = age < lifetime and not cc.no_cache
    accepted = entry_fresh and not req.no_cache
    if accepted and not cc.immutable:
        if req.max_age is not None and age > req.max_age:
            accepted = False
        if req.min_fresh is not None and lifetime - age < req.min_fresh:
            accepted = False
    if accepted:
        return Verdict(Action.SERVE, age, lifetime, serve_on_error=False)
    if entry_fresh:
        # Fresh, but the request asks for a newer answer: call upstream; a failure may still
        # be answered with this fresh entry.
        return Verdict(Action.REVALIDATE, age, lifetime, serve_on_error=True)
    if cc.no_cache or _stale_forbidden(cc, policy):
        return Verdict(Action.REVALIDATE, age, lifetime, serve_on_error=False)
    staleness = max(0.0, age - lifetime)
    swr = cc.stale_while_revalidate
    sie = cc.stale_if_error
    serve_on_error = sie is not None and staleness <= sie
    if swr is not None and staleness <= swr and not req.no_cache:
        return Verdict(Action.SERVE_STALE_AND_REVALIDATE, age, lifetime, serve_on_error)
    return Verdict(Action.REVALIDATE, age, lifetime, serve_on_error)
