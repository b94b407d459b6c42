"""Instructions per request: ``valgrind --tool=callgrind`` counts, whatever else the machine does.

Every row runs in its own process under callgrind (the upstream in another process, not
under valgrind). The process starts, imports, builds its variant and warms up with
instrumentation off (``--instr-atstart=no``: several times faster), then turns it on
(``vgdb --pid=PID instrumentation on``) and measures two windows, of N1 and N2 requests,
each followed by ``os.getppid()``: callgrind dumps its counters at every ``getppid``
(``--dump-before=getppid``), so each window's instructions (Ir) are in a file of their own.
Per request: ``(Ir(N2) - Ir(N1)) / (N2 - N1)``; whatever a window costs once (its tasks,
the gather) cancels out. All threads of the process are counted. Two runs agree to about
0.1%, rows with the call log to about 1.5% (its flusher wakes per second of wall time;
see benchmarks/NOTES.md).

``python -m benchmarks.ir workload NAME BASE CONCURRENCY WARMUP N1 N2`` is one such process
(run by ``measure``, under valgrind); ``python -m benchmarks.ir calibrate N`` times the
fixed calibration workload natively (best of seven), for the µs equivalents of P5.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

from benchmarks.upstream import pin_client
from benchmarks.variants import VARIANTS
from benchmarks.worker import drive

ROOT = Path(__file__).resolve().parent.parent

INSTALL_HINT = "install Debian's valgrind (`make valgrind` as root, or `apt-get install valgrind`)"

#: Requests in flight for the client and gateway rows (the issue's c=64).
CONCURRENCY = 64
#: Steps of the calibration workload per native run (about 0.1 to 0.2 s); the best of seven counts.
CALIBRATION_STEPS = 100_000

Kind = Literal["client", "refusal", "route", "calibration"]


@dataclasses.dataclass(frozen=True, slots=True)
class IrVariant:
    """One row: its label, what it runs, and its windows as a share of the section's (``scale``)."""

    label: str
    kind: Kind
    #: The client variant (``benchmarks.variants``), the refusal, or the gateway route.
    target: str
    uvloop: bool = False
    #: Windows and warm-up of this row = the section's sizes times this (slow rows run fewer).
    scale: float = 1.0


IR_VARIANTS: dict[str, IrVariant] = {
    "aiohttp": IrVariant(VARIANTS["aiohttp"][0], "client", "aiohttp"),
    "aiohttp-uvloop": IrVariant(VARIANTS["aiohttp-uvloop"][0], "client", "aiohttp-uvloop", uvloop=True),
    "framework": IrVariant(VARIANTS["framework"][0], "client", "framework"),
    "framework-nolog": IrVariant(VARIANTS["framework-nolog"][0], "client", "framework-nolog"),
    "framework-runtime": IrVariant(
        VARIANTS["framework-runtime"][0], "client", "framework-runtime", uvloop=True
    ),
    "framework-lean-asyncio": IrVariant(
        VARIANTS["framework-lean-asyncio"][0], "client", "framework-lean-asyncio"
    ),
    "framework-lean": IrVariant(VARIANTS["framework-lean"][0], "client", "framework-lean", uvloop=True),
    "aiohttp-retry": IrVariant(VARIANTS["aiohttp-retry"][0], "client", "aiohttp-retry"),
    "tenacity": IrVariant(VARIANTS["tenacity"][0], "client", "tenacity"),
    "floor": IrVariant(VARIANTS["floor"][0], "client", "floor", uvloop=True),
    "refusal-breaker": IrVariant(
        "open-breaker refusal through `client.get`, call log on", "refusal", "breaker"
    ),
    "refusal-bulkhead": IrVariant(
        "full-bulkhead refusal through `client.get`, call log on", "refusal", "bulkhead"
    ),
    "route-framework": IrVariant(
        "gateway (a): framework client injected by the container", "route", "/bench/framework", scale=0.5
    ),
    "route-nodi": IrVariant(
        "gateway: the framework's client without per-request DI", "route", "/bench/framework-nodi", scale=0.5
    ),
    "route-raw": IrVariant(
        "gateway (b): the same route by hand, raw aiohttp, no DI", "route", "/bench/raw", scale=0.5
    ),
    "calibration": IrVariant(
        "calibration: a fixed pure-Python workload (for the µs equivalents)", "calibration", "", scale=2.0
    ),
}


