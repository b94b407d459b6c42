"""``python -m app``: serve the gateway with uvicorn, on the profile's host and port."""

from __future__ import annotations

import sys

import uvicorn

from app.main import create_app
from app.observability.logging import configure_logging
from app.observability.tracing import configure_tracing
from settings import SettingsError, load_settings


def main() -> int:
    """Run until SIGINT or SIGTERM; exit 2 with one line on bad settings."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json)
    # An OTLP endpoint in the settings means OTLP; otherwise the exporter setting decides.
    exporter = "otlp" if settings.otlp_endpoint else settings.tracing_exporter
    configure_tracing("ml-integration-service", exporter, settings.otlp_endpoint)
    app = create_app()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
