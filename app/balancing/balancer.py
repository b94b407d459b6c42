"""Balancer: one upstream's live instances, the pick for each attempt, and what each attempt taught."""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal, Protocol

from app.balancing.instance import Instance
from app.balancing.outlier import OutlierDetector, max_ejectable
from app.balancing.settings import BalancerSettings
from app.resilience.clock import MONOTONIC, Clock

__all__ = ["AttemptOutcome", "Balancer", "BalancerEvents", "NoInstanceError"]

#: How an attempt on an instance ended, for its health and its metrics: ``failure`` (5xx,
#: connection, timeout) counts towards ejection; ``throttled`` (429) only keeps it
#: avoided for its Retry-After; ``error`` (an answer the caller caused, such as a 404)
#: and ``success`` say the instance is up; ``cancelled`` says nothing.
AttemptOutcome = Literal["success", "error", "failure", "throttled", "cancelled"]

#: The least share of its traffic a new or returning instance gets (slow start).
_MIN_RAMP = 0.1


class NoInstanceError(Exception):
    """The upstream has no instance to send to (discovery has found none yet)."""


class BalancerEvents(Protocol):
    """Where the balancer reports what it did, for metrics and logs."""

    def attempt_ended(self, instance: Instance, outcome: AttemptOutcome) -> None:
        """An attempt on ``instance`` ended."""
        ...

    def ejected(self, instance: Instance, reason: str, seconds: float) -> None:
        """``instance`` was ejected for ``seconds``."""
        ...

    def instances_changed(self, instances: Collection[Instance]) -> None:
        """The set of instances changed (added, removed, or drained away)."""
        ...


