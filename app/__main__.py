"""``python -m app``: serve the gateway with uvicorn, on the profile's host and port."""

from __future__ import annotations

import math
import signal
import sys
from types import FrameType

import uvicorn

from app.main import create_app
from app.observability.logging import configure_logging, stop_logging
from app.observability.tracing import configure_tracing
from app.serving import CANCEL_AFTER_CLOSE_SECONDS, GatewayServer
from settings import SettingsError, load_settings

#: uvicorn's exit code when the application did not start (its lifespan failed).
STARTUP_FAILURE = 3


def main() -> int:
    """Run until SIGINT or SIGTERM, then drain (see ``GatewayServer``) and exit 0.

    Exit 2 with one line on bad settings, 3 when the application fails to start.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        # An OTLP endpoint in the settings means OTLP; otherwise the exporter setting decides.
        exporter = "otlp" if settings.otlp_endpoint else settings.tracing_exporter
        configure_tracing("ml-integration-service", exporter, settings.otlp_endpoint)
        app = create_app()
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.grace_seconds + CANCEL_AFTER_CLOSE_SECONDS),
        )
        server = GatewayServer(config, app.state.container, settings.grace_seconds)

        def stop(signum: int, frame: FrameType | None) -> None:
            # uvicorn swaps in its own handler while it serves, and afterwards raises the
            # signal it caught again, with this handler restored. Without it that second
            # SIGTERM would kill the process (exit -15, atexit skipped, log lines lost).
            server.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server.run()
    finally:
        # Every call log line is written before the process ends.
        stop_logging()
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
