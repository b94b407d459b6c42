"""``make run``'s launcher: N instances per upstream behind instances files, clear failures, clean stops."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

import launcher.platform
from launcher.__main__ import plan_from_env, replicas_from_env
from launcher.platform import Platform, PortInUseError, plan

ROOT = Path(__file__).resolve().parents[2]
#: The default plan's services in start order: two instances of each upstream, the gateway last.
DEFAULT_NAMES = ["analysis-engine", "analysis-engine-2", "ml-workbench", "ml-workbench-2", "gateway"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports() -> tuple[int, int, int]:
    """Gateway, Analysis Engine and ML Workbench ports: distinct, with their +10 instance ports too.

    Bound together while chosen: three separate ``free_port()`` calls may return one port twice.
    """
    while True:
        socks = [socket.socket() for _ in range(3)]
        try:
            for sock in socks:
                sock.bind(("127.0.0.1", 0))
            gateway, analysis, workbench = (int(sock.getsockname()[1]) for sock in socks)
        finally:
            for sock in socks:
                sock.close()
        every = all_ports(gateway, analysis, workbench)
        if len(set(every)) == len(every) and max(every) <= 65535 and not any(_listening(p) for p in every):
            return gateway, analysis, workbench


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def all_ports(gateway: int, analysis: int, workbench: int) -> list[int]:
    """Every port of the default plan: the gateway and two instances of each upstream."""
    return [gateway, analysis, analysis + 10, workbench, workbench + 10]


def launcher_env(gateway: int, analysis: int, workbench: int) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "AE_", "MLW_")) and k != "REPLICAS"
    }
    return {
        **env,
        "APP_ENV": "test",
        "APP_PORT": str(gateway),
        "AE_PORT": str(analysis),
        "MLW_PORT": str(workbench),
    }


def file_of(uri: str) -> Path:
    """The path a ``file://`` URI names, decoded as the gateway would."""
    parsed = urlparse(uri)
    assert parsed.scheme == "file"
    assert parsed.netloc == ""
    return Path(url2pathname(parsed.path))