def valgrind() -> str | None:
    """The valgrind binary, if installed (with vgdb, which turns instrumentation on)."""
    found = shutil.which("valgrind") or (
        "/usr/bin/valgrind" if os.access("/usr/bin/valgrind", os.X_OK) else None
    )
    return found if found and _vgdb() else None


def _vgdb() -> str | None:
    return shutil.which("vgdb") or ("/usr/bin/vgdb" if os.access("/usr/bin/vgdb", os.X_OK) else None)


# -- inside the measured process -------------------------------------------------------


def _marker() -> None:
    """Callgrind dumps its counters here (``--dump-before=getppid``): one window ends."""
    os.getppid()


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _instrumentation_on() -> None:
    """Ask valgrind, through vgdb, to instrument from now on; spin until it has.

    Valgrind polls for vgdb's request every few thousand basic blocks of guest code, so
    this process keeps running Python (not blocked in a syscall) until vgdb is done.
    """
    vgdb = _vgdb()
    if vgdb is None:
        raise RuntimeError(f"vgdb not found: {INSTALL_HINT}")
    prefix = os.environ.get("BENCH_IR_VGDB_PREFIX")
    cmd = [
        vgdb,
        *([f"--vgdb-prefix={prefix}"] if prefix else []),
        f"--pid={os.getpid()}",
        "instrumentation",
        "on",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + 120
    while proc.poll() is None:
        _spin(2000)
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("vgdb did not turn callgrind's instrumentation on")
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"vgdb failed ({proc.returncode}): {out[-500:]}")


Call = Callable[[], Awaitable[Any]]


def _collections() -> list[int]:
    return [generation["collections"] for generation in gc.get_stats()]


async def _windows(call: Call, concurrency: int, warmup: int, n1: int, n2: int) -> dict[str, Any]:
    """Warm up uninstrumented, then the two measured windows, each ended by a marker.

    After the warm-up the heap built so far (modules, the app, the client) is frozen
    (``gc.freeze``): a full collection then walks what the requests left, not everything
    start-up made, whose cost falls on whichever window a collection happens in. The
    collections of what requests allocate are counted (per window, in the result), and
    each window's wall-clock seconds (what runs per second of wall time, not per request,
    such as the log flusher's wake-ups every 50 ms, lands on a few requests under callgrind).
    """
    await drive(call, concurrency, warmup)
    gc.collect()
    gc.freeze()
    _instrumentation_on()
    _marker()  # part 1: from instrumentation on to here, not used
    before, started = _collections(), time.monotonic()
    await drive(call, concurrency, n1)
    _marker()  # part 2: the N1 window
    middle, t1 = _collections(), time.monotonic()
    await drive(call, concurrency, n2)
    _marker()  # part 3: the N2 window
    after, t2 = _collections(), time.monotonic()
    return {
        "gc_n1": [b - a for a, b in zip(before, middle, strict=True)],
        "gc_n2": [b - a for a, b in zip(middle, after, strict=True)],
        "seconds_n1": t1 - started,
        "seconds_n2": t2 - t1,
    }


async def _client(name: str, base: str, *, concurrency: int, warmup: int, n1: int, n2: int) -> dict[str, Any]:
    """A client variant of the wall-clock bench against ``base/small``."""
    _, factory, _ = VARIANTS[IR_VARIANTS[name].target]
    call, close = await factory(f"{base}/small")
    try:
        return await _windows(call, concurrency, warmup, n1, n2)
    finally:
        await close()


