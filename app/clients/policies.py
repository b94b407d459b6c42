"""ClientPolicies: every policy of one client, built from a ClientConfig in this one place, and reconfigured.

The container (one Singleton per upstream), a client built alone, and the factory all
get their policies from :meth:`ClientPolicies.from_config`, and a new config reaches
them through :meth:`ClientPolicies.reconfigure`: each policy is built and reconfigured
from the same settings below.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from app.balancing import Balancer, BalancerSettings, Instance
from app.clients.caching import ClientCache, cache_from_config
from app.clients.config import ClientConfig
from app.clients.reconfigure import check_live
from app.discovery import DiscoveryRunner, parse_discovery
from app.observability.instances import InstanceEvents
from app.observability.metrics import MetricFamilies, default_families
from app.observability.observer import CallObserver
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import BreakerOptions, CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import is_breaker_failure, is_breaker_neutral
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy
from app.resilience.window import CountWindow, OutcomeWindow, TimeWindow
from app.state import GlobalRateLimiter, GlobalRetryBudget, SharedBreaker, SharedState

if TYPE_CHECKING:
    from app.clients.base import BaseServiceClient

__all__ = [
    "ClientPolicies",
    "DiscoveryFeed",
    "adaptive_from_config",
    "balancer_from_config",
    "balancer_settings_from_config",
    "breaker_from_config",
    "breaker_options",
    "budget_from_config",
    "bulkhead_from_config",
    "discovery_from_config",
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
) -> Balancer | None:
    """The balancer over the upstream's ``instances`` (none yet with discovery); None for one instance."""
    if not config.fleet:
        return None
    balancer = Balancer(config.instances or (), balancer_settings_from_config(config), clock=clock)

    def ewma_of(instance: object) -> float:
        # The decay is read at each scrape: a reconfigure may change it.
        return cast(Instance, instance).decayed_ewma(clock.now(), balancer.settings.decay_seconds)

    balancer.events = InstanceEvents(
        config.service_name,
        (families or default_families()) if config.enable_metrics else None,
        ewma_of=ewma_of,
        states=balancer.counts,
    )
    if config.discovery is None:
        balancer.events.instances_changed(balancer.instances)
    return balancer


class DiscoveryFeed:
    """Hands one discovery runner's sets to the balancer until it is retired (a new source took over).

    Retired at once, where the runner itself stops only when its loop gets to it: an
    update it delivers meanwhile must not undo the new source's set.
    """

    __slots__ = ("balancer", "retired")

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.retired = False

    def __call__(self, urls: tuple[str, ...]) -> None:
        """Apply ``urls``, unless retired."""
        if not self.retired:
            self.balancer.update(urls)


def discovery_from_config(
    config: ClientConfig, balancer: Balancer
) -> tuple[DiscoveryRunner, DiscoveryFeed] | None:
    """The discovery ``config`` names, feeding ``balancer``, and its feed; None without ``discovery``.

    Its first read, when the source can make one at once, reaches the balancer here;
    until a good set arrives the balancer keeps the instances it has.
    """
    if config.discovery is None:
        return None
    source = parse_discovery(
        config.discovery,
        config.base_url,
        min_ttl=config.discovery_min_ttl_seconds,
        max_ttl=config.discovery_max_ttl_seconds,
    )
    feed = DiscoveryFeed(balancer)
    runner = DiscoveryRunner(source, feed, service_name=config.service_name)
    balancer.on_all_failed = runner.refresh  # DNS answers may be stale: ask again now
    return runner, feed


def _discovery_source(config: ClientConfig) -> tuple[object, ...] | None:
    """What the discovery source is made of (a change of any of it starts a new one); None without one."""
    if config.discovery is None:
        return None
    ttl = config.discovery_min_ttl_seconds, config.discovery_max_ttl_seconds
    return config.discovery, config.base_url, *ttl


