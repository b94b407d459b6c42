"""Observability: structured logs, redaction and per-request context."""

from app.observability.context import request_id_var
from app.observability.logging import JsonFormatter, configure_logging
from app.redaction import redact, register_secret, scrub

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "redact",
    "register_secret",
    "request_id_var",
    "scrub",
]
