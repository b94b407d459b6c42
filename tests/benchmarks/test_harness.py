"""``make bench-quick``: the benchmark harness runs end to end and writes its report (no timings asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# The subprocess has its own 240 s limit; the suite-wide 60 s would cut it short on a
# loaded machine (it takes about 35 s on an idle one).
@pytest.mark.timeout(300)
def test_quick_benchmark_writes_every_section(tmp_path) -> None:
    """The quick run measures every variant, the gateway, memory and the micro-benchmarks."""
    output = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = output.read_text()
    for heading in ("## Targets", "## Client variants", "## Gateway", "## Micro-benchmarks", "## Memory"):
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
