"""Runs the whole platform locally: the gateway and both reference upstreams."""

from launcher.platform import Platform, PortInUseError, ServiceProcess, plan

__all__ = ["Platform", "PortInUseError", "ServiceProcess", "plan"]