def breaker_options(config: ClientConfig, clock: Clock = MONOTONIC) -> BreakerOptions:
    """The breaker's settings in ``config``, with a new window (reconfigure keeps one of its shape)."""
    window: OutcomeWindow | None = None
    if config.circuit_breaker_mode == "failure_rate":
        size = config.circuit_breaker_window_size
        window = (
            CountWindow(size)
            if size is not None
            else TimeWindow(config.circuit_breaker_window_seconds, clock)
        )
    return BreakerOptions(
        failure_threshold=config.circuit_breaker_failure_threshold,
        reset_timeout_seconds=config.circuit_breaker_reset_timeout_seconds,
        half_open_max_calls=config.circuit_breaker_half_open_max_calls,
        window=window,
        failure_rate=config.circuit_breaker_failure_rate,
        minimum_calls=config.circuit_breaker_minimum_calls,
        slow_call_threshold=config.slow_call_threshold_seconds,
        slow_call_rate=config.slow_call_rate_threshold,
        backoff_factor=config.circuit_breaker_backoff_factor,
        max_reset_timeout_seconds=config.circuit_breaker_max_reset_timeout_seconds,
        reset_jitter=config.circuit_breaker_reset_jitter,
    )


def breaker_from_config(config: ClientConfig, clock: Clock = MONOTONIC) -> CircuitBreakerPolicy:
    """The client's circuit breaker, counting what ``is_breaker_failure`` counts."""
    return CircuitBreakerPolicy(
        **breaker_options(config, clock),
        is_failure=is_breaker_failure,
        is_neutral=is_breaker_neutral,
        clock=clock,
        name=config.service_name,
    )


def budget_from_config(
    config: ClientConfig, clock: Clock = MONOTONIC, shared_state: SharedState | None = None
) -> RetryBudget | None:
    """The client's retry budget, or None when off; the fleet's with ``retry_budget_scope="global"``."""
    if not config.retry_budget_enabled:
        return None
    budget = RetryBudget(*_budget_settings(config), clock=clock)
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
    settings = _rate_settings(config)
    return None if settings is None else RateLimiter(*settings, clock=clock)


def shared_limiter_from_config(
    config: ClientConfig, shared_state: SharedState | None, clock: Clock = MONOTONIC
) -> GlobalRateLimiter | None:
    """The limit over every replica, when the config asks for one and there is shared state."""
    settings = _rate_settings(config)
    if config.rate_limit_scope != "global" or shared_state is None or settings is None:
        return None
    return GlobalRateLimiter(shared_state, config.service_name, *settings, clock=clock)


def hedging_from_config(config: ClientConfig) -> HedgingPolicy | None:
    """The client's hedging policy, or None when off."""
    return HedgingPolicy(*_hedging_settings(config)) if config.hedging_enabled else None


def adaptive_from_config(config: ClientConfig) -> Gradient2Limit | None:
    """The client's adaptive concurrency limit, or None for a fixed bulkhead."""
    return Gradient2Limit(**_adaptive_settings(config)) if config.bulkhead_mode == "adaptive" else None


def bulkhead_from_config(config: ClientConfig) -> Bulkhead:
    """The client's bulkhead."""
    return Bulkhead(config.bulkhead_max_concurrent, config.bulkhead_max_waiting)


def retry_from_config(config: ClientConfig) -> RetryPolicy:
    """The client's retry policy."""
    return RetryPolicy(**_retry_settings(config))


# -- the settings each policy is built and reconfigured with ------------------------------


class _RetrySettings(TypedDict):
    max_retries: int
    base_delay: float
    max_delay: float
    backoff_factor: float
    jitter: bool
    retry_on_status: frozenset[int]


class _AdaptiveSettings(TypedDict):
    initial_limit: int
    min_limit: int
    max_limit: int
    smoothing: float
    tolerance: float


class _LogSettings(TypedDict):
    log_calls: bool
    log_request_body: bool
    log_response_body: bool


