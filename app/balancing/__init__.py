"""Picking an instance of an upstream: P2C over peak-EWMA cost, and outlier ejection (DESIGN §9)."""

from app.balancing.balancer import Balancer, BalancerEvents, NoInstanceError
from app.balancing.instance import Instance
from app.balancing.outlier import OutlierDetector, max_ejectable
from app.balancing.settings import BalancerSettings, Policy

__all__ = [
    "Balancer",
    "BalancerEvents",
    "BalancerSettings",
    "Instance",
    "NoInstanceError",
    "OutlierDetector",
    "Policy",
    "max_ejectable",
]