async def _refusal(name: str, *, warmup: int, n1: int, n2: int) -> dict[str, Any]:
    """Refusals through ``client.get`` with the call log on (INFO, JSON, to a file); no upstream."""
    from app.clients import BaseServiceClient, BulkheadFullError, CircuitBreakerOpenError, ClientConfig  # noqa: PLC0415
    from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415

    breaker = IR_VARIANTS[name].target == "breaker"
    log_file = tempfile.TemporaryFile("w", prefix="bench-ir-refusal-")  # noqa: SIM115 - gone once closed
    configure_logging("INFO", json=True, stream=log_file)
    client = BaseServiceClient(
        ClientConfig(
            base_url="http://127.0.0.1:9/api",
            service_name="bench-ir-refusal",
            timeout_seconds=10,
            enable_metrics=True,
            enable_request_logging=True,
            **({} if breaker else {"bulkhead_max_concurrent": 1, "bulkhead_max_waiting": 0}),
        )
    )
    expected: type[Exception] = CircuitBreakerOpenError if breaker else BulkheadFullError
    if breaker:
        client.breaker.isolate()
    elif not client.bulkhead.try_acquire():
        raise RuntimeError("the bulkhead's only slot could not be taken")
    refused = 0

    async def call() -> None:
        nonlocal refused
        try:
            await client.get("prices")
        except expected:
            refused += 1

    try:
        checked = await _windows(call, 1, warmup, n1, n2)
    finally:
        if not breaker:
            client.bulkhead.release()
        await client.close()
        stop_logging()
        log_bytes = log_file.tell()
        log_file.close()
    if refused != warmup + n1 + n2:
        raise RuntimeError(f"{name}: {refused} of {warmup + n1 + n2} calls refused")
    return {**checked, "refused": refused, "log_bytes": log_bytes}


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gateway"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _route(name: str, base: str, *, concurrency: int, warmup: int, n1: int, n2: int) -> dict[str, Any]:
    """A gateway route of ``benchmarks.gateway_app``, called in process by a minimal ASGI driver.

    The app is the real ``create_app`` (middleware, lifespan, the container) with the JSON
    call log on, to a file, as the wall-clock gateway bench serves it; no server (uvicorn's
    share is not in these counts), the same driver for every route.
    """
    from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415
    from benchmarks import gateway_app  # noqa: PLC0415

    # Not the config file's watch: it re-reads the file every second of wall time, and under
    # callgrind a second holds a few hundred requests, not tens of thousands (off its path).
    os.environ["APP_LIVE_CONFIG"] = "off"
    log_file = tempfile.TemporaryFile("w", prefix="bench-ir-gateway-")  # noqa: SIM115 - gone once closed
    configure_logging("INFO", stream=log_file)
    path = IR_VARIANTS[name].target
    app = gateway_app.build(base, only=path)  # each row's route alone: no row pays another's misses
    statuses: dict[int, int] = {}
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def call() -> None:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(_scope(path), receive, send)
        statuses[status] = statuses.get(status, 0) + 1

    try:
        async with app.router.lifespan_context(app):
            checked = await _windows(call, concurrency, warmup, n1, n2)
    finally:
        if gateway_app._session is not None:  # the hand-written route's own session
            await gateway_app._session.close()
        stop_logging()
        log_file.close()
    if set(statuses) != {200}:
        raise RuntimeError(f"{name}: answers by status {statuses}")
    return {**checked, "statuses": {str(k): v for k, v in statuses.items()}}


class _Quote:
    __slots__ = ("ask", "bid", "symbol")

    def __init__(self, symbol: str, bid: float, ask: float) -> None:
        self.symbol, self.bid, self.ask = symbol, bid, ask


def _check(quote: _Quote, i: int) -> int:
    if i % 2:
        raise ValueError(quote.symbol)
    return len(quote.symbol)


async def _calibration_step(i: int, seen: dict[str, int]) -> int:
    """Fixed pure-Python work of the kind a refusal does: calls, objects, a dict, a string, a raise."""
    quote = _Quote(f"SYM{i % 16}", 1.0 + i % 7, 1.1 + i % 5)
    seen[quote.symbol] = seen.get(quote.symbol, 0) + 1
    try:
        return _check(quote, i)
    except ValueError as exc:
        return len(str(exc)) + int(quote.ask > quote.bid)


async def _calibration(warmup: int, n1: int, n2: int) -> dict[str, Any]:
    seen: dict[str, int] = {}
    counter = iter(range(1 << 62))

    async def call() -> None:
        await _calibration_step(next(counter), seen)

    return await _windows(call, 1, warmup, n1, n2)


def workload(name: str, base: str, *, concurrency: int, warmup: int, n1: int, n2: int) -> dict[str, Any]:
    """One row's measured process (under callgrind); returns what it checked."""
    spec = IR_VARIANTS[name]
    coro: Awaitable[dict[str, Any]]
    if spec.kind == "client":
        coro = _client(name, base, concurrency=concurrency, warmup=warmup, n1=n1, n2=n2)
    elif spec.kind == "refusal":
        coro = _refusal(name, warmup=warmup, n1=n1, n2=n2)
    elif spec.kind == "route":
        coro = _route(name, base, concurrency=concurrency, warmup=warmup, n1=n1, n2=n2)
    else:
        coro = _calibration(warmup, n1, n2)
    if spec.uvloop:
        from app.runtime import run  # noqa: PLC0415

        return run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


