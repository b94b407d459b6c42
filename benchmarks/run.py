"""``make bench`` / ``make bench-quick``: every measurement, then BENCHMARKS.md and its chart.

Each client variant runs in its own process, rounds interleaved (A B C ... A B C ...),
and the report gives medians. ``--quick`` runs a small version, to check the harness.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import ir
from benchmarks.cache_contracts import CACHE_VARIANTS, upstream_server
from benchmarks.report import cache_contracts_report, instructions_report, shared_state_report, write_report
from benchmarks.shared_state import REDIS_DEADLINE_SECONDS, SHARED_VARIANTS
from benchmarks.upstream import fallback_server, free_port, pin_client, pin_server, upstream
from benchmarks.variants import VARIANTS
from launcher.redis import INSTALL_HINT, redis_binary
from tests.support.redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent

#: Requests per run at concurrency 64 / 1; httpx is an order of magnitude slower.
FULL = {
    "n64": 20_000,
    "n1": 5_000,
    "rounds": 3,
    "inflight": 10_000,
    "growth": 1_000_000,
    "gateway": 20_000,
    "micro": 100_000,
    "fleet": 20_000,
    "shared": 10_000,
    "shared_block": 1_000,
    "cache": 10_000,
    "cache_block": 1_000,
    # Instructions per request (callgrind): warm-up, then windows of N1 and N2 requests.
    "ir_warmup": 640,
    "ir_n1": 640,
    "ir_n2": 1_920,
}
QUICK = {
    "n64": 2_000,
    "n1": 500,
    "rounds": 1,
    "inflight": 1_000,
    "growth": 20_000,
    "gateway": 2_000,
    "micro": 10_000,
    "fleet": 2_000,
    "shared": 500,
    "shared_block": 250,
    "cache": 1_000,
    "cache_block": 250,
    "ir_warmup": 128,
    "ir_n1": 128,
    "ir_n2": 384,
}
SLOW = {"httpx": 0.1}


def _python(*args: str, timeout: float = 600, server_core: bool = False) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603 - our own modules
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        preexec_fn=pin_server if server_core else pin_client,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def clients(
    base: str, sizes: dict[str, int], body: str, concurrencies: tuple[int, ...], variants: list[str]
) -> dict[str, Any]:
    """Medians per (variant, concurrency), rounds interleaved across variants."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_no in range(sizes["rounds"]):
        for concurrency in concurrencies:
            for variant in variants:
                n = sizes["n64"] if concurrency > 1 else sizes["n1"]
                n = max(200, int(n * SLOW.get(variant, 1.0)))
                result = _python("benchmarks.worker", variant, f"{base}/{body}", str(concurrency), str(n))
                runs.setdefault((variant, concurrency), []).append(result)
                print(
                    f"  round {round_no + 1} c={concurrency} {variant}: {result['req_s']:.0f} req/s",
                    flush=True,
                )
    return {
        f"{variant}@{concurrency}": {
            key: statistics.median(r[key] for r in results) for key in ("req_s", "cpu_us", "rss_mb")
        }
        for (variant, concurrency), results in runs.items()
    }


def gateway(base: str, sizes: dict[str, int]) -> dict[str, float]:
    """Route (a), framework + DI, against route (b), raw aiohttp, in one uvicorn worker."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "benchmarks.gateway_app", str(port), base], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=pin_client,  # noqa: PLW1509 - the gateway under test gets the client core
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        results: dict[str, list[float]] = {"framework": [], "framework-nodi": [], "raw": []}
        for _ in range(sizes["rounds"]):
            for route, values in results.items():
                out = _python(
                    "benchmarks.loadgen",
                    f"http://127.0.0.1:{port}/bench/{route}",
                    "64",
                    str(sizes["gateway"]),
                    server_core=True,  # the load generator shares nginx's core, not the gateway's
                )
                if out["errors"]:
                    raise RuntimeError(f"gateway route {route}: {out['errors']} errors")
                values.append(out["req_s"])
                print(f"  gateway {route}: {out['req_s']:.0f} req/s", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    return {route: statistics.median(values) for route, values in results.items()}


#: The many-instances benchmark: how long each instance holds every answer (ms). The
#: third is the slow one, ten times the others; the single-instance client gets the first.
FLEET_DELAYS_MS = (20.0, 20.0, 200.0)
FLEET_CONCURRENCY = 64


def fleet(sizes: dict[str, int]) -> dict[str, Any]:
    """Variant 3's client over three instances (one slow) against the same client on one fast one.

    Every instance is the fallback server holding each answer (nginx cannot), so both
    clients meet the same kind of server; rounds interleaved, medians.
    """
    keys = ("req_s", "p50_ms", "p99_ms", "cpu_us")
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "three": []}
    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(fallback_server(ms)) for ms in FLEET_DELAYS_MS]
        for round_no in range(sizes["rounds"]):
            for name, targets in (("single", bases[:1]), ("three", bases)):
                result = _python(
                    "benchmarks.fleet", str(FLEET_CONCURRENCY), str(sizes["fleet"]), "small", *targets
                )
                runs[name].append(result)
                shares = " / ".join(f"{share:.3f}" for share in result["shares"])
                print(
                    f"  round {round_no + 1} fleet {name}: {result['req_s']:.0f} req/s, "
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, shares {shares}",
                    flush=True,
                )
    out: dict[str, Any] = {
        "delays_ms": list(FLEET_DELAYS_MS),
        "concurrency": FLEET_CONCURRENCY,
        "calls": sizes["fleet"],
    }
    for name, results in runs.items():
        out[name] = {key: statistics.median(r[key] for r in results) for key in keys}
        out[name]["shares"] = [
            statistics.median(column) for column in zip(*(r["shares"] for r in results), strict=True)
        ]
    return out


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server (free port, no persistence) on the upstream's core; None without one.

    Started as the tests start theirs (``tests.support.redis``, on the launcher's command line).
    """
    if redis_binary() is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    server = RedisServer(workdir, preexec_fn=pin_server)
    try:
        server.start()
        yield server.url
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