def _retry_settings(config: ClientConfig) -> _RetrySettings:
    return _RetrySettings(
        max_retries=config.max_retries,
        base_delay=config.retry_base_delay,
        max_delay=config.retry_max_delay,
        backoff_factor=config.retry_backoff_factor,
        jitter=config.retry_jitter,
        retry_on_status=config.retry_on_status,
    )


def _adaptive_settings(config: ClientConfig) -> _AdaptiveSettings:
    return _AdaptiveSettings(
        initial_limit=config.adaptive_initial_limit,
        min_limit=config.adaptive_min_limit,
        max_limit=config.bulkhead_max_concurrent,
        smoothing=config.adaptive_smoothing,
        tolerance=config.adaptive_tolerance,
    )


def _log_settings(config: ClientConfig) -> _LogSettings:
    return _LogSettings(
        log_calls=config.enable_request_logging,
        log_request_body=config.log_request_body,
        log_response_body=config.log_response_body,
    )


def _budget_settings(config: ClientConfig) -> tuple[float, float, float]:
    """Ratio, window and floor."""
    return (
        config.retry_budget_ratio,
        config.retry_budget_window_seconds,
        config.retry_budget_min_retries_per_second,
    )


def _rate_settings(config: ClientConfig) -> tuple[float, int, Literal["wait", "fail"]] | None:
    """Rate, burst and mode; None when there is no limit."""
    rate = config.rate_limit_per_second
    return None if rate is None else (rate, config.rate_limit_burst, config.rate_limit_mode)


def _hedging_settings(config: ClientConfig) -> tuple[float, int, float | None]:
    """Delay, attempts and percentile."""
    return config.hedging_delay_seconds, config.hedging_max_attempts, config.hedging_percentile


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
        families=families,
        clock=clock,
        **_log_settings(config),
    )
    breaker.add_state_listener(lambda _breaker, old, new: observer.breaker_changed(old, new))
    if observer.metrics is not None:
        observer.metrics.circuit(breaker.state_name)
        observer.metrics.watch(
            lambda: bulkhead.in_flight, lambda: bulkhead.queued, lambda: bulkhead.max_concurrent
        )
    return observer


