"""ClientPolicies: every policy of one client, built from a ClientConfig in this one place.

The container (one Singleton per upstream), a client built alone, and the factory all
get their policies from :meth:`ClientPolicies.from_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, cast

from app.balancing import Balancer, BalancerSettings, Instance
from app.clients.config import ClientConfig
from app.discovery import DiscoveryRunner, parse_discovery
from app.observability.instances import InstanceEvents
from app.observability.metrics import MetricFamilies, default_families
from app.observability.observer import CallObserver
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import is_breaker_failure, is_breaker_neutral
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy
from app.resilience.window import CountWindow, OutcomeWindow, TimeWindow
from app.state import GlobalRateLimiter, GlobalRetryBudget, SharedBreaker, SharedState

__all__ = [
    "ClientPolicies",
    "adaptive_from_config",
    "balancer_from_config",
    "balancer_settings_from_config",
    "breaker_from_config",
    "budget_from_config",
    "bulkhead_from_config",
    "hedging_from_config",
    "observer_from_config",
    "rate_limiter_from_config",
    "retry_from_config",
    "shared_breaker_from_config",
    "shared_limiter_from_config",
]


def balancer_settings_from_config(config: ClientConfig) -> BalancerSettings:
    """The balancer's and outlier detector's knobs, from the config's fleet section."""
    return BalancerSettings(
        policy=config.load_balancer,
        default_rtt=config.load_balancer_default_rtt_seconds,
        decay_seconds=config.load_balancer_decay_seconds,
        failure_penalty_seconds=config.load_balancer_failure_penalty_seconds,
        slow_start_seconds=config.load_balancer_slow_start_seconds,
        consecutive_failures=config.outlier_consecutive_failures,
        failure_rate=config.outlier_failure_rate,
        failure_rate_minimum_requests=config.outlier_failure_rate_minimum_requests,
        sweep_interval_seconds=config.outlier_sweep_interval_seconds,
        base_ejection_seconds=config.outlier_base_ejection_seconds,
        max_ejection_seconds=config.outlier_max_ejection_seconds,
        max_ejection_percent=config.outlier_max_ejection_percent,
        panic_threshold_percent=config.panic_threshold_percent,
        max_retry_after_seconds=config.retry_max_delay,
    )


def balancer_from_config(
    config: ClientConfig,
    clock: Clock = MONOTONIC,
    families: MetricFamilies | None = None,
) -> tuple[Balancer | None, DiscoveryRunner | None]:
    """The balancer over the upstream's instances and the discovery feeding it; (None, None) for one.

    Instances come from ``instances``, or from ``discovery`` (whose first read, when the
    source can do one at once, is the starting set).
    """
    if not config.fleet:
        return None, None
    balancer = Balancer(config.instances or (), balancer_settings_from_config(config), clock=clock)
    decay = balancer.settings.decay_seconds

    balancer.events = InstanceEvents(
        config.service_name,
        (families or default_families()) if config.enable_metrics else None,
        ewma_of=lambda instance: cast(Instance, instance).decayed_ewma(clock.now(), decay),
        states=balancer.counts,
    )
    if config.discovery is None:
        balancer.events.instances_changed(balancer.instances)
        return balancer, None
    source = parse_discovery(
        config.discovery,
        config.base_url,
        min_ttl=config.discovery_min_ttl_seconds,
        max_ttl=config.discovery_max_ttl_seconds,
    )
    # Its first read, when the source can make one at once, reaches the balancer here.
    runner = DiscoveryRunner(source, balancer.update, service_name=config.service_name)
    balancer.on_all_failed = runner.refresh  # DNS answers may be stale: ask again now
    return balancer, runner


