"""Every README code block runs as written against `make run`, and does what its text says.

The blocks are read from README.md itself (no copy lives here): shell blocks line by
line through a real shell, Python blocks as programs under ``-W error``, all in README
order against the platform started as `make run` starts it, on the README's ports.
What a block's text promises is checked by the CHECKS below, each tied to its command
by a pattern that must match exactly one README command.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.readme import RUNNERS, Block, MarkupError, blocks, commands

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The ports the README's commands name: the gateway, then each upstream's two instances.
PORTS = (8000, 8001, 8011, 8002, 8012)
GATEWAY = "http://127.0.0.1:8000"
#: The chaos APIs: the Analysis Engine's instances, then the ML Workbench's.
CHAOS = tuple(f"http://127.0.0.1:{port}/api/v1/chaos" for port in PORTS[1:])
#: What an unclosed session, connector, transport or socket prints under ``-W error``,
#: and what a loop closed with a task pending logs.
LEAK_MARKERS = ("Unclosed", "unclosed", "ResourceWarning", "Exception ignored", "Task was destroyed")
REGIMES = "trending_up|trending_down|ranging|volatile"

# Loaded in the parent: between fork and exec the child may only make the call.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the launcher, before exec: SIGTERM when pytest dies, so no platform outlives the run."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class Ran:
    """What one README command or Python block did."""

    where: str
    text: str
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return f"{self.where}: {self.text}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _get_json(url: str) -> dict:
    """The JSON answer of ``url``, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def _http_parts(text: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-cased names) and body of `curl -i` output."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- what the text around each command promises --------------------------------------


def signal_with_prediction(ran: Ran) -> None:
    answer = json.loads(ran.stdout)
    assert answer["symbol"] == "EURUSD", ran
    assert answer["prediction"]["prediction"] in ("up", "down"), ran
    assert answer["degraded"] == [], ran


def analysis_engine_failing(ran: Ran) -> None:
    assert json.loads(ran.stdout)["config"]["error_rate"] == 1.0, ran


def routed_around(ran: Ran) -> None:
    codes = ran.stdout.split()
    assert codes == ["200"] * 20, ran  # not one failed request


def instance_status(ran: Ran) -> None:
    lines = ran.stdout.splitlines()
    assert lines[0] == "breaker closed", ran
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["127.0.0.1:8001"][1] == "healthy", ran
    broken = rows["127.0.0.1:8011"]
    # Ejected after 5 failures in a row, or kept away by its failures' cost before that.
    assert broken[1] == "ejected" or int(broken[2].rstrip("%")) <= 20, ran


def breaker_opens(ran: Ran) -> None:
    codes = ran.stdout.split()
    assert codes, ran
    assert set(codes) == {"503"}, ran
    ready = _get_json(f"{GATEWAY}/health/ready")
    assert ready["dependencies"]["analysis-engine-service"]["breaker"] == "open", ready


def fails_fast_with_retry_after(ran: Ran) -> None:
    status, headers, body = _http_parts(ran.stdout)
    assert status == 503, ran
    assert int(headers["retry-after"]) > 0, ran
    assert json.loads(body)["error"] == "CircuitBreakerOpenError", ran
    assert ran.seconds < 2.0, ran  # refused at once, not after retries


def healed(url: str) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        assert _get_json(url)["config"]["error_rate"] == 0.0, ran

    return check


def breaker_reset(ran: Ran) -> None:
    ready = _get_json(f"{GATEWAY}/health/ready")
    breaker = ready["dependencies"]["analysis-engine-service"]["breaker"]
    assert breaker == "closed", f"the breaker is still {breaker} after the reset command\n{ran}"


def workbench_slow(ran: Ran) -> None:
    assert json.loads(ran.stdout)["config"]["latency_ms"] == 5000, ran


def degraded_signal(ran: Ran) -> None:
    answer = json.loads(ran.stdout)
    assert answer["prediction"] is None, ran
    assert answer["degraded"] == ["ml-workbench-service"], ran
    assert re.fullmatch(REGIMES, answer["regime"]["regime"]), ran


