"""A real single-member etcd on free loopback ports, and key writes through its JSON gateway."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsmasq import free_port

INSTALL_HINT = "install Debian's etcd-server (`make discovery-servers`, or `apt-get install etcd-server`)"


def etcd_path() -> str | None:
    """The etcd server binary, if installed."""
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def require_etcd() -> str:
    """Etcd's path, or a skip that says how to install it."""
    path = etcd_path()
    if path is None:
        pytest.skip(f"etcd not installed: {INSTALL_HINT}")
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd:
    """etcd serving clients on 127.0.0.1:``port``; its data in ``workdir``, so a restart keeps the keys."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_etcd()
        self.workdir = workdir
        self.port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.port:
            self.peer_port = free_port()
        self.log = workdir / "etcd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL (the JSON gateway is under /v3/)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start etcd and wait until it serves reads."""
        client = self.url
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = self.log.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own arguments
                [
                    self.binary,
                    "--name=default",
                    f"--data-dir={self.workdir / 'data'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                    # One member elects itself after one election timeout: keep it short.
                    "--heartbeat-interval=20",
                    "--election-timeout=100",
                    "--log-level=warn",
                    "--logger=zap",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"etcd exited {self._process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                self.call("/v3/kv/range", {"key": _b64("probe")}, timeout=0.5)
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
                continue
            return
        raise RuntimeError(f"etcd did not answer on {client}: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """Kill etcd at once (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=10)

    def call(self, path: str, body: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
        """POST ``body`` to the gateway at ``path``; its JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def delete(self, key: str) -> None:
        """Delete ``key``."""
        self.call("/v3/kv/deleterange", {"key": _b64(key)})
