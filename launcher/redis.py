"""Debian's redis-server as a throwaway process: where it is, how to start it, whether it answers."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

__all__ = ["INSTALL_HINT", "redis_answers", "redis_binary", "redis_command"]

INSTALL_HINT = "install Debian's redis-server (`make redis` as root, or `apt-get install redis-server`)"


def redis_binary() -> str | None:
    """The redis-server binary, if installed (Debian puts it in /usr/bin, which a PATH may lack)."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def redis_command(binary: str, port: int, workdir: Path) -> list[str]:
    """redis-server on 127.0.0.1:``port`` with no persistence: nothing of it outlives the run.

    ``--save ""`` and ``--appendonly no`` turn off both kinds of persistence; ``--dir``
    keeps anything it might still write (a crash report) inside ``workdir``.
    """
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip


def redis_answers(port: int, timeout: float = 0.2) -> bool:
    """True when the server on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
