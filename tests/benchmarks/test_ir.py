"""The instructions bench section, run tiny: its structure and the difference method, never its figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import ir, run
from benchmarks.report import instruction_targets, instructions_report
from benchmarks.upstream import fallback_server

#: Windows of one and three rounds of 16 requests at c=64 after one of warm-up: the set-up
#: (uninstrumented) is most of the time.
TINY = {"ir_warmup": 64, "ir_n1": 64, "ir_n2": 192}


# One process under callgrind (about 15 s on an idle machine; more on a loaded one).
@pytest.mark.timeout(180)
def test_plain_client_gives_a_positive_finite_count_per_request() -> None:
    """Variant 3a under callgrind: three marker dumps, and (Ir(N2) - Ir(N1)) / (N2 - N1) positive and finite."""
    if ir.valgrind() is None:
        pytest.skip(f"valgrind not installed: {ir.INSTALL_HINT}")
    with fallback_server() as base:
        section = ir.measure(base, "fallback", TINY, names=["framework-nolog"])
    assert "skipped" not in section
    assert section["concurrency"] == ir.CONCURRENCY
    row = section["variants"]["framework-nolog"]
    assert (row["n1"], row["n2"]) == (64, 192)
    assert math.isfinite(row["ir"])
    assert row["ir"] > 0
    assert 0 < row["ir_n1"] < row["ir_n2"]
    # The difference of the windows, over the difference of their requests.
    assert row["ir"] == pytest.approx((row["ir_n2"] - row["ir_n1"]) / (192 - 64))
    # A client request is tens of thousands of instructions at least (the whole program is billions).
    assert 10_000 < row["ir"] < 50_000_000
    report = instructions_report({"instructions": section})
    assert "## Instructions per request (callgrind)" in report
    assert ir.IR_VARIANTS["framework-nolog"].label in report


def test_difference_method_and_marker_dumps(tmp_path: Path) -> None:
    """The marker dumps are read in part order, and a fixed per-window cost cancels out."""
    out = tmp_path / "callgrind.x"
    for part, total in ((3, 9_000_000), (1, 5), (2, 3_500_000)):
        (tmp_path / f"callgrind.x.{part}").write_text(
            f"# callgrind format\nversion: 1\npart: {part}\n\ndesc: Trigger: --dump-before=getppid\n\n"
            f"events: Ir\nsummary: {total}\n\nfn=(1) main\n0 {total}\n"
        )
    parts = ir.read_parts(out)
    assert parts == [5, 3_500_000, 9_000_000]
    row = ir.per_request(parts, 100, 300)
    assert row["ir"] == 27_500  # (9.0M - 3.5M) / 200
    assert row["window_overhead"] == 750_000  # 3.5M - 100 * 27.5k
    with pytest.raises(RuntimeError, match="3 marker dumps"):
        ir.per_request(parts[1:], 100, 300)
    (tmp_path / "callgrind.x.4").write_text("part: 4\ndesc: Trigger: Program termination\nsummary: 1\n")
    with pytest.raises(RuntimeError, match="not a marker's dump"):
        ir.read_parts(out)


def test_windows_are_whole_rounds_of_the_concurrency() -> None:
    """N1 and N2 are multiples of the concurrency for clients and routes, and N2 > N1 for every row."""
    sizes = {"ir_warmup": 640, "ir_n1": 640, "ir_n2": 1920}
    for name, spec in ir.IR_VARIANTS.items():
        warmup, n1, n2 = ir.windows(name, sizes)
        assert 0 < n1 < n2, name
        assert warmup > 0, name
        if spec.kind in ("client", "route"):
            assert n1 % ir.CONCURRENCY == 0, name
            assert n2 % ir.CONCURRENCY == 0, name


def test_report_judges_the_targets_on_instruction_ratios() -> None:
    """Ratios are the baseline's count over the row's; P4 is (b) over (a); P5 goes through the calibration."""
    rows = {
        "aiohttp": 400_000,
        "framework-nolog": 500_000,
        "framework": 600_000,
        "aiohttp-retry": 480_000,
        "tenacity": 900_000,
        "route-framework": 2_000_000,
        "route-nodi": 1_500_000,
        "route-raw": 1_000_000,
        "refusal-breaker": 12_000,
        "refusal-bulkhead": 30_000,
        "calibration": 10_000,
    }
    section = {
        "upstream": "nginx",
        "concurrency": 64,
        "warmup": 640,
        "ir_per_us": 5_000.0,  # 10k instructions in 2 µs
        "calibration_us": 2.0,
        "variants": {
            name: {"ir": count, "n1": 640, "n2": 1920, "concurrency": 64} for name, count in rows.items()
        },
    }
    got = {target: (measured, met) for target, _, measured, met in instruction_targets(section)}
    assert got["P1a: raw aiohttp / 3a"] == ("0.80x", False)
    assert got["P1b: raw aiohttp / 3"] == ("0.67x", False)
    assert got["P3: aiohttp-retry RetryClient / 3"] == ("0.80x", False)
    assert got["P3: aiohttp + tenacity per call / 3"] == ("1.50x", True)
    assert got["P4: gateway route (b) / route (a)"] == ("0.50x", False)
    assert got["P5: open-breaker refusal, call log on"] == ("12k ≈ 2.4 µs", True)
    assert got["P5: full-bulkhead refusal, call log on"] == ("30k ≈ 6.0 µs", False)
    assert len(got) == 7
    report = instructions_report({"instructions": section})
    assert "| target (instructions) | required | measured | |" in report
    assert (
        "1,000k instructions more than the hand-written one: 500k of them per-request dependency injection"
        in report
    )
    assert (
        instructions_report({"instructions": {"skipped": "valgrind not installed"}}).count("**Skipped:**")
        == 1
    )
    assert instructions_report({}) == ""
    assert "instructions" in run.SECTIONS
