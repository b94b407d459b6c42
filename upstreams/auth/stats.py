"""Counters of token requests by client, for tests that count refreshes (local and test profiles)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

__all__ = ["TokenStats", "stats_router"]


class TokenStats:
    """Requests, tokens issued and refusals, by authenticated client; failed authentications apart."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Every counter back to zero."""
        self.requests: Counter[str] = Counter()
        self.issued: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        #: Requests refused before a client was known; never keyed by the id they claimed.
        self.unauthenticated = 0

    def count(self, client: str | None, *, issued: bool) -> None:
        """One token request, by ``client`` (None when it did not authenticate)."""
        if client is None:
            self.unauthenticated += 1
            return
        self.requests[client] += 1
        (self.issued if issued else self.refused)[client] += 1

    def snapshot(self) -> dict[str, object]:
        """The counters as JSON."""
        clients = {
            client: {"requests": n, "issued": self.issued[client], "refused": self.refused[client]}
            for client, n in sorted(self.requests.items())
        }
        return {
            "requests": sum(self.requests.values()) + self.unauthenticated,
            "issued": sum(self.issued.values()),
            "unauthenticated": self.unauthenticated,
            "clients": clients,
        }


def stats_router(stats: TokenStats) -> APIRouter:
    """``GET /oauth/stats`` reads the counters, ``DELETE /oauth/stats`` zeroes them."""
    router = APIRouter(prefix="/oauth/stats", tags=["test"])

    @router.get("")
    async def get_stats() -> dict[str, object]:
        return stats.snapshot()

    @router.delete("")
    async def reset_stats() -> dict[str, object]:
        stats.reset()
        return stats.snapshot()

    return router