# Compared and hashed by identity: it is one upstream's live state, not a value.
@dataclasses.dataclass(slots=True, kw_only=True, eq=False)
class ClientPolicies:
    """The policies one client runs its calls through; the optional ones are None when off.

    Clients of one upstream that share a ``ClientPolicies`` share its breaker, bulkhead,
    budget and stats. Build it with :meth:`from_config`, give it a new config with
    :meth:`reconfigure`; swap a piece for a test with ``dataclasses.replace(policies, breaker=...)``.
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
    #: The config the policies follow now (``from_config`` and ``reconfigure`` set it).
    config: ClientConfig | None = None
    #: What the discovery's sets go through to the balancer; retired when a new source takes over.
    discovery_feed: DiscoveryFeed | None = None
    #: The upstream's response cache (``cache_enabled``), shared by its clients; else None.
    cache: ClientCache | None = None
    #: The clients that run on these policies, held weakly (see ``clients``).
    _clients: weakref.WeakSet[BaseServiceClient] = dataclasses.field(
        default_factory=weakref.WeakSet, init=False, repr=False
    )

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
        balancer = balancer_from_config(config, clock, families)
        discovery = None if balancer is None else discovery_from_config(config, balancer)
        shared_limiter = shared_limiter_from_config(config, shared_state, clock)
        observer = observer_from_config(config, breaker, bulkhead, clock, families)
        metrics = observer.metrics
        return cls(
            breaker=breaker,
            bulkhead=bulkhead,
            retry=retry_from_config(config),
            observer=observer,
            clock=clock,
            budget=budget_from_config(config, clock, shared_state),
            rate_limiter=None if shared_limiter is not None else rate_limiter_from_config(config, clock),
            shared_limiter=shared_limiter,
            shared_breaker=shared_breaker_from_config(config, breaker, shared_state),
            hedging=hedging_from_config(config),
            adaptive=adaptive_from_config(config),
            balancer=balancer,
            discovery=None if discovery is None else discovery[0],
            discovery_feed=None if discovery is None else discovery[1],
            cache=cache_from_config(
                config, clock, None if metrics is None else metrics.families, shared_state
            ),
            config=config,
        )

    def add_client(self, client: BaseServiceClient) -> None:
        """Note a client that runs on these policies (its constructor does)."""
        self._clients.add(client)

    def clients(self) -> list[BaseServiceClient]:
        """The clients on these policies (held weakly, so a dropped one leaves): a new config goes to each."""
        return list(self._clients)

    def reconfigure(self, config: ClientConfig) -> None:
        """Give every policy ``config``'s settings in place, each keeping its state.

        The same objects stay (whoever holds one keeps it): the breaker keeps its state,
        counts and current opening; the bulkhead resizes without dropping a call; the rate
        limiter keeps its tokens; the budget and the adaptive limit keep their windows;
        the balancer keeps its instances and their state, and takes a changed
        ``instances`` list through ``update`` (removed ones drain). A changed discovery
        source is replaced: the old one's sets stop reaching the balancer at once, the
        balancer keeps its instances until the new one's first good set, and the client's
        transport stops the old runner and starts the new (``BalancedTransport.use_discovery``).
        Calls in flight keep the timeouts, hedging and retries they started with.

        ``ValueError`` naming each field, before anything changes, when ``config``
        changes what cannot change live (``reconfigure_problems``), or when the policies
        were not built from a config. The same config again changes nothing, so clients
        sharing these policies may each pass it on.
        """
        old = self.config
        if old is None:
            raise ValueError("policies built without a config cannot be reconfigured; use from_config")
        if config == old:
            return
        check_live(old, config)
        clock = self.clock
        self.breaker.reconfigure(**breaker_options(config, clock))
        if self.shared_breaker is not None:
            self.shared_breaker.reconfigure(quorum=config.circuit_breaker_shared_quorum)
        if self.adaptive is not None:
            self.adaptive.reconfigure(**_adaptive_settings(config))
        limit = config.bulkhead_max_concurrent if self.adaptive is None else self.adaptive.current
        self.bulkhead.reconfigure(limit, config.bulkhead_max_waiting)
        self.retry.reconfigure(**_retry_settings(config))
        if self.budget is not None:
            self.budget.reconfigure(*_budget_settings(config))
        rate = _rate_settings(config)
        for limiter in (self.rate_limiter, self.shared_limiter):
            if limiter is not None and rate is not None:
                limiter.reconfigure(*rate)
        if self.hedging is not None:
            self.hedging.reconfigure(*_hedging_settings(config))
        # The observer keeps its metrics and stats; only what it logs changes.
        for name, value in _log_settings(config).items():
            setattr(self.observer, name, value)
        if self.balancer is not None:
            self._reconfigure_fleet(self.balancer, old, config)
        self.config = config

    def _reconfigure_fleet(self, balancer: Balancer, old: ClientConfig, new: ClientConfig) -> None:
        balancer.reconfigure(balancer_settings_from_config(new))
        if _discovery_source(new) != _discovery_source(old):
            if self.discovery_feed is not None:
                self.discovery_feed.retired = True
            found = discovery_from_config(new, balancer)
            self.discovery, self.discovery_feed = (None, None) if found is None else found
            if found is None:
                balancer.on_all_failed = None
        if new.instances is not None and new.instances != old.instances:
            balancer.update(new.instances)

    @property
    def fleet_command(self) -> Callable[[str], Awaitable[None]] | None:
        """``await fleet_command("reset"|"isolate")`` on every replica's breaker, when it is shared."""
        shared = self.shared_breaker
        if shared is None:
            return None

        async def command(action: str) -> None:
            await (shared.reset() if action == "reset" else shared.isolate())

        return command

    def cache_status(self) -> dict[str, Any] | None:
        """The response cache's store and results, or None when the upstream has no cache."""
        return None if self.cache is None else self.cache.status()

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
