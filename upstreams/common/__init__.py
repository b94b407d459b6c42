"""What both reference upstreams share: settings, chaos, deadlines, auth, errors, serving."""

from upstreams.common.service import UpstreamSettings, build_service, serve

__all__ = ["UpstreamSettings", "build_service", "serve"]
