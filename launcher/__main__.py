"""``python -m launcher`` (``make run``): gateway and both upstreams, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from launcher.platform import Platform, PortInUseError, plan
from settings import SettingsError

#: Each service's port variable and default: the gateway, the Analysis Engine, the ML Workbench.
PORTS = (("APP_PORT", "8000"), ("AE_PORT", "8001"), ("MLW_PORT", "8002"))


def main() -> int:
    """Start the platform, print where it is, and stop it cleanly on a signal."""
    try:
        ports = (int(os.environ.get(name, default)) for name, default in PORTS)
        platform = Platform(plan(*ports, profile=os.environ.get("APP_ENV", "local")))
        platform.check_ports()
    except (PortInUseError, SettingsError, ValueError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        platform.start()
    except (RuntimeError, TimeoutError, PortInUseError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    urls = {s.name: s.url for s in platform.services}
    gateway, analysis, workbench = urls["gateway"], urls["analysis-engine"], urls["ml-workbench"]
    print(
        f"\nPlatform up (profile {os.environ.get('APP_ENV', 'local')}):\n"
        f"  gateway          {gateway}   (docs {gateway}/docs)\n"
        f"  analysis engine  {analysis}\n"
        f"  ml workbench     {workbench}\n\n"
        f"Try:\n  curl {gateway}/api/v1/signals/EURUSD?timeframe=1h\n\n"
        "Ctrl-C stops all three.\n",
        flush=True,
    )
    code = 0
    while not stop.wait(0.5):
        dead = platform.exited()
        if dead is not None:
            code_text = dead.process.returncode if dead.process else "?"
            print(f"make run: {dead.name} exited ({code_text}); stopping", file=sys.stderr)
            code = 1
            break
    platform.stop()
    print("Platform stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
