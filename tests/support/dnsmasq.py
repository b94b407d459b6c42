"""A real dnsmasq on a free loopback port serving test records, for the DNS discovery tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

INSTALL_HINT = "install Debian's dnsmasq-base (`make discovery-servers`, or `apt-get install dnsmasq-base`)"
#: The zone dnsmasq answers for: any other name is refused, every name in it not listed is NXDOMAIN.
ZONE = "test.local"


@dataclass(frozen=True)
class Srv:
    """One SRV record: ``name`` points at ``target``:``port``."""

    name: str
    target: str
    port: int
    priority: int = 0
    weight: int = 0


def dnsmasq_path() -> str | None:
    """dnsmasq, which Debian puts in /usr/sbin (not on a normal user's PATH)."""
    found = shutil.which("dnsmasq")
    if found:
        return found
    for candidate in ("/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_dnsmasq() -> str:
    """Dnsmasq's path, or a skip that says how to install it."""
    path = dnsmasq_path()
    if path is None:
        pytest.skip(f"dnsmasq not installed: {INSTALL_HINT}")
    return path


def free_port() -> int:
    """A loopback port free for both UDP and TCP (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")


class Dnsmasq:
    """dnsmasq on 127.0.0.1:``port``, its records in ``workdir/dnsmasq.conf``.

    dnsmasq rereads some files on SIGHUP but not ``srv-host``, so ``set_records``
    rewrites the configuration and restarts the server on the same port.
    """

    def __init__(self, workdir: Path, *, ttl: int = 1) -> None:
        self.binary = require_dnsmasq()
        self.workdir = workdir
        self.port = free_port()
        self.ttl = ttl
        self.conf = workdir / "dnsmasq.conf"
        self.log = workdir / "dnsmasq.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """The ``nameserver=`` value of a discovery URI that asks this server."""
        return f"127.0.0.1:{self.port}"

    def set_records(
        self,
        *,
        srv: Sequence[Srv] = (),
        hosts: Mapping[str, Sequence[str]] | None = None,
        ttl: int | None = None,
    ) -> None:
        """Serve these records (SRV, and A/AAAA by host name), restarting when running."""
        if ttl is not None:
            self.ttl = ttl
        lines = [f"local=/{ZONE}/", f"local-ttl={self.ttl}", f"auth-ttl={self.ttl}"]
        lines += [f"srv-host={r.name},{r.target},{r.port},{r.priority},{r.weight}" for r in srv]
        lines += [f"host-record={name},{','.join(addresses)}" for name, addresses in (hosts or {}).items()]
        self.conf.write_text("\n".join(lines) + "\n")
        if self._process is not None:
            self.stop()
            self.start()

    def start(self) -> None:
        """Start dnsmasq and wait until it answers."""
        if not self.conf.exists():
            self.set_records()
        log = self.log.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own arguments
                [
                    self.binary,
                    "--no-daemon",  # foreground, no pid file, no change of user
                    f"--port={self.port}",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    f"--conf-file={self.conf}",
                    "--log-facility=-",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        probe = dns.message.make_query(f"probe.{ZONE}", "A")
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"dnsmasq exited {self._process.returncode}: {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError, dns.exception.Timeout):
                answer = dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.2)
                if answer.rcode() in {dns.rcode.NXDOMAIN, dns.rcode.NOERROR}:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"dnsmasq did not answer on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop dnsmasq (the port stays this server's for a restart)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
