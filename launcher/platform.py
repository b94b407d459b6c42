"""Start, watch and stop the gateway and each upstream's instances as processes (make run, e2e tests)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from launcher.redis import INSTALL_HINT, redis_answers, redis_binary, redis_command

if TYPE_CHECKING:  # imported when a plan is made: a bad setting fails with its own message
    from settings import Settings

__all__ = [
    "ANALYSIS_ENGINE",
    "MAX_REPLICAS",
    "ML_WORKBENCH",
    "Plan",
    "Platform",
    "PortInUseError",
    "REPLICA_PORT_STEP",
    "ServiceProcess",
    "Upstream",
    "instance_ports",
    "plan",
    "write_instances",
]

ROOT = Path(__file__).resolve().parent.parent
#: How long an upstream may take to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 4.0
#: Added to the gateway's own bound (its grace, then uvicorn's last-resort cancel).
GATEWAY_STOP_MARGIN_SECONDS = 2.0
#: Instance i of an upstream listens on its port plus this times i: 8001, 8011, 8021, ...
REPLICA_PORT_STEP = 10
#: The token service's token lifetime under the launcher unless AUTH_TOKEN_TTL_SECONDS says.
LOCAL_TOKEN_TTL_SECONDS = 60
#: The most instances of one upstream: plenty to see balancing and ejection on a laptop,
#: and with the default ports every instance stays below 8100 (8001-8081, 8002-8082).
MAX_REPLICAS = 9


@dataclass(frozen=True)
class Upstream:
    """A reference upstream: how to run its instances and how the gateway's settings name it."""

    #: Its first instance's service name, the others' prefix, and its instances file's stem.
    name: str
    module: str
    #: The variables its process reads for its port and its API key.
    port_var: str
    key_var: str
    #: The prefix of the gateway's settings for it: ``<prefix>BASE_URL``, ``<prefix>DISCOVERY``.
    settings_prefix: str
    #: Its entry in the gateway's ``settings.upstreams``.
    settings_key: str


ANALYSIS_ENGINE = Upstream(
    "analysis-engine",
    "upstreams.analysis_engine",
    "AE_PORT",
    "AE_API_KEY",
    "APP_ANALYSIS_ENGINE__",
    "analysis_engine",
)
ML_WORKBENCH = Upstream(
    "ml-workbench", "upstreams.ml_workbench", "MLW_PORT", "MLW_API_KEY", "APP_ML_WORKBENCH__", "ml_workbench"
)


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
    #: The upstream it is an instance of (``Upstream.name``); None for the gateway and Redis.
    upstream: str | None = None
    #: What to run instead of ``python -m module`` (Redis).
    argv: list[str] | None = None
    #: How to tell it is up: ``GET /health``, or a Redis PING.
    probe: Literal["http", "redis"] = "http"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The service's root URL."""
        return f"http://127.0.0.1:{self.port}"


def _check_replicas(name: str, replicas: int) -> None:
    # bool is an int, and True would pass for 1.
    if type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"{name} must be from 1 to {MAX_REPLICAS}, got {replicas!r}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _environ(overrides: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``overrides`` for the block, as it was afterwards."""
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def instance_ports(first_port: int, replicas: int) -> list[int]:
    """The ports of an upstream's instances: the first, then one ``REPLICA_PORT_STEP`` further each."""
    return [first_port + REPLICA_PORT_STEP * i for i in range(replicas)]


def write_instances(path: Path, urls: Sequence[str]) -> None:
    """Write ``{"instances": urls}`` to ``path`` atomically: a reader sees the old list or the new one."""
    if isinstance(urls, str):  # a lone URL would be written as a list of characters
        raise TypeError("urls must be a list of URLs, not one string")
    data = json.dumps({"instances": list(urls)}, indent=2) + "\n"
    # The temporary file sits beside the target (os.replace cannot cross file systems) and
    # is named apart from it, so a watcher of the directory can tell the two apart.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Plan(list[ServiceProcess]):
    """What ``plan`` gives: the services in start order, and the instances files the gateway reads."""

    def __init__(
        self,
        services: Iterable[ServiceProcess],
        run_dir: Path,
        instances_files: Mapping[str, Path],
        *,
        owns_run_dir: bool,
    ) -> None:
        super().__init__(services)
        self.run_dir = run_dir
        self.instances_files = dict(instances_files)
        #: Made by ``plan`` (so removed by ``Platform.stop``), not handed in by the caller.
        self.owns_run_dir = owns_run_dir


