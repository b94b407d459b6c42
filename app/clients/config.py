"""ClientConfig: every knob of one service client, validated at construction."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from app.auth.config import AuthConfig, header_value_problem, is_header_name
from app.discovery import parse_discovery
from app.resilience.breaker import BREAKER_DEFAULTS

__all__ = ["ClientConfig"]

PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]
Delay = Annotated[float, Field(ge=0, le=3600)]
Ratio = Annotated[float, Field(gt=0, le=1)]

#: The adaptive limit's starting point when not given (capped by the bulkhead's maximum).
_ADAPTIVE_INITIAL_LIMIT = 20


def _instance_url(value: str) -> str:
    """An absolute http(s) URL without query, fragment or credentials, with one trailing slash."""
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    if url.query_string or url.fragment:
        raise ValueError("must not carry a query or a fragment")
    if url.user or url.password:
        raise ValueError("must not carry credentials; use api_key")
    # One trailing slash, so endpoints always join under the path prefix.
    return str(url).rstrip("/") + "/"


class ClientConfig(BaseModel):
    """Options of one service client (DESIGN §5). Immutable; invalid values raise at once.

    The seed's fields keep the seed's names and defaults; they are a contract, pinned
    by a test: a 10 s attempt timeout, 3 retries with jittered exponential backoff from
    0.5 s up to 30 s, a breaker that opens after 5 consecutive failures for 60 s, a
    bulkhead of 10 in flight plus 20 waiting, and ``service_name`` ``"unknown-service"``.
    A deployment sets what it needs in its settings (the gateway's give both upstreams
    30 s attempts and a larger bulkhead), never by changing these.

    The fields added since (no total deadline, the failure-rate breaker, retry budget,
    hedging, adaptive concurrency, rate limit) are off or conservative until switched
    on; deadline propagation is on. The README lists each with its anchor.

    Configured header parts are checked here, so a bad one stops start-up instead of
    failing every call: ``api_key_header`` must be an RFC 9110 token and ``api_key``
    a header value without control characters (CR/LF would split the request).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    # connection
    base_url: str
    timeout_seconds: PositiveSeconds = 10.0
    total_timeout_seconds: PositiveSeconds | None = None
    api_key: SecretStr | None = None
    api_key_header: str = Field(default="X-API-Key", min_length=1)
    #: Credentials beyond the seed's API key (DESIGN §9): ``{"type": "bearer", "token": ...}``,
    #: ``{"type": "oauth2_client_credentials", "token_url": ..., ...}`` or ``{"type": "api_key", ...}``;
    #: None sends ``api_key`` alone, as the seed does.
    auth: AuthConfig | None = None
    follow_redirects: bool = False
    #: ``aiohttp`` (the default), or ``lean``: the lean HTTP/1.1 transport for a plain
    #: ``http://`` upstream (an https one, or an injected session, still goes through aiohttp).
    transport: Literal["aiohttp", "lean"] = "aiohttp"
    max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)

    # retry
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_base_delay: Delay = 0.5
    retry_max_delay: Delay = 30.0
    retry_backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    retry_jitter: bool = True
    retry_on_status: frozenset[int] = frozenset({429, 502, 503, 504})

    # circuit breaker
    circuit_breaker_failure_threshold: int = Field(
        default=BREAKER_DEFAULTS.failure_threshold, ge=1, le=10_000
    )
    circuit_breaker_reset_timeout_seconds: PositiveSeconds = BREAKER_DEFAULTS.reset_timeout_seconds
    circuit_breaker_half_open_max_calls: int = Field(
        default=BREAKER_DEFAULTS.half_open_max_calls, ge=1, le=1000
    )
    #: ``consecutive`` (aiobreaker's) or ``failure_rate`` over a sliding window (resilience4j's).
    circuit_breaker_mode: Literal["consecutive", "failure_rate"] = "consecutive"
    circuit_breaker_failure_rate: Ratio = BREAKER_DEFAULTS.failure_rate
    circuit_breaker_window_seconds: PositiveSeconds = 30.0
    #: A count-based window of this many calls instead of the time-based one.
    circuit_breaker_window_size: int | None = Field(default=None, ge=1, le=100_000)
    circuit_breaker_minimum_calls: int = Field(default=BREAKER_DEFAULTS.minimum_calls, ge=1, le=100_000)
    slow_call_threshold_seconds: PositiveSeconds | None = None
    slow_call_rate_threshold: Ratio = BREAKER_DEFAULTS.slow_call_rate
    #: Each consecutive opening lasts this much longer (1 = fixed), up to the cap below.
    circuit_breaker_backoff_factor: float = Field(default=BREAKER_DEFAULTS.backoff_factor, ge=1.0, le=10.0)
    circuit_breaker_max_reset_timeout_seconds: PositiveSeconds = BREAKER_DEFAULTS.max_reset_timeout_seconds
    #: Spreads growing break durations only (backoff_factor > 1); a fixed one stays exact.
    circuit_breaker_reset_jitter: float = Field(default=BREAKER_DEFAULTS.reset_jitter, ge=0, lt=1)

    #: With shared state (the settings' ``redis_url``): coordinate this breaker over the
    #: replicas (a quorum of open leases opens the others; one half-open probe at a time).
    circuit_breaker_shared: bool = False
    #: Open leases that open a replica whose own breaker is closed; None: a majority of the
    #: replicas seen, at least 2.
    circuit_breaker_shared_quorum: int | None = Field(default=None, ge=1, le=1000)

    # retry budget (Finagle), off by default
    retry_budget_enabled: bool = False
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=10)
    retry_budget_window_seconds: PositiveSeconds = 10.0
    retry_budget_min_retries_per_second: float = Field(default=10.0, ge=0, le=100_000)
    #: ``local``: this process's calls; ``global``: the fleet's, synced through shared state.
    retry_budget_scope: Literal["local", "global"] = "local"

    # deadline propagation (gRPC, Envoy)
    propagate_deadline: bool = True
    deadline_safety_margin_seconds: Delay = 0.005

    # hedging (Polly, Finagle backup requests), off by default
    hedging_enabled: bool = False
    hedging_delay_seconds: PositiveSeconds = 0.1
    hedging_percentile: float | None = Field(default=None, gt=0, lt=100)
    hedging_max_attempts: int = Field(default=2, ge=2, le=10)

    # bulkhead
    bulkhead_max_concurrent: int = Field(default=10, ge=1, le=100_000)
    bulkhead_max_waiting: int = Field(default=20, ge=0, le=1_000_000)
    #: ``fixed``, or ``adaptive``: a Gradient2 limit between the min and max below.
    bulkhead_mode: Literal["fixed", "adaptive"] = "fixed"
    adaptive_min_limit: int = Field(default=1, ge=1, le=100_000)
    #: Default 20, or ``bulkhead_max_concurrent`` when that is lower.
    adaptive_initial_limit: int = Field(default=_ADAPTIVE_INITIAL_LIMIT, ge=1, le=100_000)
    adaptive_smoothing: Ratio = 0.2
    adaptive_tolerance: float = Field(default=1.5, ge=1.0, le=10.0)

    # client-side rate limit, off by default (None)
    rate_limit_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    rate_limit_burst: int = Field(default=10, ge=1, le=1_000_000)
    rate_limit_mode: Literal["wait", "fail"] = "wait"
    #: ``local``: this process's calls; ``global``: every replica's together, kept in Redis
    #: (needs the settings' ``redis_url``; while Redis is unavailable, see ``failure_mode``).
    rate_limit_scope: Literal["local", "global"] = "local"

    # typed contracts (DESIGN §9): how an answer that does not match its model is treated
    #: ``strict``: ``ResponseDecodeError`` naming the field; ``lax``: logged and counted,
    #: the decoded answer returned unvalidated; ``off``: not checked (the fastest).
    response_validation: Literal["strict", "lax", "off"] = "strict"

    # response cache (RFC 9111, DESIGN §9): off unless switched on
    cache_enabled: bool = False
    #: The memory store's bound (entries, headers and bodies together), and the largest
    #: entry a Redis store takes.
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=16 * 1024 * 1024 * 1024)
    #: ``memory``: this process's; ``redis``: shared by the replicas through the settings'
    #: ``redis_url`` (refused at start without one). A failing store is a miss, never an error.
    cache_store: Literal["memory", "redis"] = "memory"

    # logging and metrics
    enable_metrics: bool = True
    enable_request_logging: bool = True
    log_request_body: bool = False
    log_response_body: bool = False

    service_name: str = Field(default="unknown-service", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    # many instances of the upstream (DESIGN §9): off unless one of the two is set
    #: Base URLs of the upstream's instances; ``base_url`` defaults to the first.
    instances: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=1000)
    #: Where the instances come from: ``file:///abs/instances.json``, ``dns+srv://_svc._tcp.name``,
    #: ``dns://name:port``, ``etcd://host:2379/prefix``.
    discovery: str | None = None
    discovery_min_ttl_seconds: PositiveSeconds = 5.0
    discovery_max_ttl_seconds: PositiveSeconds = 300.0
    load_balancer: Literal["p2c_peak_ewma", "least_request", "round_robin"] = "p2c_peak_ewma"
    load_balancer_default_rtt_seconds: PositiveSeconds = 0.05
    load_balancer_decay_seconds: PositiveSeconds = 10.0
    load_balancer_failure_penalty_seconds: PositiveSeconds = 1.0
    load_balancer_slow_start_seconds: Delay = 10.0
    outlier_consecutive_failures: int = Field(default=5, ge=1, le=10_000)
    outlier_failure_rate: Ratio = 0.5
    outlier_failure_rate_minimum_requests: int = Field(default=20, ge=1, le=1_000_000)
    outlier_sweep_interval_seconds: PositiveSeconds = 10.0
    outlier_base_ejection_seconds: PositiveSeconds = 30.0
    outlier_max_ejection_seconds: PositiveSeconds = 300.0
    outlier_max_ejection_percent: int = Field(default=50, ge=0, le=100)
    panic_threshold_percent: int = Field(default=50, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _base_url_from_instances(cls, data: Any) -> Any:
        # With a list of instances, the first one stands for the upstream where one URL is
        # needed (endpoint checks, redirects' path prefix, the repr).
        if isinstance(data, dict) and "base_url" not in data:
            instances = data.get("instances")
            if isinstance(instances, list | tuple) and instances and isinstance(instances[0], str):
                data = {**data, "base_url": instances[0]}
        return data

    @model_validator(mode="before")
    @classmethod
    def _adaptive_start_within_max(cls, data: Any) -> Any:
        # The seed's bulkhead (10) is below the adaptive default start (20): switching
        # the mode on must not fail for a limit the user never set.
        if isinstance(data, dict) and "adaptive_initial_limit" not in data:
            maximum = data.get("bulkhead_max_concurrent", cls.model_fields["bulkhead_max_concurrent"].default)
            if isinstance(maximum, int) and 1 <= maximum < _ADAPTIVE_INITIAL_LIMIT:
                data = {**data, "adaptive_initial_limit": maximum}
        return data

    @field_validator("api_key_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not is_header_name(value):
            raise ValueError("must be a header name (an RFC 9110 token: letters, digits, !#$%&'*+-.^_`|~)")
        return value

    @field_validator("api_key")
    @classmethod
    def _header_value(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never shows the value: it is a secret.
        problem = None if value is None else header_value_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        return _instance_url(value)

    @field_validator("instances")
    @classmethod
    def _instance_urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        urls: list[str] = []
        for i, url in enumerate(value):
            try:
                urls.append(_instance_url(url))
            except ValueError as exc:
                raise ValueError(f"instance {i}: {exc}") from None
        return tuple(dict.fromkeys(urls))

    @field_validator("discovery")
    @classmethod
    def _discovery_uri(cls, value: str | None) -> str | None:
        if value is not None:
            parse_discovery(value, "http://placeholder/")  # ValueError naming what is wrong
        return value

    @property
    def fleet(self) -> bool:
        """True when the upstream has several instances (or discovery finds them)."""
        return self.instances is not None or self.discovery is not None

    @field_validator("retry_on_status")
    @classmethod
    def _statuses(cls, value: frozenset[int]) -> frozenset[int]:
        bad = sorted(s for s in value if not 400 <= s <= 599)
        if bad:
            raise ValueError(f"only 4xx and 5xx statuses can be retried, got {bad}")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> ClientConfig:
        if self.retry_base_delay > self.retry_max_delay:
            raise ValueError("retry_base_delay must not exceed retry_max_delay")
        if self.retry_budget_scope == "global" and not self.retry_budget_enabled:
            raise ValueError("retry_budget_scope=global needs retry_budget_enabled")
        if self.rate_limit_scope == "global" and self.rate_limit_per_second is None:
            raise ValueError("rate_limit_scope=global needs rate_limit_per_second")
        if self.instances is not None and self.discovery is not None:
            raise ValueError("give either instances or discovery, not both")
        self._one_credential_per_header()
        if self.discovery_min_ttl_seconds > self.discovery_max_ttl_seconds:
            raise ValueError("discovery_min_ttl_seconds must not exceed discovery_max_ttl_seconds")
        if self.outlier_base_ejection_seconds > self.outlier_max_ejection_seconds:
            raise ValueError("outlier_base_ejection_seconds must not exceed outlier_max_ejection_seconds")
        if self.bulkhead_mode == "adaptive" and not (
            self.adaptive_min_limit <= self.adaptive_initial_limit <= self.bulkhead_max_concurrent
        ):
            raise ValueError(
                "adaptive limits need adaptive_min_limit <= adaptive_initial_limit <= bulkhead_max_concurrent"
            )
        return self

    def _one_credential_per_header(self) -> None:
        """Two credentials may go together (an API key and a token), never into one header."""
        auth = self.auth
        if auth is None or self.api_key is None:
            return
        if auth.type == "api_key":
            raise ValueError("give the API key as api_key or as auth (type api_key), not both")
        if self.api_key_header.lower() == "authorization":
            raise ValueError(
                f"api_key_header Authorization would clash with the {auth.type} credentials in auth"
            )

    def __repr__(self) -> str:
        # The default repr would list all 25 fields; these are the ones a log reader needs.
        return (
            f"ClientConfig(service_name={self.service_name!r}, base_url={self.base_url!r}, "
            f"timeout_seconds={self.timeout_seconds}, max_retries={self.max_retries})"
        )