def breaker_from_config(config: ClientConfig, clock: Clock = MONOTONIC) -> CircuitBreakerPolicy:
    """The client's circuit breaker, counting what ``is_breaker_failure`` counts."""
    window: OutcomeWindow | None = None
    if config.circuit_breaker_mode == "failure_rate":
        size = config.circuit_breaker_window_size
        window = (
            CountWindow(size)
            if size is not None
            else TimeWindow(config.circuit_breaker_window_seconds, clock)
        )
    return CircuitBreakerPolicy(
        failure_threshold=config.circuit_breaker_failure_threshold,
        reset_timeout_seconds=config.circuit_breaker_reset_timeout_seconds,
        half_open_max_calls=config.circuit_breaker_half_open_max_calls,
        is_failure=is_breaker_failure,
        is_neutral=is_breaker_neutral,
        clock=clock,
        name=config.service_name,
        window=window,
        failure_rate=config.circuit_breaker_failure_rate,
        minimum_calls=config.circuit_breaker_minimum_calls,
        slow_call_threshold=config.slow_call_threshold_seconds,
        slow_call_rate=config.slow_call_rate_threshold,
        backoff_factor=config.circuit_breaker_backoff_factor,
        max_reset_timeout_seconds=config.circuit_breaker_max_reset_timeout_seconds,
        reset_jitter=config.circuit_breaker_reset_jitter,
    )


def budget_from_config(
    config: ClientConfig, clock: Clock = MONOTONIC, shared_state: SharedState | None = None
) -> RetryBudget | None:
    """The client's retry budget, or None when off; the fleet's with ``retry_budget_scope="global"``."""
    if not config.retry_budget_enabled:
        return None
    budget = RetryBudget(
        ratio=config.retry_budget_ratio,
        window_seconds=config.retry_budget_window_seconds,
        min_per_second=config.retry_budget_min_retries_per_second,
        clock=clock,
    )
    if shared_state is not None and config.retry_budget_scope == "global":
        GlobalRetryBudget(shared_state, budget, config.service_name)  # started and stopped with the state
    return budget


def shared_breaker_from_config(
    config: ClientConfig, breaker: CircuitBreakerPolicy, shared_state: SharedState | None
) -> SharedBreaker | None:
    """The breaker's coordination over the replicas, when the config asks for it and there is shared state."""
    if shared_state is None or not config.circuit_breaker_shared:
        return None
    return SharedBreaker(
        shared_state, breaker, config.service_name, quorum=config.circuit_breaker_shared_quorum
    )


def rate_limiter_from_config(config: ClientConfig, clock: Clock = MONOTONIC) -> RateLimiter | None:
    """The client's rate limiter, or None when off."""
    if config.rate_limit_per_second is None:
        return None
    return RateLimiter(config.rate_limit_per_second, config.rate_limit_burst, config.rate_limit_mode, clock)


def shared_limiter_from_config(
    config: ClientConfig, shared_state: SharedState | None, clock: Clock = MONOTONIC
) -> GlobalRateLimiter | None:
    """The limit over every replica, when the config asks for one and there is shared state."""
    if config.rate_limit_scope != "global" or shared_state is None or config.rate_limit_per_second is None:
        return None
    return GlobalRateLimiter(
        shared_state,
        config.service_name,
        config.rate_limit_per_second,
        config.rate_limit_burst,
        config.rate_limit_mode,
        clock=clock,
    )


def hedging_from_config(config: ClientConfig) -> HedgingPolicy | None:
    """The client's hedging policy, or None when off."""
    if not config.hedging_enabled:
        return None
    return HedgingPolicy(config.hedging_delay_seconds, config.hedging_max_attempts, config.hedging_percentile)


def adaptive_from_config(config: ClientConfig) -> Gradient2Limit | None:
    """The client's adaptive concurrency limit, or None for a fixed bulkhead."""
    if config.bulkhead_mode != "adaptive":
        return None
    return Gradient2Limit(
        initial_limit=config.adaptive_initial_limit,
        min_limit=config.adaptive_min_limit,
        max_limit=config.bulkhead_max_concurrent,
        smoothing=config.adaptive_smoothing,
        tolerance=config.adaptive_tolerance,
    )


def bulkhead_from_config(config: ClientConfig) -> Bulkhead:
    """The client's bulkhead."""
    return Bulkhead(config.bulkhead_max_concurrent, config.bulkhead_max_waiting)


def retry_from_config(config: ClientConfig) -> RetryPolicy:
    """The client's retry policy."""
    return RetryPolicy(
        max_retries=config.max_retries,
        base_delay=config.retry_base_delay,
        max_delay=config.retry_max_delay,
        backoff_factor=config.retry_backoff_factor,
        jitter=config.retry_jitter,
        retry_on_status=config.retry_on_status,
    )