def workbench_instance_cleared(ran: Ran) -> None:
    assert _get_json(CHAOS[3])["config"]["latency_ms"] == 0, ran


def chaos_cleared(ran: Ran) -> None:
    for url in CHAOS:
        config = _get_json(url)["config"]
        assert (config["error_rate"], config["latency_ms"]) == (0.0, 0), (url, config)


def direct_client_output(ran: Ran) -> None:
    assert re.search(rf"^EURUSD 1h: RSI\(14\) \d+\.\d, regime ({REGIMES})$", ran.stdout, re.M), ran
    assert re.search(r"^100 candles, last close \d+\.\d+$", ran.stdout, re.M), ran


def factory_output(ran: Ran) -> None:
    assert re.search(rf"^EURUSD 4h: ({REGIMES}); models: \S", ran.stdout, re.M), ran


@dataclass(frozen=True)
class Check:
    """A promise of the README, checked after the one command (or Python block) it matches."""

    pattern: str
    check: Callable[[Ran], None]

    def applies(self, text: str) -> bool:
        return re.search(self.pattern, text) is not None


CHECKS = [
    Check(r"^curl '?http://127\.0\.0\.1:8000/api/v1/signals/EURUSD\?timeframe=1h'?$", signal_with_prediction),
    Check(r"-X PUT localhost:8011/api/v1/chaos .*error_rate.: 1\.0", analysis_engine_failing),
    Check(r"^for i in \$\(seq 20\).*localhost:8000/api/v1/regime/EURUSD", routed_around),
    Check(r"^curl -s localhost:8000/api/v1/resilience \| python3", instance_status),
    Check(r"-X PUT localhost:8001/api/v1/chaos .*error_rate.: 1\.0", analysis_engine_failing),
    Check(r"^for i in 1 2 3; .*localhost:8000/api/v1/regime/EURUSD", breaker_opens),
    Check(r"^curl -i localhost:8000/api/v1/regime/EURUSD$", fails_fast_with_retry_after),
    Check(r"^curl -X DELETE localhost:8011/api/v1/chaos$", healed(CHAOS[1])),
    Check(r"^curl -X DELETE localhost:8001/api/v1/chaos$", healed(CHAOS[0])),
    Check(r"-X POST localhost:8000/api/v1/resilience/analysis-engine-service/reset", breaker_reset),
    Check(r"-X PUT localhost:8012/api/v1/chaos .*latency_ms.: 5000", workbench_slow),
    Check(r"-X PUT localhost:8002/api/v1/chaos .*latency_ms.: 5000", workbench_slow),
    Check(r"^curl localhost:8000/api/v1/signals/EURUSD$", degraded_signal),
    Check(r"^curl -X DELETE localhost:8012/api/v1/chaos", workbench_instance_cleared),
    Check(r"^curl -X DELETE localhost:8002/api/v1/chaos", chaos_cleared),
    Check(r"AnalysisEngineClient\(config\) as client", direct_client_output),
    Check(r"get_analysis_engine_client\(\)", factory_output),
]


def _texts(block: Block) -> list[str]:
    """What checks match against: each command of a shell block, or a Python block whole."""
    if block.lang == "python":
        return [block.text]
    return [c.text for c in commands(block)]


def _readme_blocks() -> list[Block]:
    try:
        return blocks(README)
    except MarkupError:
        return []  # test_readme_markup reports it; nothing can run


# -- the platform, as `make run` starts it ---------------------------------------------


def _clean_env() -> dict[str, str]:
    """The environment of a fresh shell: no settings overrides, the venv's tools first on PATH."""
    prefixes = ("APP_", "AE_", "MLW_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _restore_chaos() -> None:
    for url in CHAOS:
        # OSError: that upstream is already gone, and its faults went with it.
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=5).close()