def read_instances(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["instances"]
    return data["instances"]


# -- the plan: which processes, on which ports, with which environment --------------------


def test_default_plan_is_two_instances_of_each_upstream_then_the_gateway(clean_env, tmp_path) -> None:
    """Six processes: the token service on 8003, 8001/8011 and 8002/8012, the gateway last."""
    services = plan(profile="local", run_dir=tmp_path / "run")
    assert [s.name for s in services] == ["auth", *DEFAULT_NAMES]
    assert [s.port for s in services] == [8003, 8001, 8011, 8002, 8012, 8000]
    assert [s.upstream for s in services] == [None, *["analysis-engine"] * 2, *["ml-workbench"] * 2, None]
    auth, ae1, ae2, ml1, ml2, gateway = services
    assert auth.module == "upstreams.auth"
    # The token service knows the gateway's client, for both audiences; tokens last 60 s.
    assert json.loads(auth.env["AUTH_CLIENTS"]) == {
        "gateway": {"secret": "local-gateway-secret", "audiences": ["analysis-engine", "ml-workbench"]}
    }
    assert auth.env["AUTH_TOKEN_TTL_SECONDS"] == "60"
    assert (ae1.module, ae2.module) == ("upstreams.analysis_engine",) * 2
    assert (ml1.module, ml2.module) == ("upstreams.ml_workbench",) * 2
    assert (ae1.env["AE_PORT"], ae2.env["AE_PORT"]) == ("8001", "8011")
    assert (ml1.env["MLW_PORT"], ml2.env["MLW_PORT"]) == ("8002", "8012")
    # Every instance takes only the token service's JWTs, for its own audience.
    for instance, prefix, audience in ((ae1, "AE_", "analysis-engine"), (ae2, "AE_", "analysis-engine"),
                                       (ml1, "MLW_", "ml-workbench"), (ml2, "MLW_", "ml-workbench")):  # fmt: skip
        assert instance.env[f"{prefix}JWKS_URL"] == "http://127.0.0.1:8003/.well-known/jwks.json"
        assert instance.env[f"{prefix}AUDIENCE"] == audience
        assert f"{prefix}API_KEY" not in instance.env
    assert gateway.env["APP_ANALYSIS_ENGINE__AUTH__TOKEN_URL"] == "http://127.0.0.1:8003/oauth/token"
    assert gateway.env["APP_PORT"] == "8000"
    # The base URL stays the first instance; the discovery file lists them all.
    assert gateway.env["APP_ANALYSIS_ENGINE__BASE_URL"] == "http://127.0.0.1:8001/api/v1"
    assert gateway.env["APP_ML_WORKBENCH__BASE_URL"] == "http://127.0.0.1:8002/api/v1"
    ae_file = file_of(gateway.env["APP_ANALYSIS_ENGINE__DISCOVERY"])
    ml_file = file_of(gateway.env["APP_ML_WORKBENCH__DISCOVERY"])
    assert ae_file.is_absolute()
    assert ae_file.parent == ml_file.parent == (tmp_path / "run").resolve()
    assert read_instances(ae_file) == ["http://127.0.0.1:8001/api/v1", "http://127.0.0.1:8011/api/v1"]
    assert read_instances(ml_file) == ["http://127.0.0.1:8002/api/v1", "http://127.0.0.1:8012/api/v1"]
    platform = Platform(services)
    assert platform.instances_file("analysis-engine") == ae_file
    assert platform.instances_file("ml-workbench") == ml_file


def test_replica_counts_and_ports_follow_the_arguments(clean_env, tmp_path) -> None:
    """Instance i listens on the upstream's port plus 10*i, whatever the first port is."""
    services = plan(9000, 9101, 9202, profile="test", ae_replicas=4, mlw_replicas=1, run_dir=tmp_path / "run")
    assert [(s.name, s.port) for s in services] == [
        ("analysis-engine", 9101),
        ("analysis-engine-2", 9111),
        ("analysis-engine-3", 9121),
        ("analysis-engine-4", 9131),
        ("ml-workbench", 9202),
        ("gateway", 9000),
    ]


def test_one_replica_still_goes_through_the_instances_file(clean_env, tmp_path) -> None:
    """With one instance each, three processes, and the gateway still reads its upstreams from files."""
    services = plan(profile="test", ae_replicas=1, mlw_replicas=1, run_dir=tmp_path / "run")
    assert [s.name for s in services] == ["analysis-engine", "ml-workbench", "gateway"]
    env = services[-1].env
    assert read_instances(file_of(env["APP_ANALYSIS_ENGINE__DISCOVERY"])) == ["http://127.0.0.1:8001/api/v1"]
    assert read_instances(file_of(env["APP_ML_WORKBENCH__DISCOVERY"])) == ["http://127.0.0.1:8002/api/v1"]


@pytest.mark.parametrize("replicas", [0, 10, -1, True, 2.0])
def test_plan_refuses_a_replica_count_outside_1_to_9(clean_env, tmp_path, replicas) -> None:
    with pytest.raises(ValueError, match=r"^ae_replicas must be from 1 to 9, got "):
        plan(ae_replicas=replicas, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_plan_refuses_instance_ports_that_collide_or_overflow(clean_env, tmp_path) -> None:
    """Derived ports are checked: two services on one port, or past 65535, is a clear error, not a bind failure."""
    with pytest.raises(
        ValueError, match=r"port 8011 \(analysis-engine-2, ml-workbench\) given to more than one"
    ):
        plan(8000, 8001, 8011, mlw_replicas=1, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"port 65540 \(analysis-engine-2\) out of range 1-65535"):
        plan(8000, 65530, 8002, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- AE_REPLICAS and MLW_REPLICAS ----------------------------------------------------------


def test_ae_replicas_3_gives_three_analysis_engines(clean_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AE_REPLICAS", "3")
    services = plan_from_env(run_dir=tmp_path / "run")
    analysis = [(s.name, s.port) for s in services if s.upstream == "analysis-engine"]
    assert analysis == [("analysis-engine", 8001), ("analysis-engine-2", 8011), ("analysis-engine-3", 8021)]
    assert [s.port for s in services if s.upstream == "ml-workbench"] == [8002, 8012]  # still the default
    assert read_instances(Platform(services).instances_file("analysis-engine")) == [
        "http://127.0.0.1:8001/api/v1",
        "http://127.0.0.1:8011/api/v1",
        "http://127.0.0.1:8021/api/v1",
    ]


def test_replica_variables_default_to_two_and_treat_empty_as_unset(monkeypatch) -> None:
    monkeypatch.delenv("MLW_REPLICAS", raising=False)
    assert replicas_from_env("MLW_REPLICAS", 2) == 2
    monkeypatch.setenv("MLW_REPLICAS", "")  # what `make run MLW_REPLICAS=` passes
    assert replicas_from_env("MLW_REPLICAS", 2) == 2
    monkeypatch.setenv("MLW_REPLICAS", " 9 ")
    assert replicas_from_env("MLW_REPLICAS", 2) == 9


@pytest.mark.parametrize("value", ["0", "10", "-1", "two", "2.5", "1_0", "\u0663", "1e1"])
def test_a_bad_replica_variable_is_one_clear_line(monkeypatch, value) -> None:
    monkeypatch.setenv("AE_REPLICAS", value)
    with pytest.raises(ValueError, match=r"^AE_REPLICAS must be") as caught:
        replicas_from_env("AE_REPLICAS", 2)
    assert str(caught.value) == f"AE_REPLICAS must be a whole number from 1 to 9, got {value!r}"


def test_launcher_refuses_a_bad_replica_variable_before_starting_anything(tmp_path) -> None:
    ports = free_ports()
    env = {**launcher_env(*ports), "MLW_REPLICAS": "12", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "launcher"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == "make run: MLW_REPLICAS must be a whole number from 1 to 9, got '12'\n"
    assert list(tmp_path.iterdir()) == []  # no run directory either


# -- the instances files -------------------------------------------------------------------


def test_set_instances_rewrites_the_file_atomically(clean_env, monkeypatch, tmp_path) -> None:
    """The new list goes to a temporary file beside the target, then os.replace swaps it in whole."""
    platform = Platform(plan(profile="test", run_dir=tmp_path / "run"))
    target = platform.instances_file("analysis-engine")
    before = target.read_text(encoding="utf-8")
    replaced = []
    real_replace = os.replace

    def spy(src, dst) -> None:
        # At the swap: the target still holds the old list, the temporary file the whole new one.
        assert Path(dst) == target
        assert Path(src).parent == target.parent
        assert Path(src).name.startswith(".")
        assert Path(src).name.endswith(".tmp")
        assert target.read_text(encoding="utf-8") == before
        assert read_instances(Path(src)) == ["http://127.0.0.1:8011/api/v1"]
        replaced.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(launcher.platform.os, "replace", spy)
    platform.set_instances("analysis-engine", ["http://127.0.0.1:8011/api/v1"])
    assert len(replaced) == 1
    assert read_instances(target) == ["http://127.0.0.1:8011/api/v1"]
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "analysis-engine.instances.json",
        "ml-workbench.instances.json",
    ]  # no temporary file left behind


def test_a_failed_rewrite_keeps_the_old_file_and_leaves_no_temporary(
    clean_env, monkeypatch, tmp_path
) -> None:
    platform = Platform(plan(profile="test", run_dir=tmp_path / "run"))
    target = platform.instances_file("ml-workbench")
    before = target.read_text(encoding="utf-8")

    def fail(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(launcher.platform.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        platform.set_instances("ml-workbench", ["http://127.0.0.1:8002/api/v1"])
    assert target.read_text(encoding="utf-8") == before
    assert len(list(target.parent.iterdir())) == 2


def test_set_instances_can_add_and_refuses_what_it_cannot_write(clean_env, tmp_path) -> None:
    platform = Platform(plan(profile="test", run_dir=tmp_path / "run"))
    urls = [f"http://127.0.0.1:{port}/api/v1" for port in (8002, 8012, 8022)]
    platform.set_instances("ml-workbench", urls)
    assert read_instances(platform.instances_file("ml-workbench")) == urls
    with pytest.raises(
        KeyError, match="no upstream 'gateway'; the upstreams are analysis-engine, ml-workbench"
    ):
        platform.set_instances("gateway", urls)
    with pytest.raises(TypeError, match="not one string"):
        platform.set_instances("ml-workbench", "http://127.0.0.1:8002/api/v1")  # type: ignore[arg-type]
    assert read_instances(platform.instances_file("ml-workbench")) == urls


def test_the_default_run_dir_is_fresh_and_removed_on_stop(clean_env) -> None:
    """Without run_dir, plan makes a platform-* temporary directory; stop removes it (nothing ran)."""
    first, second = Platform(plan(profile="test")), Platform(plan(profile="test"))
    assert first.run_dir != second.run_dir
    assert first.run_dir.parent == clean_env
    assert first.run_dir.name.startswith("platform-")
    assert first.instances_file("analysis-engine").is_file()
    first.stop()
    second.stop()
    assert list(clean_env.iterdir()) == []


def test_a_given_run_dir_is_created_and_left_in_place(clean_env, tmp_path) -> None:
    run_dir = tmp_path / "a" / "run"
    platform = Platform(plan(profile="test", run_dir=run_dir))
    platform.stop()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "analysis-engine.instances.json",
        "ml-workbench.instances.json",
    ]


def test_check_ports_covers_every_instance(clean_env, tmp_path) -> None:
    """A taken second-instance port is named, with the instance, before anything starts."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        platform = Platform(
            plan(free_port(), free_port(), taken - 10, profile="test", run_dir=tmp_path / "run")
        )
        with pytest.raises(PortInUseError, match=rf"\b{taken} \(ml-workbench-2\)"):
            platform.check_ports()


# -- the launcher as `make run` runs it ----------------------------------------------------


def test_a_taken_port_fails_at_once_naming_it(tmp_path) -> None:
    """If a port is taken the launcher exits 1 at once, names the port, starts nothing and leaves no run dir."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = free_port(), taken, free_port()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "launcher"], cwd=ROOT, env={**launcher_env(*ports), "TMPDIR": str(tmp_path)},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert time.monotonic() - started < 5
    assert proc.returncode == 1
    assert f"port {taken} (analysis-engine) already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    for port in all_ports(*ports):  # nothing was started on the others
        if port != taken:
            assert not _listening(port)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_every_instance_cleanly(signum) -> None:
    """All five serve and are listed; a signal stops them within 5 s, exit 0, no traceback, run dir gone."""
    ports = free_ports()
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
        assert "Ctrl-C stops all three services (5 processes)." in seen
        for name, port in zip(DEFAULT_NAMES, [*all_ports(*ports)[1:], ports[0]], strict=True):
            assert re.search(rf"^  {name} +http://127\.0\.0\.1:{port}\b", seen, re.M), seen
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                assert resp.status == 200
        files = [Path(p) for p in re.findall(r"^  (/\S+\.instances\.json)$", seen, re.M)]
        assert [f.name for f in files] == ["analysis-engine.instances.json", "ml-workbench.instances.json"]
        assert read_instances(files[0]) == [f"http://127.0.0.1:{p}/api/v1" for p in all_ports(*ports)[1:3]]
        started = time.monotonic()
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # communicate() closed it, unless an assertion came first
    assert proc.returncode == 0
    assert "Traceback" not in seen + rest
    assert "Platform stopped." in rest
    for port in all_ports(*ports):
        assert not _listening(port)
    assert not files[0].parent.exists()


def test_children_die_with_a_killed_launcher(tmp_path) -> None:
    """Even a SIGKILLed launcher leaves nothing running: every instance follows it."""
    ports = free_ports()
    # A killed launcher cannot remove its run directory: keep it out of the real /tmp.
    env = {**launcher_env(*ports), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher"], cwd=ROOT, env=env,
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
    listening = all_ports(*ports)
    while listening and time.monotonic() < deadline:
        listening = [p for p in all_ports(*ports) if _listening(p)]
        time.sleep(0.1)
    assert listening == []
