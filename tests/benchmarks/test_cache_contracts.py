"""The cache-and-contracts bench section, run tiny: its structure and the upstream's counts, never its timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.cache_contracts import CACHE_VARIANTS, ETAG, PRICES, Upstream, contract
from benchmarks.report import cache_contracts_report

#: Two blocks of 64 per variant, after a warm-up of as many: a few seconds in all.
TINY = {"cache": 128, "cache_block": 64, "rounds": 1}


# Two subprocesses (the upstream and the measured run) on a loaded machine: more than the suite's 60 s may be needed.
@pytest.mark.timeout(180)
def test_section_alone_measures_every_variant_and_counts_at_the_upstream(tmp_path: Path) -> None:
    """`--only cache-and-contracts`, tiny: every row measured; a hit makes no upstream request, a miss one, a revalidation one 304."""
    output = tmp_path / "BENCHMARKS-cache.md"
    assert "cache-and-contracts" in run.SECTIONS
    assert run.only("cache-and-contracts", TINY, output, quick=True) == 0
    section = json.loads(output.with_suffix(".json").read_text())["cache_contracts"]
    assert section["concurrency"] == 64
    assert section["calls"] == TINY["cache"]
    assert section["payload_bytes"] == len(PRICES)
    assert "alone" in section
    rows = section["variants"]
    assert set(rows) == set(CACHE_VARIANTS)
    for row in rows.values():
        assert row["req_s"] > 0
        assert row["cpu_us"] > 0
    # Counted by the upstream over the measured calls only (the warm-up filled the caches).
    for name in ("plain", "strict", "off", "miss", "revalidate"):
        assert rows[name]["upstream_per_call"] == 1.0, name
    assert rows["hit"]["upstream_per_call"] == 0.0
    assert rows["revalidate"]["not_modified_per_call"] == 1.0
    for name in ("plain", "strict", "off", "hit", "miss"):
        assert rows[name]["not_modified_per_call"] == 0.0, name
    # And by the client's cache: every measured call a hit, a miss and a store, or a 304 merged.
    n = TINY["cache"]
    assert rows["hit"]["cache"] == {"hit": n}
    assert rows["miss"]["cache"] == {"miss": n, "stored": n}
    assert rows["revalidate"]["cache"] == {"revalidated": n}
    for name in ("plain", "strict", "off"):
        assert rows[name]["cache"] == {}, name
    # A validated call gives the model; "off" builds it unchecked; the rest give the decoded dict.
    model, _ = contract()
    assert rows["strict"]["returns"] == model.__name__
    assert rows["off"]["returns"] == model.__name__
    for name in ("plain", "hit", "miss", "revalidate"):
        assert rows[name]["returns"] == "dict", name
    report = output.read_text()
    assert "## Cache and contracts" in report
    assert "*Measured alone* (`python -m benchmarks.run --only cache-and-contracts --quick`)" in report
    for spec in CACHE_VARIANTS.values():
        assert spec.label in report
    assert "Validation (`strict`) costs" in report


def test_report_leaves_the_section_out_when_it_was_not_run() -> None:
    """A results file without the section renders nothing for it."""
    assert cache_contracts_report({}) == ""


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_upstream_answers_304_to_its_etag_and_counts_per_path() -> None:
    """The upstream: 200 with max-age and the ETag, 304 to a matching If-None-Match, max-age=0 under /reval/."""
    server, transport = Upstream(), _Transport()
    server.connection_made(transport)  # type: ignore[arg-type]
    server.data_received(
        b"GET /prices/t1?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /prices/t1?n=2 HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + ETAG + b"\r\n\r\n"
        b'GET /reval/t1 HTTP/1.1\r\nif-none-match: "other"\r\n\r\n'
    )
    full, not_modified, reval = transport.written
    assert full.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Cache-Control: max-age=3600\r\n" in full
    assert b"ETag: " + ETAG + b"\r\n" in full
    assert full.endswith(PRICES)
    assert not_modified.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert not_modified.endswith(b"\r\n\r\n")
    assert reval.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Cache-Control: max-age=0\r\n" in reval
    server.data_received(b"GET /stats HTTP/1.1\r\n\r\n")
    stats = json.loads(transport.written[-1].split(b"\r\n\r\n", 1)[1])
    assert stats["/prices/t1"] == {"200": 1, "304": 1}
    assert stats["/reval/t1"] == {"200": 1}
