"""A real gateway process (`python -m app`) reloading its config file and on SIGHUP, as the README shows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "settings" / "profiles" / "test.env"


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    config: Path
    log: Path


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return orjson.loads(resp.read())


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def edit(path: Path, line: str) -> None:
    """Append a line in place, as `echo ... >> file` does (not atomic: the watch waits it out)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def until(url: str, check, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    ends = time.monotonic() + timeout
    while True:
        body = get(f"{url}/api/v1/config")
        if check(body) or time.monotonic() > ends:
            return body
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    """The test profile copied to a file of its own, with the file watch on, served by `python -m app`."""
    work = tmp_path_factory.mktemp("live-config")
    config = work / "gateway.env"
    text = PROFILE.read_text(encoding="utf-8").replace("APP_LIVE_CONFIG=off", "APP_LIVE_CONFIG=watch")
    config.write_text(text, encoding="utf-8")
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_"))
    }
    env |= {"APP_ENV": "test", "APP_CONFIG_FILE": str(config), "APP_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    log = work / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ends = time.monotonic() + 30
        while True:
            try:
                get(f"{url}/health")
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < ends, "the gateway did not start"
                time.sleep(0.05)
        yield Gateway(url, process, config, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_an_edit_moves_the_version_and_sighup_without_a_change_reloads_nothing(gateway) -> None:
    url = gateway.url
    first = get(f"{url}/api/v1/config")
    assert first["version"] == 1
    assert first["source"] == str(gateway.config)
    assert first["settings"]["upstreams"]["analysis_engine"]["circuit_breaker_failure_threshold"] == 10

    edit(gateway.config, "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_FAILURE_THRESHOLD=4")
    body = until(url, lambda b: b["version"] == 2)
    assert body["version"] == 2
    assert body["last_reload"]["result"] == "applied"
    assert body["settings"]["upstreams"]["analysis_engine"]["circuit_breaker_failure_threshold"] == 4
    assert get(f"{url}/api/v1/resilience")["config"]["version"] == 2
    assert re.search(r"^service_client_config_version 2\.0$", metrics(url), re.M)

    gateway.process.send_signal(signal.SIGHUP)
    body = until(url, lambda b: b["last_reload"]["reason"] == "SIGHUP")
    assert body["last_reload"]["result"] == "unchanged"
    assert body["version"] == 2
    assert gateway.process.poll() is None  # SIGHUP reloads; it does not end the process


def test_a_bad_edit_is_refused_and_the_process_serves_on(gateway) -> None:
    url = gateway.url
    before = get(f"{url}/api/v1/config")["version"]
    edit(gateway.config, "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS=-1")
    body = until(url, lambda b: b["last_reload"]["result"] == "invalid")
    assert body["last_reload"]["result"] == "invalid"
    assert "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS" in body["last_reload"]["message"]
    assert body["version"] == before
    assert re.search(r'^config_reloads_total\{result="invalid"\} [1-9]', metrics(url), re.M)
    assert get(f"{url}/health") == {"status": "ok"}
    assert gateway.process.poll() is None


def test_longer_deadlines_apply_and_the_published_digest_hides_the_file(gateway) -> None:
    """No APP_SHUTDOWN_GRACE_SECONDS: a longer deadline applies (the grace follows at SIGTERM)."""
    url = gateway.url
    before = get(f"{url}/api/v1/config")
    edit(gateway.config, "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS=1.0")  # valid again after the bad line
    edit(gateway.config, "APP_ANALYSIS_ENGINE__TOTAL_TIMEOUT_SECONDS=60")
    body = until(url, lambda b: b["version"] > before["version"])
    assert body["last_reload"]["result"] == "applied"
    assert body["settings"]["upstreams"]["analysis_engine"]["total_timeout_seconds"] == 60
    assert body["digest"] != before["digest"]
    info = re.findall(r'^service_client_config_info\{digest="([0-9a-f]{12})"\} 1\.0$', metrics(url), re.M)
    assert info == [body["digest"].removeprefix("sha256:")[:12]]  # one series: the settings in force
