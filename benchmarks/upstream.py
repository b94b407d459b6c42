"""The benchmark upstream in its own process: nginx when it can be had, else the fallback server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from benchmarks.payloads import ERROR, LARGE, SMALL

ROOT = Path(__file__).resolve().parent.parent

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=16384;
        root {tmp}/www;
        default_type application/json;
        etag off;
        location = /small {{ try_files /small.json =404; }}
        location = /large {{ try_files /large.json =404; }}
        location = /error {{ return 503 '{error}'; }}
    }}
}}
"""


#: The client under test gets core 0 to itself; the upstream (and the load generator) run on
#: the last core. Without pinning, the two share both cores and a run varies by +-20%.
CLIENT_CORE = 0
SERVER_CORE = max(0, (os.cpu_count() or 1) - 1)


def pin(core: int) -> None:
    """Pin the calling process (and the children it will start) to one core, where supported."""
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})


def pin_server() -> None:
    """``preexec_fn`` for server processes."""
    pin(SERVER_CORE)


def pin_client() -> None:
    """``preexec_fn`` for the measured client processes."""
    pin(CLIENT_CORE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_nginx(install: bool = True) -> str | None:
    """Nginx's path, installing Debian's package when missing and allowed; None if impossible."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found or not install or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)  # noqa: S607
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env, capture_output=True, check=False)  # noqa: S607
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"upstream exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError("upstream did not start")


@contextlib.contextmanager
def fallback_server(delay_ms: float = 0.0) -> Iterator[str]:
    """The minimal server, in its own process; ``delay_ms`` holds every answer that long."""
    port = free_port()
    delay = [str(delay_ms)] if delay_ms else []
    proc = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks.fallback_server", str(port), *delay],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        preexec_fn=pin_server,  # noqa: PLW1509 - one syscall before exec
    )
    try:
        _wait(f"http://127.0.0.1:{port}/small", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def upstream(install: bool = True) -> Iterator[tuple[str, str]]:
    """``(base_url, kind)``: nginx with keep-alive on 127.0.0.1, or the fallback server."""
    nginx = ensure_nginx(install)
    if nginx is None:
        with fallback_server() as url:
            # Installing is tried only when allowed (not in the quick run, not for one section).
            why = "nginx could not be installed" if install else "nginx not installed"
            yield url, f"fallback (minimal asyncio server; {why})"
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    tmp.chmod(0o755)  # nginx's workers run as another user and must read the files
    (tmp / "www").mkdir()
    (tmp / "www" / "small.json").write_bytes(SMALL)
    (tmp / "www" / "large.json").write_bytes(LARGE)
    for path in (tmp, tmp / "www", tmp / "www" / "small.json", tmp / "www" / "large.json"):
        path.chmod(0o755)
    port = free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port, error=ERROR.decode()))
    proc = subprocess.Popen(  # noqa: S603
        [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
        stderr=subprocess.DEVNULL,
        preexec_fn=pin_server,  # noqa: PLW1509 - one syscall before exec
    )
    try:
        _wait(f"http://127.0.0.1:{port}/small", proc)
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip()  # noqa: S603
        yield f"http://127.0.0.1:{port}", version
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
