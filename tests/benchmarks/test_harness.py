"""``make bench-quick``: the benchmark harness runs end to end and writes its report (no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import shared_state_report
from launcher.redis import redis_binary

ROOT = Path(__file__).resolve().parents[2]


# The subprocess has its own 240 s limit; the suite-wide 60 s would cut it short on a
# loaded machine (it takes about 45 s on an idle one).
@pytest.mark.timeout(300)
def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    """The quick run measures every variant, three instances, shared state, the gateway, memory and the micro-benchmarks."""
    output = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = output.read_text()
    headings = (
        "## Targets",
        "## Client variants",
        "## Many instances",
        "## Shared state",
        "## Gateway",
        "## Micro-benchmarks",
        "## Memory",
    )
    for heading in headings:
        assert heading in report
    for label in (
        "raw aiohttp (baseline)",
        "BaseServiceClient, metrics + call log",
        "aiohttp-retry",
        "tenacity",
        "httpx",
        "floor",
    ):
        assert label in report
    assert "P1a" in report
    assert "P6" in report
    assert (tmp_path / "docs" / "benchmarks.png").stat().st_size > 5_000
    assert "three instances, one slow" in report
    # Three instances, the third slow, against one: sane figures, not timings.
    fleet = json.loads(output.with_suffix(".json").read_text())["fleet"]
    single, three = fleet["single"], fleet["three"]
    for row in (single, three):
        assert row["req_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert single["shares"] == [1.0]
    assert len(three["shares"]) == 3
    assert abs(sum(three["shares"]) - 1) < 0.01
    # Round robin would give the slow instance a third; the balancer gives it much less.
    assert three["shares"][2] < 0.25, three["shares"]
    assert min(three["shares"][:2]) > 0.3, three["shares"]
    # Shared state: measured against a real redis-server, or said to be skipped (never silently).
    shared = json.loads(output.with_suffix(".json").read_text())["shared_state"]
    if redis_binary() is None:
        assert "**Skipped:** redis-server not installed" in report
        assert "skipped" in shared
        return
    assert "### (a) Rate limit: local against global" in report
    assert "### (b) Breaker, closed: local against shared" in report
    for label in ("global limit, one round trip per call", "global limit, batched", "shared breaker"):
        assert label in report
    rows = shared["variants"]
    for row in rows.values():
        assert row["req_s"] > 0
        assert row["cpu_us"] > 0
    for local in ("limit-local", "breaker-local"):  # no Redis at all
        assert rows[local]["round_trips_per_call"] == 0
    # Structure, not timings: unbatched, every round trip carries one call; batched, at
    # concurrency 64, several; the shared breaker's hot path makes none (the heartbeat aside).
    single, batched = rows["limit-global-single"], rows["limit-global"]
    assert single["calls_per_round_trip"] == 1.0
    assert single["round_trips_per_call"] > 0.5
    assert batched["calls_per_round_trip"] > 1.5
    assert batched["round_trips_per_call"] < single["round_trips_per_call"]
    assert rows["breaker-shared"]["round_trips_per_call"] < 0.05


def test_shared_state_section_says_when_it_was_skipped() -> None:
    """Without redis-server the section is there, with the reason, and no table pretending otherwise."""
    text = shared_state_report({"shared_state": {"skipped": "redis-server not installed: install it"}})
    assert "## Shared state" in text
    assert "**Skipped:** redis-server not installed: install it." in text
    assert "|" not in text
