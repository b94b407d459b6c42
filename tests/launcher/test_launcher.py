"""``make run``'s launcher: clear failure on a taken port, clean stop on SIGINT and SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def launcher_env(gateway: int, analysis: int, workbench: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "AE_", "MLW_"))}
    return {
        **env,
        "APP_ENV": "test",
        "APP_PORT": str(gateway),
        "AE_PORT": str(analysis),
        "MLW_PORT": str(workbench),
    }


def test_a_taken_port_fails_at_once_naming_it() -> None:
    """If a port is taken the launcher exits 1 at once, names the port, and starts nothing."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = free_port(), taken, free_port()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "launcher"], cwd=ROOT, env=launcher_env(*ports),
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert time.monotonic() - started < 5
    assert proc.returncode == 1
    assert f"port {taken} (analysis-engine) already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    for port in (ports[0], ports[2]):  # nothing was started on the others
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_all_three_cleanly(signum) -> None:
    """All three serve; a signal stops them within 5 s, with exit 0 and no traceback."""
    ports = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher"], cwd=ROOT, env=launcher_env(*ports),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while "Ctrl-C stops all three" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert f"curl http://127.0.0.1:{ports[0]}/api/v1/signals/EURUSD?timeframe=1h" in seen
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                assert resp.status == 200
        started = time.monotonic()
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in seen + rest
    assert "Platform stopped." in rest
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_children_die_with_a_killed_launcher() -> None:
    """Even a SIGKILLed launcher leaves nothing running: its children follow it."""
    ports = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher"], cwd=ROOT, env=launcher_env(*ports),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or "Ctrl-C stops all three" in line:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 5
    listening = list(ports)
    while listening and time.monotonic() < deadline:
        listening = [p for p in ports if _listening(p)]
        time.sleep(0.1)
    assert listening == []
