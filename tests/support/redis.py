"""A real redis-server on a free loopback port, faults on demand, and a proxy that adds latency."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# The binary, its no-persistence command line and the PING probe are the launcher's, so the
# tests, the benchmark and `make run REPLICAS=2` start the same Redis.
from launcher.redis import INSTALL_HINT, redis_answers, redis_binary, redis_command

__all__ = ["INSTALL_HINT", "LatencyProxy", "RedisServer", "free_port", "redis_path", "require_redis"]


def redis_path() -> str | None:
    """The redis-server binary, if installed."""
    return redis_binary()


def require_redis() -> str:
    """redis-server's path, or a skip that says how to install it."""
    path = redis_path()
    if path is None:
        pytest.skip(f"redis-server not installed: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1:``port``, no persistence, in ``workdir``; killed, stopped or restarted at will."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        self.binary = require_redis()
        self.workdir = workdir
        self.port = port or free_port()
        #: Run in the child before exec (the benchmark pins Redis to the server core with it).
        self.preexec_fn = preexec_fn
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        self._process = subprocess.Popen(  # noqa: S603 - our own arguments
            redis_command(self.binary, self.port, self.workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,  # noqa: PLW1509 - one syscall before exec, when given
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_answers(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on {self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process must run to die
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """SIGSTOP: a hung Redis that keeps its connections open and answers nothing."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT after ``stop``."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port (state gone: no persistence)."""
        self.kill()
        self.start()


_PROXY = """
import asyncio, sys

async def main(port, target, delay):
    async def pipe(src, dst):
        try:
            while chunk := await src.read(65536):
                await asyncio.sleep(delay)
                dst.write(chunk)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
"""


class LatencyProxy:
    """A TCP proxy to ``target_port`` adding ``delay`` seconds to every chunk each way.

    In a process of its own: a thread of the test's process would take the GIL from the
    event loop being measured, for up to the 5 ms switch interval at a time.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> LatencyProxy:
        self._process = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, "-c", _PROXY, str(self.port), str(self.target_port), str(self.delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            if self._process.stdout is not None:
                self._process.stdout.close()