def plan(
    gateway_port: int = 8000,
    analysis_port: int = 8001,
    workbench_port: int = 8002,
    auth_port: int = 8003,
    *,
    profile: str = "local",
    extra_env: Mapping[str, str] | None = None,
    ae_replicas: int = 2,
    mlw_replicas: int = 2,
    gateway_replicas: int = 1,
    run_dir: Path | None = None,
) -> Plan:
    """Each upstream's instances and the gateway's replicas, which find them through one instances file each.

    Instance ``i`` of an upstream, and replica ``i`` of the gateway, listens on its first
    port plus ``REPLICA_PORT_STEP * i``; the first keeps the service's own name
    (``analysis-engine``, ``gateway``), the others are numbered from 2 (``gateway-2``).
    Two or more gateway replicas share their breakers and limits through Redis: the one
    ``APP_REDIS_URL`` names, or else a redis-server started first on a free port, with no
    persistence; each upstream's breaker is shared (``CIRCUIT_BREAKER_SHARED``), and its
    response cache kept in that Redis (``CACHE_STORE``), unless the environment says
    otherwise. When the gateway's settings give an upstream OAuth2 client credentials (the
    local profile does), the reference token service runs on
    ``auth_port`` first: it knows the gateway's client, the upstream's instances take only
    its JWTs for their audience, and the gateway fetches them from it. The instances files
    go into ``run_dir``, or into a fresh temporary directory that ``Platform.stop`` removes.
    """
    _check_replicas("ae_replicas", ae_replicas)
    _check_replicas("mlw_replicas", mlw_replicas)
    _check_replicas("gateway_replicas", gateway_replicas)
    # Imported here so that `python -m launcher` fails on bad settings with the
    # settings' own one-line message, before anything starts.
    from app.serving import CANCEL_AFTER_CLOSE_SECONDS  # noqa: PLC0415
    from settings import load_settings  # noqa: PLC0415

    base = {**os.environ, **(extra_env or {}), "APP_ENV": profile}
    os.environ["APP_ENV"] = profile
    redis, shared_env = _shared_state(gateway_replicas, base)
    # The settings the gateway will see (extra_env and the shared state included), so a bad
    # combination fails here, before anything starts; os.environ is left as it was.
    with _environ({**(extra_env or {}), **shared_env}):
        settings = load_settings(profile)
    keys = {ANALYSIS_ENGINE: settings.analysis_engine.api_key, ML_WORKBENCH: settings.ml_workbench.api_key}
    upstream_env = {"PYTHONUNBUFFERED": "1"}
    token_service, jwt_env, token_env = _token_service(settings, auth_port, base)
    services: list[ServiceProcess] = [s for s in (redis, token_service) if s is not None]
    instances: dict[str, list[str]] = {}
    for upstream, first_port, replicas in (
        (ANALYSIS_ENGINE, analysis_port, ae_replicas),
        (ML_WORKBENCH, workbench_port, mlw_replicas),
    ):
        key = keys[upstream]
        ports = instance_ports(first_port, replicas)
        instances[upstream.name] = [f"http://127.0.0.1:{port}/api/v1" for port in ports]
        services += [
            ServiceProcess(
                _numbered(upstream.name, i),
                upstream.module,
                port,
                {
                    **base,
                    **upstream_env,
                    upstream.port_var: str(port),
                    **({upstream.key_var: key.get_secret_value()} if key else {}),
                    **jwt_env.get(upstream, {}),
                },
                upstream=upstream.name,
            )
            for i, port in enumerate(ports)
        ]
    gateways = [
        ServiceProcess(
            _numbered("gateway", i),
            "app",
            port,
            {**base, **upstream_env, **shared_env, **token_env, "APP_PORT": str(port)},
            # Killing it sooner would lose the answers (and the log lines) of the requests
            # it is still finishing; idle, it stops at once.
            stop_grace=settings.grace_seconds + CANCEL_AFTER_CLOSE_SECONDS + GATEWAY_STOP_MARGIN_SECONDS,
        )
        for i, port in enumerate(instance_ports(gateway_port, gateway_replicas))
    ]
    services += gateways
    _check_distinct_ports(services)

    # Last, so that a bad argument or setting above leaves no directory behind.
    if run_dir is None:
        directory, owns_run_dir = Path(tempfile.mkdtemp(prefix="platform-")), True
    else:
        directory, owns_run_dir = run_dir.resolve(), False
        directory.mkdir(parents=True, exist_ok=True)
    if redis is not None and redis.argv is not None:
        redis.argv = redis_command(redis.argv[0], redis.port, directory)
    files = {name: directory / f"{name}.instances.json" for name in instances}
    try:
        for name, urls in instances.items():
            write_instances(files[name], urls)
    except BaseException:
        if owns_run_dir:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    for gateway in gateways:
        for upstream in (ANALYSIS_ENGINE, ML_WORKBENCH):
            # Discovery even with one instance, so that every run takes the same path. The
            # base URL stays the first instance: the URL that stands for the upstream where
            # one is needed.
            gateway.env[f"{upstream.settings_prefix}BASE_URL"] = instances[upstream.name][0]
            gateway.env[f"{upstream.settings_prefix}DISCOVERY"] = files[upstream.name].as_uri()
    return Plan(services, directory, files, owns_run_dir=owns_run_dir)