class Balancer:
    """Picks an instance per attempt and learns from each one's outcome (DESIGN §9).

    Not tied to an event loop: the async calls and the sync twins share one balancer.
    Ejections end, and the failure-rate sweep runs, lazily at the next pick, on the
    injected clock: no timer task to leak.
    """

    def __init__(
        self,
        urls: Iterable[str],
        settings: BalancerSettings | None = None,
        *,
        clock: Clock = MONOTONIC,
        rng: random.Random | None = None,
        events: BalancerEvents | None = None,
    ) -> None:
        self.settings = s = settings or BalancerSettings()
        self.clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not cryptography
        self.events = events
        now = clock.now()
        self._instances: list[Instance] = []
        self._by_url: dict[str, Instance] = {}
        self._outliers = OutlierDetector(s, self._ejected, self._rng)
        self._next_sweep = self._next_check = now + s.sweep_interval_seconds
        self._returning: set[Instance] = set()
        self._round_robin = itertools.count()
        self._removal_listeners: list[Callable[[Instance], None]] = []
        #: Called when every instance has failed (DNS discovery re-resolves at once).
        self.on_all_failed: Callable[[], None] | None = None
        self._all_failing = False
        # The async calls and the sync twins' thread share the balancer.
        self._lock = threading.Lock()
        self._update(dict.fromkeys(urls))  # the first set: where the balancer starts
        self._pick = self._picker(s)

    def _picker(self, settings: BalancerSettings) -> Callable[[list[Instance], float], Instance]:
        return {
            "p2c_peak_ewma": self._pick_peak_ewma,
            "least_request": self._pick_least_request,
            "round_robin": self._pick_round_robin,
        }[settings.policy]

    def reconfigure(self, settings: BalancerSettings) -> None:
        """New settings in place: every instance keeps its state (EWMA, load, ejection, draining).

        The next pick uses the new policy and costs. An ejection under way keeps its end;
        new thresholds and ejection times judge the next outcomes. A shorter sweep interval
        brings the next sweep forward; a longer one starts after the sweep already due.
        """
        with self._lock:
            self.settings = settings
            self._outliers.reconfigure(settings)
            self._pick = self._picker(settings)
            self._next_sweep = min(self._next_sweep, self.clock.now() + settings.sweep_interval_seconds)
            self._next_check = min(self._next_check, self._next_sweep)

    # -- the set -------------------------------------------------------------------

    @property
    def instances(self) -> list[Instance]:
        """Every instance, draining ones included (a snapshot)."""
        return list(self._instances)

    def urls(self) -> tuple[str, ...]:
        """The instances new calls may go to (draining ones excluded)."""
        return tuple(i.url for i in self._instances if not i.draining)

    def add_removal_listener(self, listener: Callable[[Instance], None]) -> None:
        """``listener(instance)`` runs once a removed instance has drained (its connections can close)."""
        self._removal_listeners.append(listener)

    def remove_removal_listener(self, listener: Callable[[Instance], None]) -> None:
        """Stop telling ``listener`` (its transport closed)."""
        if listener in self._removal_listeners:
            self._removal_listeners.remove(listener)

    def update(self, urls: Iterable[str]) -> None:
        """Make ``urls`` the set: new ones start slowly, kept ones keep their state, removed ones drain.

        A removed instance gets no new attempts; it leaves once its attempts in flight have ended.
        """
        with self._lock:
            self._update(dict.fromkeys(urls))
        self._changed()

    def _update(self, wanted: dict[str, None]) -> None:
        now = self.clock.now()
        # The first set (discovery's first answer) is where the balancer starts, not newcomers.
        first = not self._instances
        for url in wanted:
            instance = self._by_url.get(url)
            if instance is None:
                instance = self._by_url[url] = Instance(url, now, self._typical_ewma(now))
                if first:
                    instance.added_at = -math.inf
                self._instances.append(instance)
            elif instance.draining:
                instance.draining = False  # came back before it drained away
        for instance in list(self._instances):
            if instance.url not in wanted and not instance.draining:
                instance.draining = True
                if instance.in_flight == 0:
                    self._remove(instance)

    def _remove(self, instance: Instance) -> None:
        self._instances.remove(instance)
        del self._by_url[instance.url]
        self._returning.discard(instance)
        for listener in self._removal_listeners:
            listener(instance)

    def _changed(self) -> None:
        if self.events is not None:
            self.events.instances_changed(self.instances)

    # -- picking -------------------------------------------------------------------

    def pick(self, tried: Collection[str] = ()) -> Instance:
        """The instance for the next attempt, preferring ones this call has not tried.

        Ejected and draining instances are left out, unless fewer than
        ``panic_threshold_percent`` of the instances are healthy: then the balancer
        panics and spreads over all of them, as Envoy does (better some failures than
        the whole load on the few left).
        """
        with self._lock:
            now = self.clock.now()
            if now >= self._next_check:
                self._maintain(now)
            live, healthy = self._split(now)
            if not live:
                raise NoInstanceError("no instances")
            if tried:
                healthy = [i for i in healthy if i.url not in tried] or healthy
            # Inside a Retry-After window: only when every other choice is too.
            healthy = [i for i in healthy if now >= i.retry_after_until] or healthy
            chosen = healthy[0] if len(healthy) == 1 else self._pick(healthy, now)
            chosen.in_flight += 1
            chosen.count_pick(now, self.settings.decay_seconds)
            return chosen

    def panicking(self) -> bool:
        """True when too few instances are healthy and calls spread over all of them."""
        live, healthy = self._split(self.clock.now())
        return bool(live) and healthy is live

    def _split(self, now: float) -> tuple[list[Instance], list[Instance]]:
        """The live instances, and those to balance over: the healthy ones, or all of them in panic."""
        live = [i for i in self._instances if not i.draining]
        healthy = [i for i in live if not i.ejected(now)]
        if not healthy or len(healthy) * 100 < self.settings.panic_threshold_percent * len(live):
            return live, live  # panic
        return live, healthy

    def _two(self, candidates: list[Instance]) -> tuple[Instance, Instance]:
        a, b = self._rng.sample(range(len(candidates)), 2)
        return candidates[a], candidates[b]

    def _pick_peak_ewma(self, candidates: list[Instance], now: float) -> Instance:
        a, b = self._two(candidates)
        return self._ramped(*((a, b) if self._cost(a, now) <= self._cost(b, now) else (b, a)), now)

    def _pick_least_request(self, candidates: list[Instance], now: float) -> Instance:
        a, b = self._two(candidates)
        return self._ramped(*((a, b) if self._load(a, now) <= self._load(b, now) else (b, a)), now)

    def _pick_round_robin(self, candidates: list[Instance], now: float) -> Instance:
        turn = next(self._round_robin)
        return self._ramped(candidates[turn % len(candidates)], candidates[(turn + 1) % len(candidates)], now)

    def _ramped(self, winner: Instance, other: Instance, now: float) -> Instance:
        """``winner``, or while it is new (slow start) only with a chance that grows to 1 over the window.

        So a new or returning instance gets a tenth of its share at first, whatever the
        load, instead of every call its fresh, low cost would win (Envoy's slow start).
        """
        ramp = self._ramp(winner, now)
        # The other only if it is not ramping up itself: two newcomers compare by cost.
        if ramp >= 1.0 or self._ramp(other, now) < 1.0 or self._rng.random() < ramp:
            return winner
        return other

    def _ramp(self, instance: Instance, now: float) -> float:
        window = self.settings.slow_start_seconds
        age = now - instance.added_at
        return 1.0 if window <= 0 or age >= window else max(_MIN_RAMP, age / window)

    def _cost(self, instance: Instance, now: float) -> float:
        """Peak-EWMA RTT x (in flight + 1)."""
        return instance.decayed_ewma(now, self.settings.decay_seconds) * (instance.in_flight + 1)

    def _load(self, instance: Instance, now: float) -> float:
        return float(instance.in_flight + 1)

    def _typical_ewma(self, now: float, newcomer: Instance | None = None) -> float:
        """Where a new or returning instance starts: its healthy peers' mean EWMA, or the default RTT.

        Starting from the default alone would starve it when the others are much faster,
        or flood it when they are much slower.
        """
        decay = self.settings.decay_seconds
        peers = [
            i.decayed_ewma(now, decay)
            for i in self._instances
            if i is not newcomer and not i.draining and not i.ejected(now)
        ]
        return sum(peers) / len(peers) if peers else self.settings.default_rtt

    # -- what an attempt taught ----------------------------------------------------

    def finished(
        self,
        instance: Instance,
        outcome: AttemptOutcome,
        rtt: float,
        retry_after: float | None = None,
    ) -> bool:
        """Record an attempt's end; True when it failed and so, now, has every instance.

        The caller's breaker counts an instance's failure only then: while another
        instance answers, one sick instance is the balancer's business, not the breaker's.
        """
        with self._lock:
            all_failing, removed = self._finished(instance, outcome, rtt, retry_after)
        if self.events is not None:
            self.events.attempt_ended(instance, outcome)
        if removed:
            self._changed()
        return all_failing

    def _finished(
        self, instance: Instance, outcome: AttemptOutcome, rtt: float, retry_after: float | None
    ) -> tuple[bool, bool]:
        s, now = self.settings, self.clock.now()
        instance.in_flight -= 1
        all_failing = False
        if outcome == "cancelled":
            # A hedge's loser or a caller gone: it took at least this long, which says it
            # is slow when that is more than its EWMA (else the balancer never learns it).
            if rtt > instance.decayed_ewma(now, s.decay_seconds):
                instance.observe(rtt, now, s.decay_seconds)
        elif outcome in ("success", "error"):
            instance.requests += 1
            instance.interval_requests += 1
            instance.consecutive_failures = 0
            instance.observe(rtt, now, s.decay_seconds)
            self._all_failing = False
        else:
            instance.requests += 1
            instance.failures += 1
            if retry_after is not None and retry_after > 0:
                instance.retry_after_until = now + min(retry_after, s.max_retry_after_seconds)
            if outcome == "failure":
                instance.interval_requests += 1
                instance.interval_failures += 1
                instance.consecutive_failures += 1
                # A fast failure must not make the instance look fast.
                instance.observe(max(rtt, s.failure_penalty_seconds), now, s.decay_seconds)
                self._outliers.after_failure(instance, [i for i in self._instances if not i.draining], now)
            all_failing = self._every_instance_failing(now)
            if all_failing and not self._all_failing and self.on_all_failed is not None:
                self.on_all_failed()
            self._all_failing = all_failing
        removed = instance.draining and instance.in_flight == 0 and instance.url in self._by_url
        if removed:
            self._remove(instance)
        return all_failing, removed

    def _every_instance_failing(self, now: float) -> bool:
        return all(
            i.ejected(now) or i.consecutive_failures > 0 or now < i.retry_after_until
            for i in self._instances
            if not i.draining
        )

    def _ejected(self, instance: Instance, reason: str) -> None:
        self._returning.add(instance)
        self._next_check = min(self._next_check, instance.ejected_until)
        if self.events is not None:
            self.events.ejected(instance, reason, instance.ejected_until - self.clock.now())

    def _maintain(self, now: float) -> None:
        """Due work, done at a pick: the failure-rate sweep, and instances whose ejection ended."""
        if now >= self._next_sweep:
            interval = self.settings.sweep_interval_seconds
            # A quiet upstream sweeps at its next pick: every interval since counts as one.
            intervals = 1 + int((now - self._next_sweep) // interval)
            self._next_sweep = now + interval
            self._outliers.sweep([i for i in self._instances if not i.draining], now, intervals)
        for instance in list(self._returning):
            if not instance.ejected(now):
                self._back(instance, now)
        self._next_check = min([self._next_sweep, *(i.ejected_until for i in self._returning)])

    def _back(self, instance: Instance, now: float) -> None:
        """An instance back from ejection starts afresh, and slowly."""
        self._returning.discard(instance)
        instance.ewma = self._typical_ewma(now, instance)
        instance.sampled = False
        instance.stamp = instance.added_at = now
        instance.consecutive_failures = 0

    # -- status --------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Instances by state: ``healthy``, ``ejected`` and ``draining`` (the metrics' gauge)."""
        now, out = self.clock.now(), {"healthy": 0, "ejected": 0, "draining": 0}
        for i in self._instances:
            out[i.state(now)] += 1
        return out

    def status(self) -> dict[str, Any]:
        """Each instance's state, EWMA and share of recent traffic, for the status API and dashboard."""
        s, now = self.settings, self.clock.now()
        live = [i for i in self._instances if not i.draining]
        shares = {i.url: i.recent_share(now, s.decay_seconds) for i in self._instances}
        total = sum(shares.values()) or 1.0
        rows = []
        for i in self._instances:
            state = i.state(now)
            rows.append(
                {
                    "address": i.address,
                    "url": i.url,
                    "state": state,
                    "ewma_ms": round(i.decayed_ewma(now, s.decay_seconds) * 1000, 3),
                    "in_flight": i.in_flight,
                    "share": round(shares[i.url] / total, 4),
                    "requests": i.requests,
                    "failures": i.failures,
                    "ejections": i.ejections,
                    "ejected_for_seconds": round(i.ejected_until - now, 3) if i.ejected(now) else None,
                    "last_ejection_reason": i.last_ejection_reason,
                }
            )
        ejected = sum(1 for i in live if i.ejected(now))
        split_live, balanced = self._split(now)
        return {
            "policy": s.policy,
            "healthy": len(live) - ejected,
            "ejected": ejected,
            "max_ejectable": max_ejectable(len(live), s.max_ejection_percent),
            "panic": bool(split_live) and balanced is split_live,
            "instances": rows,
        }