SHARED_CONCURRENCY = 64


def shared_state(base: str, kind: str, sizes: dict[str, int]) -> dict[str, Any]:
    """Local against global limit (one round trip per call, and batched), local against shared breaker.

    Each table's variants side by side in one process, in blocks of calls taken in turn,
    against one redis-server; rounds of both tables, medians. Without redis-server the
    section says it was skipped, and why.
    """
    out: dict[str, Any] = {
        "upstream": kind,
        "concurrency": SHARED_CONCURRENCY,
        "calls": sizes["shared"],
        "block": sizes["shared_block"],
        "rounds": sizes["rounds"],
        "redis_deadline_s": REDIS_DEADLINE_SECONDS,
    }
    with redis_server() as redis_url:
        if redis_url is None:
            out["skipped"] = f"redis-server not installed: {INSTALL_HINT}"
            print(f"  shared state: skipped, {out['skipped']}", flush=True)
            return out
        version = subprocess.run(  # noqa: S603 - the binary found above
            [str(redis_binary()), "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        out["redis"] = next((word.removeprefix("v=") for word in version if word.startswith("v=")), "unknown")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SHARED_VARIANTS}
        tables = dict.fromkeys(spec.table for spec in SHARED_VARIANTS.values())
        for round_no in range(sizes["rounds"]):
            for table in tables:
                result = _python(
                    "benchmarks.shared_state", table, f"{base}/small", redis_url, str(SHARED_CONCURRENCY),
                    str(sizes["shared"]), str(sizes["shared_block"]),
                )  # fmt: skip
                for name, row in result["variants"].items():
                    runs[name].append(row)
                    print(
                        f"  round {round_no + 1} shared state {name}: {row['req_s']:.0f} req/s, "
                        f"{row['cpu_us']:.1f} CPU us/req, "
                        f"{row['round_trips_per_call']:.4f} Redis round trips/call",
                        flush=True,
                    )
    keys = (
        "req_s",
        "cpu_us",
        "round_trips_per_call",
        "evalsha_per_call",
        "redis_cpu_us",
        "calls_per_round_trip",
    )
    out["variants"] = {
        name: {
            **{key: statistics.median(r[key] for r in results) for key in keys},
            # Not medians: a call the fallback answered in any round is one too many.
            "fallbacks": sum(r["fallbacks"] for r in results),
            "degraded": any(r["degraded"] for r in results),
        }
        for name, results in runs.items()
    }
    return out


CACHE_CONCURRENCY = 64


def cache_contracts(sizes: dict[str, int]) -> dict[str, Any]:
    """A validated call, and a cache hit, miss and revalidation, each against a plain call.

    Every variant side by side in one process, in blocks of calls taken in turn, against
    the section's own upstream (a price series of 200 candles with Cache-Control and an
    ETag); rounds, medians. Upstream requests per call are counted at the upstream.
    """
    out: dict[str, Any] = {
        "concurrency": CACHE_CONCURRENCY,
        "calls": sizes["cache"],
        "block": sizes["cache_block"],
        "rounds": sizes["rounds"],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CACHE_VARIANTS}
    with upstream_server() as base:
        for round_no in range(sizes["rounds"]):
            result = _python(
                "benchmarks.cache_contracts", "measure", base, str(CACHE_CONCURRENCY), str(sizes["cache"]),
                str(sizes["cache_block"]),
            )  # fmt: skip
            out["model"], out["payload_bytes"], out["candles"] = (
                result["model"], result["payload_bytes"], result["candles"],
            )  # fmt: skip
            for name, row in result["variants"].items():
                runs[name].append(row)
                print(
                    f"  round {round_no + 1} cache and contracts {name}: {row['req_s']:.0f} req/s, "
                    f"{row['cpu_us']:.1f} CPU us/call, {row['upstream_per_call']:.3f} upstream requests/call",
                    flush=True,
                )
    keys = ("req_s", "cpu_us", "upstream_per_call", "not_modified_per_call")
    out["variants"] = {
        name: {
            **{key: statistics.median(r[key] for r in results) for key in keys},
            "returns": results[-1]["returns"],
            "cache": results[-1]["cache"],
        }
        for name, results in runs.items()
    }
    return out


def versions() -> dict[str, str]:
    names = ["aiohttp", "uvloop", "dependency-injector", "fastapi", "uvicorn", "prometheus-client", "orjson",
             "pydantic", "pydantic-core", "aiobreaker", "backoff", "aiohttp-retry", "tenacity",
             "httpx"]  # fmt: skip
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os  # noqa: PLC0415

    return {"cores": str(os.cpu_count()), "cpu": cpu, "kernel": platform.release()}


#: Sections that ``--only`` runs alone (``make bench`` runs them all).
SECTIONS = ("shared-state", "cache-and-contracts", "instructions")


def only(section: str, sizes: dict[str, int], output: Path, quick: bool) -> int:
    """Run one section and write it alone, as the full report would show it, with its JSON beside it."""
    started = time.monotonic()
    results: dict[str, Any] = {"quick": quick, "machine": machine(), "versions": versions()}
    if section == "cache-and-contracts":
        key, render = "cache_contracts", cache_contracts_report
        results[key] = cache_contracts(sizes)  # its own upstream, which counts what it answers
    elif section == "instructions":
        key, render = "instructions", instructions_report
        with upstream(install=False) as (base, kind):
            results["upstream"] = kind
            print(f"upstream: {kind} at {base}", flush=True)
            results[key] = ir.measure(base, kind, sizes)
    else:
        key, render = "shared_state", shared_state_report
        with upstream(install=False) as (base, kind):  # a single section never installs nginx
            results["upstream"] = kind
            print(f"upstream: {kind} at {base}", flush=True)
            results[key] = shared_state(base, kind, sizes)
    results["seconds"] = time.monotonic() - started
    m = results["machine"]
    # Kept with the section's figures: a report of a full run they are put into names them.
    results[key]["alone"] = {
        "command": f"python -m benchmarks.run --only {section}{' --quick' if quick else ''}",
        "machine": f"{m['cores']} cores, {m['cpu']}, Linux {m['kernel']}, in {results['seconds']:.0f} s",
    }
    output.write_text(f"# Benchmarks: the {section} section alone\n" + render(results))
    output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {output} in {results['seconds']:.0f} s", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run, to check the harness")
    parser.add_argument("--output", type=Path, help="default: BENCHMARKS.md, or /tmp/BENCHMARKS-SECTION.md")
    parser.add_argument("--only", choices=SECTIONS, help="run this one section and write it alone")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.only:
        # Never over BENCHMARKS.md: one section is not the whole report.
        return only(args.only, sizes, args.output or Path(f"/tmp/BENCHMARKS-{args.only}.md"), args.quick)  # noqa: S108
    output: Path = args.output or ROOT / "BENCHMARKS.md"
    started = time.monotonic()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine(), "versions": versions()}
    # The quick run takes nginx if it is there but never installs it (it runs in make test).
    with upstream(install=not args.quick) as (base, kind):
        results["upstream"] = kind
        print(f"upstream: {kind} at {base}", flush=True)
        variants = list(VARIANTS)
        concurrencies = (64,) if args.quick else (64, 1)
        results["small"] = clients(base, sizes, "small", concurrencies, variants)
        large_variants = ["aiohttp", "aiohttp-uvloop", "framework", "framework-runtime"]
        results["large"] = clients(
            base, {**sizes, "rounds": 1 if args.quick else 3}, "large", (64,), large_variants
        )
        results["shared_state"] = shared_state(base, kind, sizes)
        results["gateway"] = gateway(base, sizes)
        # Instruction counts under callgrind (deterministic); not in the quick run, which runs in make test.
        results["instructions"] = (
            {"skipped": "not in the quick run; `make bench-ir` measures it alone"}
            if args.quick
            else ir.measure(base, kind, sizes)
        )
        results["growth"] = _python(
            "benchmarks.memory", "growth", f"{base}/small", str(sizes["growth"]), timeout=900
        )
        print(f"  growth: {results['growth']}", flush=True)
    # Not on nginx: it cannot hold an answer. Both clients of the comparison meet the fallback server.
    results["fleet"] = fleet(sizes)
    results["cache_contracts"] = cache_contracts(sizes)
    with fallback_server() as slow_base:
        results["inflight"] = _python(
            "benchmarks.memory", "inflight", f"{slow_base}/slow", str(sizes["inflight"])
        )
        results["inflight_raw"] = _python(
            "benchmarks.memory", "inflight-raw", f"{slow_base}/slow", str(sizes["inflight"])
        )
        results["inflight_lean"] = _python(
            "benchmarks.memory", "inflight-lean", f"{slow_base}/slow", str(sizes["inflight"])
        )
        print(
            f"  in flight: {results['inflight']}; lean: {results['inflight_lean']}; "
            f"raw aiohttp: {results['inflight_raw']}",
            flush=True,
        )
    results["micro"] = _python("benchmarks.micro", str(sizes["micro"]))
    results["seconds"] = time.monotonic() - started
    write_report(results, output)
    (output.with_suffix(".json")).write_text(json.dumps(results, indent=2))
    print(f"wrote {output} in {results['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
