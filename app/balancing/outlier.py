"""OutlierDetector: Envoy's outlier ejection (consecutive failures, failure-rate sweep, growing ejections)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from app.balancing.instance import Instance
from app.balancing.settings import BalancerSettings

__all__ = ["OutlierDetector", "max_ejectable"]

#: An ejection lasts up to this much longer than its base, so instances ejected together
#: do not all return in the same instant.
_JITTER = 0.1


def max_ejectable(instances: int, percent: int) -> int:
    """How many of ``instances`` may be ejected at once.

    ``floor(instances x percent / 100)``, but at least one when there are two or more
    instances and ``percent`` > 0: Envoy's plain floor never ejects in a small cluster
    (2 instances at 10%: Envoy #3263). A single instance is never ejected: there is
    nowhere else to send its calls, and the breaker speaks for it. 0% switches ejection off.
    """
    if instances < 2 or percent <= 0:
        return 0
    return max(1, instances * percent // 100)


class OutlierDetector:
    """Decides ejections from each instance's outcomes; the balancer asks it at every outcome and sweep.

    An ejection lasts ``base x times ejected`` (capped, with up to 10% jitter). The
    multiplier goes down by one for each sweep interval an instance stays healthy, as
    in Envoy, so an instance that fails once a day is not ejected for the cap.
    """

    __slots__ = ("_on_eject", "_rng", "_settings")

    def __init__(
        self,
        settings: BalancerSettings,
        on_eject: Callable[[Instance, str], None],
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._on_eject = on_eject
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def reconfigure(self, settings: BalancerSettings) -> None:
        """New thresholds and ejection times from the next outcome; ejections under way run their course."""
        self._settings = settings

    def after_failure(self, instance: Instance, live: Sequence[Instance], now: float) -> None:
        """Eject ``instance`` when its consecutive failures reach the threshold (and the cap allows)."""
        if instance.consecutive_failures >= self._settings.consecutive_failures:
            self._try_eject(instance, live, now, "consecutive_failures")

    def sweep(self, live: Sequence[Instance], now: float, intervals: int = 1) -> None:
        """The end of ``intervals`` intervals: eject by failure rate, shorten healthy multipliers, reset."""
        s = self._settings
        for instance in live:
            requests, failures = instance.interval_requests, instance.interval_failures
            if (
                not instance.ejected(now)
                and requests >= s.failure_rate_minimum_requests
                and failures >= s.failure_rate * requests
            ):
                self._try_eject(instance, live, now, "failure_rate")
            elif failures == 0 and instance.times_ejected and not instance.ejected(now):
                instance.times_ejected = max(0, instance.times_ejected - intervals)
            instance.interval_requests = instance.interval_failures = 0

    def _try_eject(self, instance: Instance, live: Sequence[Instance], now: float, reason: str) -> None:
        if instance.ejected(now):
            return
        s = self._settings
        ejected = sum(1 for other in live if other.ejected(now))
        if ejected >= max_ejectable(len(live), s.max_ejection_percent):
            return
        instance.times_ejected += 1
        seconds = s.base_ejection_seconds * instance.times_ejected * (1.0 + _JITTER * self._rng.random())
        instance.ejected_until = now + min(seconds, s.max_ejection_seconds)
        instance.ejections += 1
        instance.last_ejection_reason = reason
        instance.consecutive_failures = 0
        self._on_eject(instance, reason)