@pytest.fixture(scope="module")
def make_run(tmp_path_factory) -> Iterator[Path]:
    """`python -m launcher` (what `make run` runs) on the README's ports; stopped with Ctrl-C's SIGINT."""
    taken = [port for port in PORTS if not _port_free(port)]
    if taken:
        # The commands name these ports, so they cannot run elsewhere; a developer's own
        # `make run` in another terminal is the usual holder, and not a defect to fail on.
        pytest.skip(f"port(s) {taken} in use (a `make run` elsewhere?): the README's commands need {PORTS}")
    log = tmp_path_factory.mktemp("readme") / "make-run.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "launcher"], cwd=ROOT, env=_clean_env(),
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509 - one syscall
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 45
        while "Ctrl-C stops all three" not in log.read_text(errors="replace"):
            if launcher.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make run did not come up:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield log
    finally:
        _restore_chaos()
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(30)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            code = None
    assert code == 0, log.read_text(errors="replace")
    assert all(_port_free(port) for port in PORTS), "a service outlived the launcher"


# -- the tests ------------------------------------------------------------------------------


def test_readme_markup() -> None:
    """Every README block is one the test can run (sh, bash, python) or is marked skip with a reason."""
    found = blocks(README)  # MarkupError names the line of a bad marker or an unclosed fence
    unrunnable = [
        f"line {b.line}: ```{b.lang} block without `<!-- readme-test: skip (reason) -->`"
        for b in found
        if b.skip is None and b.lang not in RUNNERS
    ]
    assert unrunnable == []
    assert any(b.skip is None for b in found)


def test_every_check_matches_exactly_one_readme_command() -> None:
    """Each promise checked here is tied to one README command: an edit that drops or doubles it fails."""
    runnable = [b for b in blocks(README) if b.skip is None]
    texts = [t for b in runnable for t in _texts(b)]
    counts = {c.pattern: sum(c.applies(t) for t in texts) for c in CHECKS}
    assert {p: n for p, n in counts.items() if n != 1} == {}


@pytest.mark.timeout(120)  # the first block also waits for the platform to start
@pytest.mark.parametrize("block", _readme_blocks(), ids=lambda b: b.id)
def test_readme_block(block: Block, request) -> None:
    """The README block runs as written against `make run`: exit 0, no warning, and what its text promises."""
    if block.skip is not None:
        pytest.skip(f"README line {block.line} ({block.lang or 'plain'}): {block.skip}")
    request.getfixturevalue("make_run")
    if block.lang == "python":
        ran = [_run_python(block, request.getfixturevalue("tmp_path"))]
    else:
        ran = _run_shell(block)
    # Each run asserted its exit status and promises; a runnable block that ran nothing
    # (no command found in it) would prove nothing.
    assert ran, f"README line {block.line}: nothing to run"


def _run_shell(block: Block) -> list[Ran]:
    env = _clean_env()
    done: list[Ran] = []
    for command in commands(block):
        if re.search(r"\bcurl\b", command.text) and shutil.which("curl", path=env["PATH"]) is None:
            pytest.fail("curl is not installed; the README's commands use it (apt-get install curl)")
        started = time.monotonic()
        proc = subprocess.run(  # noqa: S603 - the README's own commands, on loopback
            [RUNNERS[block.lang], "-c", command.text], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        ran = Ran(
            f"README line {command.line}", command.text, proc.stdout, proc.stderr, time.monotonic() - started
        )
        assert proc.returncode == 0, f"exit {proc.returncode}\n{ran}"
        for check in CHECKS:
            if check.applies(command.text):
                check.check(ran)
        done.append(ran)
    return done


def _run_python(block: Block, tmp_path: Path) -> Ran:
    program = tmp_path / f"readme_line{block.line}.py"
    program.write_text(block.text, encoding="utf-8")
    env = {**_clean_env(), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(  # noqa: S603 - the README's own program
        [sys.executable, "-W", "error", str(program)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ran = Ran(
        f"README line {block.line}", "(python block)", proc.stdout, proc.stderr, time.monotonic() - started
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{ran}"
    assert [m for m in LEAK_MARKERS if m in proc.stderr] == [], ran
    assert "Traceback" not in proc.stderr, ran
    for check in CHECKS:
        if check.applies(block.text):
            check.check(ran)
    return ran
