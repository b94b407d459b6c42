"""``make run REPLICAS=N``: N gateway replicas sharing one Redis, which the launcher starts and stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from launcher.__main__ import plan_from_env
from launcher.platform import plan
from launcher.redis import INSTALL_HINT, redis_answers, redis_binary
from settings import SettingsError
from tests.launcher.test_launcher import ROOT, _listening, free_ports, launcher_env

needs_redis = pytest.mark.skipif(redis_binary() is None, reason=f"redis-server not installed: {INSTALL_HINT}")


@needs_redis
def test_two_replicas_share_a_redis_started_first(clean_env, tmp_path) -> None:
    """Redis first (no persistence, in the run dir), then the upstreams, then gateway and gateway-2, +10 apart."""
    services = plan(9000, 9001, 9002, profile="test", ae_replicas=1, mlw_replicas=1, gateway_replicas=2,
                    run_dir=tmp_path / "run")  # fmt: skip
    assert [s.name for s in services] == ["redis", "analysis-engine", "ml-workbench", "gateway", "gateway-2"]
    redis, _, _, first, second = services
    assert redis.probe == "redis"
    assert redis.argv is not None
    args = redis.argv[1:]
    assert args[args.index("--save") + 1] == ""  # no snapshots
    assert args[args.index("--appendonly") + 1] == "no"  # no append-only file
    assert args[args.index("--bind") + 1] == "127.0.0.1"
    assert args[args.index("--dir") + 1] == str((tmp_path / "run").resolve())
    assert (first.port, second.port) == (9000, 9010)
    url = f"redis://127.0.0.1:{redis.port}/0"
    for gateway in (first, second):
        assert gateway.env["APP_REDIS_URL"] == url
        assert gateway.env["APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED"] == "true"
        assert gateway.env["APP_ML_WORKBENCH__CIRCUIT_BREAKER_SHARED"] == "true"
        # The response cache (when the settings switch it on) is kept in that Redis too.
        assert gateway.env["APP_ANALYSIS_ENGINE__CACHE_STORE"] == "redis"
        assert gateway.env["APP_ML_WORKBENCH__CACHE_STORE"] == "redis"
    assert first.env["APP_PORT"] == "9000"
    assert second.env["APP_PORT"] == "9010"
    # The upstreams know nothing of Redis, and the caller's environment is as it was.
    assert all("APP_REDIS_URL" not in s.env for s in services[1:3])
    assert "APP_REDIS_URL" not in os.environ


def test_one_replica_needs_no_redis(clean_env, tmp_path) -> None:
    services = plan(9000, 9001, 9002, profile="test", ae_replicas=1, mlw_replicas=1, run_dir=tmp_path / "run")
    assert [s.name for s in services] == ["analysis-engine", "ml-workbench", "gateway"]
    assert "APP_REDIS_URL" not in services[-1].env
    assert "APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED" not in services[-1].env


def test_a_named_redis_is_used_and_the_environment_wins(clean_env, monkeypatch, tmp_path) -> None:
    """APP_REDIS_URL names one's own Redis: none is started; a setting the shell gives is kept."""
    monkeypatch.setenv("APP_REDIS_URL", "redis://127.0.0.1:6399/3")
    monkeypatch.setenv("APP_ML_WORKBENCH__CIRCUIT_BREAKER_SHARED", "false")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__CACHE_STORE", "memory")
    services = plan(9000, 9001, 9002, profile="test", ae_replicas=1, mlw_replicas=1, gateway_replicas=2,
                    run_dir=tmp_path / "run")  # fmt: skip
    assert "redis" not in [s.name for s in services]
    gateway = services[-1]
    assert gateway.env["APP_REDIS_URL"] == "redis://127.0.0.1:6399/3"
    assert gateway.env["APP_ANALYSIS_ENGINE__CIRCUIT_BREAKER_SHARED"] == "true"
    assert gateway.env["APP_ML_WORKBENCH__CIRCUIT_BREAKER_SHARED"] == "false"
    assert gateway.env["APP_ANALYSIS_ENGINE__CACHE_STORE"] == "memory"


def test_shared_settings_without_replicas_fail_before_anything_starts(
    clean_env, monkeypatch, tmp_path
) -> None:
    """One replica and a global limit: no Redis is started for it, so the settings' own line refuses it."""
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv("APP_ANALYSIS_ENGINE__RATE_LIMIT_SCOPE", "global")
    with pytest.raises(SettingsError, match="needs APP_REDIS_URL"):
        plan(9000, 9001, 9002, profile="test", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@needs_redis
def test_replicas_variable_reaches_the_plan(clean_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("REPLICAS", "3")
    services = plan_from_env(run_dir=tmp_path / "run")
    assert [s.port for s in services if s.module == "app"] == [8000, 8010, 8020]
    assert [s.name for s in services if s.module == "app"] == ["gateway", "gateway-2", "gateway-3"]


@needs_redis
def test_make_run_with_two_replicas_lists_them_and_stops_redis_too() -> None:
    """The launcher as `make run REPLICAS=2` runs it: both replicas and Redis answer; SIGTERM stops all six."""
    gateway, analysis, workbench = free_ports()
    if _listening(gateway + 10):
        pytest.skip(f"port {gateway + 10} (the second replica's) is taken")
    env = {
        **launcher_env(gateway, analysis, workbench),
        "REPLICAS": "2",
        "AE_REPLICAS": "1",
        "MLW_REPLICAS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher"], cwd=ROOT, env=env,
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
        assert "Ctrl-C stops all three services and Redis (5 processes)." in seen, seen
        assert re.search(rf"^  gateway +http://127\.0\.0\.1:{gateway}\b", seen, re.M), seen
        assert re.search(rf"^  gateway-2 +http://127\.0\.0\.1:{gateway + 10}\b", seen, re.M), seen
        found = re.search(r"^  redis +redis://127\.0\.0\.1:(\d+)/0 ", seen, re.M)
        assert found, seen
        redis_port = int(found.group(1))
        assert redis_answers(redis_port)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    assert "Traceback" not in seen + rest
    for port in (gateway, gateway + 10, analysis, workbench, redis_port):
        assert not _listening(port)