def calibrate(n: int, repeats: int = 7) -> float:
    """The calibration workload natively: best of ``repeats`` runs, CPU µs per step."""

    async def one() -> float:
        seen: dict[str, int] = {}
        for i in range(min(n, 2000)):
            await _calibration_step(i, seen)
        started = time.process_time()
        for i in range(n):
            await _calibration_step(i, seen)
        return (time.process_time() - started) / n * 1e6

    return min(asyncio.run(one()) for _ in range(repeats))


# -- the orchestrator ------------------------------------------------------------------


def read_parts(out: Path) -> list[int]:
    """Ir of each dump ``out.1``, ``out.2``, … (the ``getppid`` markers'), in order of their part numbers."""
    parts: list[tuple[int, int]] = []
    for path in out.parent.glob(out.name + ".*"):
        part = total = None
        trigger = ""
        with path.open(errors="replace") as lines:
            for line in lines:
                if line.startswith("part:"):
                    part = int(line.split(":", 1)[1])
                elif line.startswith("desc: Trigger:"):
                    trigger = line.split(":", 2)[2].strip()
                elif line.startswith(("summary:", "totals:")):
                    total = int(line.split(":", 1)[1].split()[0])
                    break  # the header's summary: the rest is the profile
        if trigger != "--dump-before=getppid" or part is None or total is None:
            raise RuntimeError(
                f"{path.name}: not a marker's dump (trigger {trigger!r}, part {part}, Ir {total})"
            )
        parts.append((part, total))
    return [ir for _, ir in sorted(parts)]


def per_request(parts: list[int], n1: int, n2: int) -> dict[str, float]:
    """The difference method over the marker dumps (instrumentation on, N1 window, N2 window)."""
    if len(parts) != 3:
        raise RuntimeError(f"expected 3 marker dumps, found {len(parts)}: something else called getppid?")
    _, ir1, ir2 = parts
    per = (ir2 - ir1) / (n2 - n1)
    if not (math.isfinite(per) and per > 0):
        raise RuntimeError(f"instructions per request not positive: Ir(N1)={ir1}, Ir(N2)={ir2}")
    return {
        "ir": per,
        "ir_n1": ir1,
        "ir_n2": ir2,
        # What a window costs once, over its requests (tasks, gather): small, and cancelled out.
        "window_overhead": ir1 - n1 * per,
        # Each window's plain mean; close to ``ir`` when the window's fixed cost is small.
        "mean_n1": ir1 / n1,
        "mean_n2": ir2 / n2,
    }


def windows(name: str, sizes: dict[str, int]) -> tuple[int, int, int]:
    """(warm-up, N1, N2) for ``name``: the section's sizes scaled, in whole multiples of the concurrency."""
    scale = IR_VARIANTS[name].scale
    step = CONCURRENCY if IR_VARIANTS[name].kind in ("client", "route") else 1

    def sized(key: str) -> int:
        return max(step, round(sizes[key] * scale / step) * step)

    n1, n2 = sized("ir_n1"), sized("ir_n2")
    return sized("ir_warmup"), n1, max(n2, n1 + step)


def measure_one(name: str, base: str, sizes: dict[str, int], workdir: Path) -> dict[str, Any]:
    """One row in its own process under callgrind; its instructions per request (or refusal, or step)."""
    binary = valgrind()
    if binary is None:
        raise RuntimeError(f"valgrind not installed: {INSTALL_HINT}")
    warmup, n1, n2 = windows(name, sizes)
    out = workdir / f"callgrind.{name}"
    cmd = [
        binary, "--tool=callgrind", "--instr-atstart=no", "--dump-before=getppid", "--fair-sched=yes",
        f"--callgrind-out-file={out}", f"--vgdb-prefix={workdir}/vgdb-{name}",
        sys.executable, "-m", "benchmarks.ir", "workload", name, base, str(CONCURRENCY), str(warmup),
        str(n1), str(n2),
    ]  # fmt: skip
    env = {**os.environ, "BENCH_IR_VGDB_PREFIX": f"{workdir}/vgdb-{name}", "PYTHONHASHSEED": "0"}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False, env=env)  # noqa: S603
    if proc.returncode != 0:
        # Valgrind's own lines (``==PID== ...``) left out: the traceback is what tells.
        python = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("=="))
        raise RuntimeError(f"{name} under callgrind failed ({proc.returncode}): {python[-3000:]}")
    checked = json.loads(proc.stdout.strip().splitlines()[-1])
    row: dict[str, Any] = {
        **per_request(read_parts(out), n1, n2),
        "warmup": warmup,
        "n1": n1,
        "n2": n2,
        "concurrency": CONCURRENCY if IR_VARIANTS[name].kind in ("client", "route") else 1,
        "seconds": time.monotonic() - started,
        **checked,
    }
    for path in [out, *workdir.glob(out.name + ".*")]:  # not another row's, whose name starts alike
        path.unlink(missing_ok=True)
    return row


