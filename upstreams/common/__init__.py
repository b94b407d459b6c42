"""What the reference services share: settings, chaos, deadlines, auth, errors, serving."""

from upstreams.common.service import ServiceSettings, UpstreamSettings, build_app, build_service, run, serve

__all__ = ["ServiceSettings", "UpstreamSettings", "build_app", "build_service", "run", "serve"]
