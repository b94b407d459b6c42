"""The settings a cache decides by: shared or private, heuristic freshness, cacheable methods."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CachePolicy", "DEFAULT_POLICY", "HEURISTIC_STATUSES"]

#: RFC 9110 §15.1: status codes heuristically cacheable (storable without explicit freshness).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How a cache applies RFC 9111.

    ``shared`` is True by default: a gateway answers many users, so it is a shared cache
    (§3.5 for authenticated requests, ``s-maxage``, ``private``, ``proxy-revalidate``).
    Heuristic freshness (§4.2.2: a fraction of Date - Last-Modified, capped) is off by
    default: an API response without explicit freshness is stored stale and revalidated,
    never served on a guess. ``heuristic=True`` switches it on.
    """

    shared: bool = True
    heuristic: bool = False
    heuristic_fraction: float = 0.1
    heuristic_max_seconds: float = 86_400.0
    methods: frozenset[str] = frozenset({"GET", "HEAD"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.heuristic_fraction <= 1.0:
            raise ValueError("heuristic_fraction must be within [0, 1]")
        if self.heuristic_max_seconds < 0:
            raise ValueError("heuristic_max_seconds must not be negative")


DEFAULT_POLICY = CachePolicy()