def _token_service(
    settings: Settings, port: int, env: Mapping[str, str]
) -> tuple[ServiceProcess | None, dict[Upstream, dict[str, str]], dict[str, str]]:
    """The token service for the upstreams the gateway reaches with OAuth2 client credentials.

    Returns it (None when no upstream does), each such upstream's variables for its JWT
    check (the token service's JWKS, issuer and the audience), and the gateway's (its
    token URL on ``port``, which may not be the profile's 8003).
    """
    issuer = f"http://127.0.0.1:{port}"
    clients: dict[str, dict[str, Any]] = {}
    jwt_env: dict[Upstream, dict[str, str]] = {}
    token_env: dict[str, str] = {}
    for upstream in (ANALYSIS_ENGINE, ML_WORKBENCH):
        auth = settings.upstreams[upstream.settings_key].auth
        if auth is None or auth.type != "oauth2_client_credentials":
            continue
        audience = auth.audience or upstream.name
        client = clients.setdefault(
            auth.client_id, {"secret": auth.client_secret.get_secret_value(), "audiences": []}
        )
        if client["secret"] != auth.client_secret.get_secret_value():
            raise ValueError(f"client {auth.client_id!r} is given two client secrets; give it one")
        client["audiences"].append(audience)
        prefix = upstream.port_var.removesuffix("PORT")  # AE_, MLW_
        jwt_env[upstream] = {
            f"{prefix}JWKS_URL": f"{issuer}/.well-known/jwks.json",
            f"{prefix}AUDIENCE": audience,
            f"{prefix}ISSUER": issuer,
        }
        token_env[f"{upstream.settings_prefix}AUTH__TOKEN_URL"] = f"{issuer}/oauth/token"
        token_env[f"{upstream.settings_prefix}AUTH__AUDIENCE"] = audience
    if not clients:
        return None, {}, {}
    service_env = {
        **env,
        "PYTHONUNBUFFERED": "1",
        "AUTH_PORT": str(port),
        "AUTH_ISSUER": issuer,
        "AUTH_CLIENTS": json.dumps(clients),
        # Short, so a walkthrough sees the gateway refresh ahead of expiry (at 80% of it).
        "AUTH_TOKEN_TTL_SECONDS": env.get("AUTH_TOKEN_TTL_SECONDS", str(LOCAL_TOKEN_TTL_SECONDS)),
    }
    return ServiceProcess("auth", "upstreams.auth", port, service_env), jwt_env, token_env


