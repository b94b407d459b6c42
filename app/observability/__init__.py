"""Observability: structured logs, redaction and per-request context."""

from app.observability.context import request_id_var
from app.observability.logging import JsonFormatter, configure_logging
from app.observability.request_ids import new_request_id
from app.redaction import redact, register_secret, scrub

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "new_request_id",
    "redact",
    "register_secret",
    "request_id_var",
    "scrub",
]
