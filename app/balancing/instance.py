"""Instance: one base URL of an upstream and what the balancer knows of it."""

from __future__ import annotations

import math

from yarl import URL

__all__ = ["Instance"]


class Instance:
    """One instance: its URL, load, peak-EWMA latency and outlier state.

    Plain data read and written by the balancer only; ``address`` (``host:port``) is
    how logs, spans and metrics name it.
    """

    __slots__ = (
        "added_at", "address", "consecutive_failures", "draining", "ejected_until", "ejections", "ewma",
        "failures", "host", "in_flight", "interval_failures", "interval_requests", "last_ejection_reason",
        "port", "recent", "recent_stamp", "requests", "retry_after_until", "sampled", "stamp",
        "times_ejected", "url",
    )  # fmt: skip

    def __init__(self, url: str, now: float, default_rtt: float) -> None:
        parsed = URL(url)
        self.url = url  # normalised: one trailing slash
        self.host = parsed.host or ""
        self.port = parsed.explicit_port or parsed.port or 0
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.address = f"{host}:{self.port}"
        self.added_at = now
        self.ewma = default_rtt
        #: False while ``ewma`` is only the starting guess: the first answer replaces it.
        self.sampled = False
        self.stamp = now
        self.in_flight = 0
        self.consecutive_failures = 0
        self.interval_requests = 0
        self.interval_failures = 0
        self.requests = 0
        self.failures = 0
        self.ejections = 0
        self.times_ejected = 0
        self.ejected_until = 0.0
        self.last_ejection_reason: str | None = None
        self.retry_after_until = 0.0
        self.draining = False
        # Picks, decayed with the EWMA's time constant: this instance's recent share of traffic.
        self.recent = 0.0
        self.recent_stamp = now

    def __repr__(self) -> str:
        return f"Instance({self.address}, ewma={self.ewma * 1000:.1f}ms, in_flight={self.in_flight})"

    def state(self, now: float) -> str:
        """``draining``, ``ejected`` or ``healthy``, as the status API and the metrics name it."""
        return "draining" if self.draining else "ejected" if self.ejected(now) else "healthy"

    def ejected(self, now: float) -> bool:
        """True while an ejection lasts."""
        return now < self.ejected_until

    def decayed_ewma(self, now: float, decay: float) -> float:
        """The EWMA as of ``now``, decayed towards zero since the last sample (Finagle's ``cost``).

        So an instance that was slow or failing once is tried again.
        """
        elapsed = now - self.stamp
        if elapsed <= 0:
            return self.ewma
        return self.ewma * math.exp(-elapsed / decay)

    def observe(self, rtt: float, now: float, decay: float) -> None:
        """Peak-EWMA: a slower sample is taken at once, a faster one blended in by elapsed time."""
        current = self.decayed_ewma(now, decay)
        if rtt > current or not self.sampled:
            self.sampled = True
            self.ewma = rtt
        else:
            weight = math.exp(-max(now - self.stamp, 0.0) / decay)
            self.ewma = self.ewma * weight + rtt * (1.0 - weight)
        self.stamp = now

    def count_pick(self, now: float, decay: float) -> None:
        """One more pick in the decayed traffic count."""
        self.recent = self.recent_share(now, decay) + 1.0
        self.recent_stamp = now

    def recent_share(self, now: float, decay: float) -> float:
        """The decayed pick count as of ``now``."""
        elapsed = now - self.recent_stamp
        return self.recent if elapsed <= 0 else self.recent * math.exp(-elapsed / decay)
