"""``python -m launcher`` (``make run``): gateway and upstream instances, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from launcher.platform import MAX_REPLICAS, Plan, Platform, PortInUseError, ServiceProcess, plan
from settings import SettingsError

#: Each service's port variable and default: the gateway, the Analysis Engine, the ML
#: Workbench, the token service (started when the profile gives an upstream OAuth2).
PORTS = (("APP_PORT", "8000"), ("AE_PORT", "8001"), ("MLW_PORT", "8002"), ("AUTH_PORT", "8003"))
#: How many instances of each service: the gateway's replicas (two or more share state
#: through Redis), the Analysis Engine's instances, the ML Workbench's.
REPLICAS = (("REPLICAS", 1), ("AE_REPLICAS", 2), ("MLW_REPLICAS", 2))


def replicas_from_env(name: str, default: int) -> int:
    """The instance count in ``name``, or ``default`` if unset; ``ValueError`` with one line if not 1-9."""
    raw = os.environ.get(name, "").strip()
    if not raw:  # `make run AE_REPLICAS=` and the like pass it empty: the same as unset
        return default
    # isascii: int() would also take other scripts' digits and "1_0".
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_REPLICAS):
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_REPLICAS}, got {raw!r}")
    return int(raw)


def plan_from_env(run_dir: Path | None = None) -> Plan:
    """``plan`` with the ports, profile and instance counts the environment sets."""
    ports = (int(os.environ.get(name, default)) for name, default in PORTS)
    gateway_replicas, ae_replicas, mlw_replicas = (
        replicas_from_env(name, default) for name, default in REPLICAS
    )
    return plan(
        *ports,
        profile=os.environ.get("APP_ENV", "local"),
        ae_replicas=ae_replicas,
        mlw_replicas=mlw_replicas,
        gateway_replicas=gateway_replicas,
        run_dir=run_dir,
    )


def _banner_order(service: ServiceProcess) -> int:
    """The gateway's replicas, the upstreams' instances, the token service, Redis."""
    if service.module == "app":
        return 0
    if service.upstream is not None:
        return 1
    return 2 if service.name == "auth" else 3


def _kind(services: list[ServiceProcess], kind: str) -> bool:
    return any(s.name == kind if kind == "auth" else s.probe == kind for s in services)


def banner(platform: Platform, profile: str) -> str:
    """What ``make run`` prints once all answer: each service and instance, the instances files, a try."""
    # The gateway's replicas first (they are what one calls), then the instances in start
    # order, then Redis (which one does not call).
    services = sorted(platform.services, key=_banner_order)
    gateway = services[0].url
    extra = [
        name for name, kind in (("the token service", "auth"), ("Redis", "redis")) if _kind(services, kind)
    ]
    shared = "".join(f" and {name}" for name in extra)
    width = max(len(s.name) for s in services) + 2
    lines = [f"\nPlatform up (profile {profile}):"]
    for service in services:
        if service.probe == "redis":
            where = f"redis://127.0.0.1:{service.port}/0   (shared state of the gateway's replicas)"
        elif service.name == "auth":
            where = f"{service.url}   (token service: /oauth/token, /.well-known/jwks.json)"
        else:
            where = service.url + (f"   (docs {service.url}/docs)" if service.module == "app" else "")
        lines.append(f"  {service.name:<{width}}{where}")
    lines.append("\nInstances files (the gateway follows them; rewrite one to add or drop an instance):")
    lines += [f"  {platform.instances_file(name)}" for name in platform.services.instances_files]
    lines += [
        f"\nTry:\n  curl {gateway}/api/v1/signals/EURUSD?timeframe=1h\n",
        # "all three": the gateway and the two upstreams, however many instances each runs.
        f"Ctrl-C stops all three services{shared} ({len(services)} processes).\n",
    ]
    return "\n".join(lines)


def main() -> int:
    """Start the platform, print where it is, and stop it cleanly on a signal."""
    try:
        platform = Platform(plan_from_env())
    except (SettingsError, ValueError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    try:
        platform.check_ports()
    except PortInUseError as exc:
        platform.stop()  # nothing runs yet; this removes the run directory
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
    print(banner(platform, os.environ.get("APP_ENV", "local")), flush=True)
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
