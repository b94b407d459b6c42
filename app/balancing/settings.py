"""BalancerSettings: the balancer's and outlier detector's knobs, as plain values."""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["BalancerSettings", "Policy"]

Policy = Literal["p2c_peak_ewma", "least_request", "round_robin"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BalancerSettings:
    """What the balancer needs to know; built from a ClientConfig by the clients layer."""

    policy: Policy = "p2c_peak_ewma"
    #: The RTT a new instance is assumed to have before its first answer (not zero: Finagle, Linkerd).
    default_rtt: float = 0.05
    #: Time constant of the EWMA's decay, on samples and towards zero while idle (Finagle: 10 s).
    decay_seconds: float = 10.0
    #: A failed attempt counts as at least this slow (Linkerd's failure penalty), so a
    #: fast-failing instance does not look fast.
    failure_penalty_seconds: float = 1.0
    #: A new (or returning) instance ramps from a tenth of its share to all of it over this long.
    slow_start_seconds: float = 10.0
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    failure_rate_minimum_requests: int = 20
    sweep_interval_seconds: float = 10.0
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_ejection_percent: int = 50
    panic_threshold_percent: int = 50
    #: The longest Retry-After an instance is avoided for.
    max_retry_after_seconds: float = 30.0