#: Rough instructions per call, to start the longest rows first.
_COST = {"client": 5e5, "refusal": 1.5e5, "route": 1.5e6, "calibration": 1e4}


def _cost(name: str, sizes: dict[str, int]) -> float:
    _, n1, n2 = windows(name, sizes)
    return _COST[IR_VARIANTS[name].kind] * (n1 + n2)


def _native_calibration() -> float:
    """The calibration workload natively on the client core: CPU µs per step, best of seven runs."""
    calib = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks.ir", "calibrate", str(CALIBRATION_STEPS)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, preexec_fn=pin_client,
    )  # fmt: skip
    if calib.returncode != 0:
        raise RuntimeError(f"calibration failed: {calib.stderr[-2000:]}")
    return float(json.loads(calib.stdout.strip().splitlines()[-1])["us"])


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-ir-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure(base: str, kind: str, sizes: dict[str, int], names: list[str] | None = None) -> dict[str, Any]:
    """Every row (or ``names``), two at a time (the counts do not depend on the machine's load)."""
    out: dict[str, Any] = {
        "upstream": kind,
        "concurrency": CONCURRENCY,
        "warmup": sizes["ir_warmup"],
        "n1": sizes["ir_n1"],
        "n2": sizes["ir_n2"],
    }
    if valgrind() is None:
        out["skipped"] = f"valgrind not installed: {INSTALL_HINT}"
        print(f"  instructions: skipped, {out['skipped']}", flush=True)
        return out
    version = subprocess.run([str(valgrind()), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    out["valgrind"] = version.stdout.strip().removeprefix("valgrind-")
    names = names or list(IR_VARIANTS)
    if "calibration" in names:
        out["calibration_us"] = _native_calibration()  # before the callgrind processes take the cores
    rows: dict[str, Any] = {}
    started = time.monotonic()
    # The longest first, so that the two at a time finish together.
    order = sorted(names, key=lambda name: -_cost(name, sizes))
    with _workdir() as workdir, ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = {pool.submit(measure_one, name, base, sizes, workdir): name for name in order}
        for future in as_completed(futures):
            name = futures[future]
            try:
                rows[name] = row = future.result()
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                # One row failing costs that row, not the others' minutes: it is shown as failed.
                rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[-600:]}"}
                print(f"  instructions {name}: failed, {rows[name]['error'][-300:]}", flush=True)
                continue
            print(
                f"  instructions {name}: {row['ir']:,.0f} per call (N1 {row['n1']:,}, N2 {row['n2']:,}, "
                f"{row['seconds']:.0f} s)",
                flush=True,
            )
    rows = {name: rows[name] for name in names}
    out["variants"] = rows
    out["seconds"] = time.monotonic() - started
    if "calibration_us" in out:  # and after: the less disturbed of the two
        out["calibration_us"] = min(out["calibration_us"], _native_calibration())
    if "ir" in rows.get("calibration", {}) and "calibration_us" in out:
        out["ir_per_us"] = rows["calibration"]["ir"] / out["calibration_us"]
    return out


def main() -> None:
    if sys.argv[1] == "calibrate":
        print(json.dumps({"us": calibrate(int(sys.argv[2]))}))
        return
    name, base = sys.argv[2], sys.argv[3]
    concurrency, warmup, n1, n2 = (int(x) for x in sys.argv[4:8])
    print(json.dumps(workload(name, base, concurrency=concurrency, warmup=warmup, n1=n1, n2=n2)))


if __name__ == "__main__":
    main()