def observer_from_config(
    config: ClientConfig,
    breaker: CircuitBreakerPolicy,
    bulkhead: Bulkhead,
    clock: Clock = MONOTONIC,
    families: MetricFamilies | None = None,
) -> CallObserver:
    """The client's observer, listening to its breaker and reading its bulkhead's gauges."""
    observer = CallObserver(
        config.service_name,
        metrics=config.enable_metrics,
        log_calls=config.enable_request_logging,
        log_request_body=config.log_request_body,
        log_response_body=config.log_response_body,
        families=families,
        clock=clock,
    )
    breaker.add_state_listener(lambda _breaker, old, new: observer.breaker_changed(old, new))
    if observer.metrics is not None:
        observer.metrics.circuit(breaker.state_name)
        observer.metrics.watch(
            lambda: bulkhead.in_flight, lambda: bulkhead.queued, lambda: bulkhead.max_concurrent
        )
    return observer


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientPolicies:
    """The policies one client runs its calls through; the optional ones are None when off.

    Clients of one upstream that share a ``ClientPolicies`` share its breaker, bulkhead,
    budget and stats. Build it with :meth:`from_config`; swap a piece for a test with
    ``dataclasses.replace(policies, breaker=...)``.
    """

    breaker: CircuitBreakerPolicy
    bulkhead: Bulkhead
    retry: RetryPolicy
    observer: CallObserver
    clock: Clock = MONOTONIC
    budget: RetryBudget | None = None
    rate_limiter: RateLimiter | None = None
    hedging: HedgingPolicy | None = None
    adaptive: Gradient2Limit | None = None
    #: The balancer over the upstream's instances and the discovery feeding it, or None for one.
    balancer: Balancer | None = None
    discovery: DiscoveryRunner | None = None
    #: The limit over every replica (``rate_limit_scope="global"`` with shared state), else None.
    shared_limiter: GlobalRateLimiter | None = None
    #: The breaker's coordination over the replicas (``circuit_breaker_shared``), else None.
    shared_breaker: SharedBreaker | None = None

    @classmethod
    def from_config(
        cls,
        config: ClientConfig,
        clock: Clock = MONOTONIC,
        *,
        families: MetricFamilies | None = None,
        shared_state: SharedState | None = None,
    ) -> ClientPolicies:
        """Every policy ``config`` asks for, on ``clock``; metrics into ``families`` (default registry).

        With ``shared_state`` (the process's Redis, when the settings name one), a
        ``rate_limit_scope="global"`` limit is kept there; without it, a global limit is local.
        """
        breaker = breaker_from_config(config, clock)
        bulkhead = bulkhead_from_config(config)
        balancer, discovery = balancer_from_config(config, clock, families)
        shared_limiter = shared_limiter_from_config(config, shared_state, clock)
        return cls(
            breaker=breaker,
            bulkhead=bulkhead,
            retry=retry_from_config(config),
            observer=observer_from_config(config, breaker, bulkhead, clock, families),
            clock=clock,
            budget=budget_from_config(config, clock, shared_state),
            rate_limiter=None if shared_limiter is not None else rate_limiter_from_config(config, clock),
            shared_limiter=shared_limiter,
            shared_breaker=shared_breaker_from_config(config, breaker, shared_state),
            hedging=hedging_from_config(config),
            adaptive=adaptive_from_config(config),
            balancer=balancer,
            discovery=discovery,
        )

    @property
    def fleet_command(self) -> Callable[[str], Awaitable[None]] | None:
        """``await fleet_command("reset"|"isolate")`` on every replica's breaker, when it is shared."""
        shared = self.shared_breaker
        if shared is None:
            return None

        async def command(action: str) -> None:
            await (shared.reset() if action == "reset" else shared.isolate())

        return command

    def shared_status(self) -> dict[str, Any] | None:
        """The global limit's shared state (Redis, degraded or not, replicas seen), or None when local."""
        limiter, breaker = self.shared_limiter, self.shared_breaker
        state = limiter.state if limiter is not None else breaker.state if breaker is not None else None
        if state is None:
            return None
        return {
            "rate_limit": "global" if limiter is not None else "local",
            "breaker": None if breaker is None else breaker.status(),
            **state.status(),
        }

    def fleet_status(self) -> dict[str, Any] | None:
        """The instances, their state, EWMA and share, and the discovery's health; None for one instance."""
        if self.balancer is None:
            return None
        out = self.balancer.status()
        out["discovery"] = None if self.discovery is None else self.discovery.status()
        return out
