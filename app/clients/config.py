"""ClientConfig: every knob of one service client, validated at construction."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

__all__ = ["ClientConfig"]

PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]
Delay = Annotated[float, Field(ge=0, le=3600)]


class ClientConfig(BaseModel):
    """Options of one service client (DESIGN §5). Immutable; invalid values raise at once.

    Defaults are conservative: 3 retries with jittered exponential backoff from 0.5 s
    up to 10 s, a breaker that opens after 5 consecutive failures for 30 s, and a
    bulkhead of 100 in flight plus 100 waiting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    # connection
    base_url: str
    timeout_seconds: PositiveSeconds = 30.0
    total_timeout_seconds: PositiveSeconds | None = None
    api_key: SecretStr | None = None
    api_key_header: str = Field(default="X-API-Key", min_length=1)
    follow_redirects: bool = False
    max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)

    # retry
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_base_delay: Delay = 0.5
    retry_max_delay: Delay = 10.0
    retry_backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    retry_jitter: bool = True
    retry_on_status: frozenset[int] = frozenset({429, 502, 503, 504})

    # circuit breaker
    circuit_breaker_failure_threshold: int = Field(default=5, ge=1, le=10_000)
    circuit_breaker_reset_timeout_seconds: PositiveSeconds = 30.0
    circuit_breaker_half_open_max_calls: int = Field(default=1, ge=1, le=1000)

    # bulkhead
    bulkhead_max_concurrent: int = Field(default=100, ge=1, le=100_000)
    bulkhead_max_waiting: int = Field(default=100, ge=0, le=1_000_000)

    # logging and metrics
    enable_metrics: bool = True
    enable_request_logging: bool = True
    log_request_body: bool = False
    log_response_body: bool = False

    service_name: str = Field(default="service", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        if url.query_string or url.fragment:
            raise ValueError("must not carry a query or a fragment")
        if url.user or url.password:
            raise ValueError("must not carry credentials; use api_key")
        # One trailing slash, so endpoints always join under the path prefix.
        return str(url).rstrip("/") + "/"

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
        return self

    def __repr__(self) -> str:
        # The default repr would list all 25 fields; these are the ones a log reader needs.
        return (
            f"ClientConfig(service_name={self.service_name!r}, base_url={self.base_url!r}, "
            f"timeout_seconds={self.timeout_seconds}, max_retries={self.max_retries})"
        )