def _shared_state(
    gateway_replicas: int, env: Mapping[str, str]
) -> tuple[ServiceProcess | None, dict[str, str]]:
    """Redis to start (none for one replica, or one named by ``APP_REDIS_URL``) and the replicas' env."""
    if gateway_replicas == 1:
        return None, {}
    redis = None
    redis_url = env.get("APP_REDIS_URL", "")
    if not redis_url:
        binary = redis_binary()
        if binary is None:
            raise ValueError(
                f"{gateway_replicas} gateway replicas share state through Redis: {INSTALL_HINT}, "
                "or name one in APP_REDIS_URL"
            )
        redis = ServiceProcess("redis", "", _free_port(), {}, argv=[binary], probe="redis")
        redis_url = f"redis://127.0.0.1:{redis.port}/0"
    shared_env = {"APP_REDIS_URL": redis_url}
    for upstream in (ANALYSIS_ENGINE, ML_WORKBENCH):
        # The breaker, and the response cache (when the settings switch it on), shared.
        for setting, default in (("CIRCUIT_BREAKER_SHARED", "true"), ("CACHE_STORE", "redis")):
            name = f"{upstream.settings_prefix}{setting}"
            shared_env[name] = env.get(name, default)
    return redis, shared_env


def _numbered(name: str, i: int) -> str:
    """The first of a kind keeps its name; the others are numbered from 2."""
    return name if i == 0 else f"{name}-{i + 1}"


def _check_distinct_ports(services: Sequence[ServiceProcess]) -> None:
    """Raise ``ValueError`` for a port out of range or given to two services.

    The instance ports are derived, so a first port near the top, or within
    ``REPLICA_PORT_STEP`` of another service's, can make either happen.
    """
    bad = [f"{s.port} ({s.name})" for s in services if not 0 < s.port < 65536]
    if bad:
        raise ValueError(f"port {', '.join(bad)} out of range 1-65535; choose lower ports or fewer replicas")
    holders: dict[int, list[str]] = {}
    for s in services:
        holders.setdefault(s.port, []).append(s.name)
    shared = [f"{port} ({', '.join(names)})" for port, names in holders.items() if len(names) > 1]
    if shared:
        raise ValueError(f"port {'; '.join(shared)} given to more than one service; choose other ports")


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
    """The services as child processes, each in its own process group, and their instances files."""

    def __init__(self, services: Plan) -> None:
        self.services = services

    @property
    def run_dir(self) -> Path:
        """The directory of the instances files."""
        return self.services.run_dir

    def instances_file(self, upstream: str) -> Path:
        """The file listing ``upstream``'s instances (``analysis-engine`` or ``ml-workbench``)."""
        try:
            return self.services.instances_files[upstream]
        except KeyError:
            known = ", ".join(self.services.instances_files)
            raise KeyError(f"no upstream {upstream!r}; the upstreams are {known}") from None

    def set_instances(self, upstream: str, urls: Sequence[str]) -> None:
        """Replace ``upstream``'s instances with ``urls`` (``http://host:port/api/v1``), atomically.

        The gateway picks the new list up from the file; the processes themselves are left
        as they are, so an instance dropped here keeps running, just without traffic.
        """
        write_instances(self.instances_file(upstream), urls)

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
            deadline = time.monotonic() + timeout
            for service in self.services:
                service.process = self._spawn(service)
                if service.probe == "redis":
                    # Before the gateways, which would otherwise start on local state and
                    # log Redis as unavailable for their first moments.
                    self._wait_healthy(service, deadline)
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
                service.argv or [sys.executable, "-m", service.module],
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
            if service.probe == "redis":
                if redis_answers(service.port):
                    return
            else:
                try:
                    with urllib.request.urlopen(f"{service.url}/health", timeout=1) as resp:  # noqa: S310 - loopback
                        if resp.status == 200:
                            return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.05)
        check = "PING" if service.probe == "redis" else "/health"
        raise TimeoutError(f"{service.name} did not answer {check} on port {service.port}")

    def exited(self) -> ServiceProcess | None:
        """A service that stopped on its own, if any."""
        return next(
            (s for s in self.services if s.process is not None and s.process.poll() is not None),
            None,
        )

    def stop(self) -> None:
        """Stop the services in reverse start order: SIGTERM, wait its ``stop_grace``, SIGKILL.

        The gateway, started last, stops first: the requests it is finishing still need
        the upstreams. Then the run directory goes, if ``plan`` made it; one handed in
        stays, files and all, for its owner to read or reuse.
        """
        try:
            self._stop_processes()
        finally:
            if self.services.owns_run_dir:
                shutil.rmtree(self.services.run_dir, ignore_errors=True)

    def _stop_processes(self) -> None:
        for service in reversed(self.services):
            if service.process is None or service.process.poll() is not None:
                continue
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(service.stop_grace)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
