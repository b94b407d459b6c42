"""Start, watch and stop the three services as real processes (make run, and the e2e tests)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Platform", "PortInUseError", "ServiceProcess", "plan"]

ROOT = Path(__file__).resolve().parent.parent
#: How long an upstream may take to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 4.0
#: Added to the gateway's own bound (its grace, then uvicorn's last-resort cancel).
GATEWAY_STOP_MARGIN_SECONDS = 2.0


# Loaded here, in the parent: between fork and exec the child may only make the call,
# not load a library (that could wait on a lock another thread of the parent held).
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the launcher dies, even by SIGKILL.

    The children have their own session (so Ctrl-C reaches only the launcher); without
    this a killed launcher would leave them running.
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class PortInUseError(RuntimeError):
    """A port the platform needs is taken; nothing was started."""


@dataclass
class ServiceProcess:
    """One service: its module, port and environment, and its process once started."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path | None = None
    #: How long it may take to stop after SIGTERM before it is killed.
    stop_grace: float = STOP_GRACE_SECONDS
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The service's root URL."""
        return f"http://127.0.0.1:{self.port}"


def plan(
    gateway_port: int = 8000,
    analysis_port: int = 8001,
    workbench_port: int = 8002,
    *,
    profile: str = "local",
    extra_env: Mapping[str, str] | None = None,
) -> list[ServiceProcess]:
    """The three services wired to each other on the given ports."""
    # Imported here so that `python -m launcher` fails on bad settings with the
    # settings' own one-line message, before anything starts.
    from app.serving import CANCEL_AFTER_CLOSE_SECONDS  # noqa: PLC0415
    from settings import load_settings  # noqa: PLC0415

    base = {**os.environ, **(extra_env or {}), "APP_ENV": profile}
    os.environ["APP_ENV"] = profile
    settings = load_settings(profile)
    ae_key = settings.analysis_engine.api_key
    ml_key = settings.ml_workbench.api_key
    upstream_env = {"PYTHONUNBUFFERED": "1"}
    return [
        ServiceProcess(
            "analysis-engine",
            "upstreams.analysis_engine",
            analysis_port,
            {
                **base,
                **upstream_env,
                "AE_PORT": str(analysis_port),
                **({"AE_API_KEY": ae_key.get_secret_value()} if ae_key else {}),
            },
        ),
        ServiceProcess(
            "ml-workbench",
            "upstreams.ml_workbench",
            workbench_port,
            {
                **base,
                **upstream_env,
                "MLW_PORT": str(workbench_port),
                **({"MLW_API_KEY": ml_key.get_secret_value()} if ml_key else {}),
            },
        ),
        ServiceProcess(
            "gateway",
            "app",
            gateway_port,
            {
                **base,
                **upstream_env,
                "APP_PORT": str(gateway_port),
                "APP_ANALYSIS_ENGINE__BASE_URL": f"http://127.0.0.1:{analysis_port}/api/v1",
                "APP_ML_WORKBENCH__BASE_URL": f"http://127.0.0.1:{workbench_port}/api/v1",
            },
            # Killing it sooner would lose the answers (and the log lines) of the requests
            # it is still finishing; idle, it stops at once.
            stop_grace=settings.grace_seconds + CANCEL_AFTER_CLOSE_SECONDS + GATEWAY_STOP_MARGIN_SECONDS,
        ),
    ]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # Same option as uvicorn sets, so a port in TIME_WAIT counts as free, as it is for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Platform:
    """The services as child processes, each in its own process group."""

    def __init__(self, services: list[ServiceProcess]) -> None:
        self.services = services

    def check_ports(self) -> None:
        """Raise ``PortInUseError`` naming every taken port; start nothing."""
        taken = [s for s in self.services if not _port_free(s.port)]
        if taken:
            names = ", ".join(f"{s.port} ({s.name})" for s in taken)
            raise PortInUseError(f"port {names} already in use; stop what holds it or choose another port")

    def start(self, timeout: float = 30.0) -> None:
        """Start every service and wait until each answers ``/health``; on failure stop them all."""
        self.check_ports()
        try:
            for service in self.services:
                service.process = self._spawn(service)
            deadline = time.monotonic() + timeout
            for service in self.services:
                self._wait_healthy(service, deadline)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _spawn(service: ServiceProcess) -> subprocess.Popen[bytes]:
        out = service.log_path.open("ab") if service.log_path else None
        try:
            return subprocess.Popen(  # noqa: S603 - our own modules, fixed argv
                [sys.executable, "-m", service.module],
                cwd=ROOT,
                env=service.env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Own process group: Ctrl-C reaches only the launcher, which stops them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one syscall, no locks (see _LIBC)
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own copy of the descriptor

    @staticmethod
    def _wait_healthy(service: ServiceProcess, deadline: float) -> None:
        while time.monotonic() < deadline:
            assert service.process is not None  # noqa: S101 - started just before
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode} during start-up"
                )
            try:
                with urllib.request.urlopen(f"{service.url}/health", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{service.name} did not answer /health on port {service.port}")

    def exited(self) -> ServiceProcess | None:
        """A service that stopped on its own, if any."""
        return next(
            (s for s in self.services if s.process is not None and s.process.poll() is not None),
            None,
        )

    def stop(self) -> None:
        """Stop the services in reverse start order: SIGTERM, wait its ``stop_grace``, SIGKILL.

        The gateway, started last, stops first: the requests it is finishing still need
        the upstreams.
        """
        for service in reversed(self.services):
            if service.process is None or service.process.poll() is not None:
                continue
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(service.stop_grace)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
