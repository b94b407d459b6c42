"""Writes BENCHMARKS.md and its chart from one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.cache_contracts import CACHE_VARIANTS
from benchmarks.ir import IR_VARIANTS
from benchmarks.shared_state import SHARED_VARIANTS
from benchmarks.variants import VARIANTS


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, required, measured, met) for P1a, P1b and P2 to P6."""
    s = r["small"]
    base = s["aiohttp@64"]["req_s"]
    p1a = _ratio(s["framework-nolog@64"]["req_s"], base)
    p1b = _ratio(s["framework@64"]["req_s"], base)
    p2_row = "framework-lean" if "framework-lean@64" in s else "framework-runtime"
    p2 = _ratio(s[f"{p2_row}@64"]["req_s"], base)
    p3_retry = _ratio(s["framework@64"]["req_s"], s["aiohttp-retry@64"]["req_s"])
    p3_ten = _ratio(s["framework@64"]["req_s"], s["tenacity@64"]["req_s"])
    p4 = _ratio(r["gateway"]["framework"], r["gateway"]["raw"])
    micro = r["micro"]
    inflight, growth, lean = r["inflight"], r["growth"], r.get("inflight_lean")
    # Each process's peak over its own start: the client's calls against raw aiohttp's.
    p6 = (
        _ratio(
            inflight["peak_rss_mb"] - inflight["rss_before_mb"],
            r["inflight_raw"]["peak_rss_mb"] - r["inflight_raw"]["rss_before_mb"],
        )
        - 1
    )
    return [
        ("P1a: variant 3a / variant 1 (c=64, 100 B)", ">= 0.95x", f"{p1a:.2f}x", p1a >= 0.95),
        ("P1b: variant 3 / variant 1", ">= 0.85x", f"{p1b:.2f}x", p1b >= 0.85),
        (f"P2: variant {VARIANTS[p2_row][0].split('.')[0]} / variant 1", ">= 1.35x", f"{p2:.2f}x", p2 >= 1.35),
        ("P3: variant 3 / aiohttp-retry", ">= 1.0x", f"{p3_retry:.2f}x", p3_retry >= 1.0),
        ("P3: variant 3 / aiohttp + tenacity", ">= 1.4x", f"{p3_ten:.2f}x", p3_ten >= 1.4),
        ("P4: gateway route (a) / route (b)", ">= 0.90x", f"{p4:.2f}x", p4 >= 0.90),
        ("P5: open-breaker rejection", "<= 5 us", f"{micro['open_breaker_rejection_us']:.1f} us", micro["open_breaker_rejection_us"] <= 5),
        ("P5: full-bulkhead rejection", "<= 5 us", f"{micro['bulkhead_full_rejection_us']:.1f} us", micro["bulkhead_full_rejection_us"] <= 5),
        (f"P6: {inflight['calls']:,} calls in flight, peak RSS over raw aiohttp's", "<= +10%", f"{p6:+.0%}", p6 <= 0.10),
        *(
            [("P6: the same on the lean transport, peak RSS", "<= 100 MB", f"{lean['peak_rss_mb']:.0f} MB", lean["peak_rss_mb"] <= 100)]
            if lean is not None
            else []
        ),
        (f"P6: RSS growth over {growth['calls']:,} calls after warm-up", "<= 10 MB", f"{growth['growth_mb']:+.1f} MB", growth["growth_mb"] <= 10),
    ]  # fmt: skip


def _lean_inflight(r: dict[str, Any]) -> str:
    """The in-flight row of the client on the lean transport, when the run measured it."""
    lean = r.get("inflight_lean")
    if lean is None:
        return ""
    return (
        f"\n| the same through the client on the lean transport | peak RSS {lean['peak_rss_mb']:.0f} MB "
        f"(from {lean['rss_before_mb']:.0f} MB), {lean['failures']} failures |"
    )


def _table(rows: dict[str, Any], concurrency: int, variants: list[str], baseline: str = "aiohttp") -> str:
    base = rows[f"{baseline}@{concurrency}"]["req_s"]
    lines = ["| variant | req/s | vs baseline | CPU µs/req | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for variant in variants:
        row = rows.get(f"{variant}@{concurrency}")
        if row is None:
            continue
        lines.append(
            f"| {VARIANTS[variant][0]} | {row['req_s']:,.0f} | {row['req_s'] / base:.2f}x | "
            f"{row['cpu_us']:.1f} | {row['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _fleet(r: dict[str, Any]) -> str:
    """The many-instances section: three instances, one slow, against one instance."""
    f = r.get("fleet")
    if f is None:
        return ""
    single, three = f["single"], f["three"]
    fast, slow = f["delays_ms"][0], f["delays_ms"][-1]
    rows = []
    for label, row in (
        ("one instance (`base_url`)", single),
        ("three instances, one slow (`instances=`)", three),
    ):
        shares = (
            " / ".join(f"{share:.3f}" for share in row["shares"]) if len(row["shares"]) > 1 else "1 / - / -"
        )
        rows.append(
            f"| {label} | {row['req_s']:,.0f} | {_ratio(row['req_s'], single['req_s']):.2f}x | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {_ratio(row['p99_ms'], single['p99_ms']):.2f}x | "
            f"{row['cpu_us']:.1f} | {shares} |"
        )
    table = "\n".join(rows)
    # Round robin: every instance a third of the calls, so the mean latency is the delays' mean.
    round_robin = _ratio(fast, sum(f["delays_ms"]) / len(f["delays_ms"]))
    return f"""
## Many instances: three, one slow

Variant 3's client (every policy, metrics, the call log; asyncio's loop) over three
instances balanced per attempt (P2C over peak-EWMA), against the same client on one
instance, in the same run, rounds interleaved, medians; concurrency {f["concurrency"]},
{f["calls"]:,} calls per run after 1,000 of warm-up, every call's latency taken. Every
instance is the minimal asyncio server (nginx cannot hold an answer), holding each
answer {fast:g} ms; the third holds it {slow:g} ms. The single-instance client gets a
{fast:g} ms one, so the ideal ratio is 1.00x (the slow one never picked) and round robin
would give about {round_robin:.2f}x. Shares are of the measured calls, from the balancer's
own count.

| client | req/s | vs one | p50 ms | p99 ms | p99 vs one | CPU µs/req | share fast / fast / slow |
|---|---:|---:|---:|---:|---:|---:|---|
{table}
"""


def _shared_rows(variants: dict[str, Any], table: str, baseline: str, limiter: bool) -> str:
    """One table of the shared-state section: each variant against ``baseline``, the local one."""
    base = variants[baseline]
    rows = []
    for name, spec in SHARED_VARIANTS.items():
        row = variants.get(name)
        if spec.table != table or row is None:
            continue
        cells = [
            spec.label,
            f"{row['req_s']:,.0f}",
            f"{_ratio(row['req_s'], base['req_s']):.2f}x",
            f"{row['cpu_us']:.1f}",
            f"{row['cpu_us'] - base['cpu_us']:+.1f}" if name != baseline else "-",
            f"{row['round_trips_per_call']:.4f}",
            f"{row['redis_cpu_us']:.1f}",
        ]
        if limiter:
            batch = row["calls_per_round_trip"]
            cells.insert(6, f"{batch:.1f}" if batch else "-")
            # Calls the local fallback answered instead of Redis: each should be 0.
            cells.append(f"{row['fallbacks']:,}" if spec.redis else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def shared_state_report(r: dict[str, Any]) -> str:
    """The shared-state section: a global limit (one round trip per call, and batched) and a shared breaker, against local."""
    sh = r.get("shared_state")
    if sh is None:
        return ""
    title = "\n## Shared state: a global limit and a shared breaker, against local\n"
    if "skipped" in sh:
        return f"{title}\n**Skipped:** {sh['skipped']}.\n"
    alone = sh.get("alone")
    # Spliced into a report of another run: say where these figures come from.
    provenance = (
        f"\n*Measured alone* (`{alone['command']}`) on {alone['machine']}; the rest of this "
        "report may come from another run.\n"
        if alone
        else ""
    )
    v = sh["variants"]
    limit = _shared_rows(v, "limit", "limit-local", limiter=True)
    breaker = _shared_rows(v, "breaker", "breaker-local", limiter=False)
    local, shared = v["breaker-local"], v["breaker-shared"]
    single, batched = v["limit-global-single"], v["limit-global"]
    rounds = sh["rounds"]
    return f"""{title}{provenance}
Variant 3a's client (every policy, metrics, no call log; asyncio's loop) at concurrency
{sh["concurrency"]}, against {sh["upstream"]}.
Each table's clients run side by side in one process, in blocks of {sh["block"]:,} calls taken in
turn (the order turned each cycle), {sh["calls"]:,} calls each after 1,000 of warm-up, so what
the machine's other work does falls on every row alike; medians of {rounds} such run{"s" if rounds > 1 else ""}. One
redis-server {sh["redis"]} on 127.0.0.1 (no persistence), on the upstream's core; one replica
with one Redis pool, the deployment's shared-state defaults except each Redis call's
deadline: {sh["redis_deadline_s"] * 1000:g} ms (the socket timeout), not 20 ms, so that every call measured reaches
Redis (at 20 ms, a reply queued behind 64 calls' work on a loaded loop can miss it, and
the call is answered locally: no round trip to measure). The limit is 1,000,000/s with
a burst of 1,000,000, so it never binds: each call pays for the decision, never waits
for a slot. Every client has a 10 s total deadline (the global limiter's longest wait
is the call's remaining time).

- *CPU µs/req* is the process's CPU time over each row's blocks, *Δ* against the local
  row. Nothing here counts instructions (the harness has no counter of them): on this
  shared 2-core machine separate runs move by 0.2x or more; side by side the rows move
  together, and a Δ below about a tenth of the local row is still noise.
- *Redis round trips/call* are the requests Redis read during each row's blocks (`INFO`
  `total_reads_processed`, the harness's own `INFO` left out) over its calls; they
  include the replica's heartbeat (one `EVAL` every 1.7 s), which is on no call's path.
  *Redis CPU µs/call* is redis-server's CPU time (user + system) over the same.
- *One round trip per call* is the shipped limiter with its batching taken out: each
  call sends its own one-call `EVALSHA` through the limiter's own send, up to 30 at once
  (the state's pool holds 32). *Batched* is the limiter as shipped: the calls that
  arrive while a round trip is out go together in the next one.
- *Fallbacks* are calls the local fallback answered instead of Redis, over all runs.

### (a) Rate limit: local against global

| client | req/s | vs local | CPU µs/req | Δ CPU µs/req | Redis round trips/call | calls/round trip | Redis CPU µs/call | fallbacks |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{limit}

A global limit call costs {single["cpu_us"] - v["limit-local"]["cpu_us"]:+.1f} µs of client CPU one round trip per call,
and {batched["cpu_us"] - v["limit-local"]["cpu_us"]:+.1f} µs batched ({batched["calls_per_round_trip"]:.1f} calls per `EVALSHA`).

### (b) Breaker, closed: local against shared

| client | req/s | vs local | CPU µs/req | Δ CPU µs/req | Redis round trips/call | Redis CPU µs/call |
|---|---:|---:|---:|---:|---:|---:|
{breaker}

The shared breaker's closed hot path: {shared["round_trips_per_call"]:.4f} Redis round trips per call (the
heartbeat's), {shared["cpu_us"] - local["cpu_us"]:+.1f} µs of client CPU per call ({_ratio(shared["cpu_us"], local["cpu_us"]):.2f}x the local breaker's).
"""


def cache_contracts_report(r: dict[str, Any]) -> str:
    """The cache-and-contracts section: a validated call against a plain one, and a cache hit, miss and revalidation."""
    cc = r.get("cache_contracts")
    if cc is None:
        return ""
    alone = cc.get("alone")
    provenance = (
        f"\n*Measured alone* (`{alone['command']}`) on {alone['machine']}; the rest of this "
        "report may come from another run.\n"
        if alone
        else ""
    )
    v = cc["variants"]
    base = v["plain"]
    rows = []
    for name, spec in CACHE_VARIANTS.items():
        row = v.get(name)
        if row is None:
            continue
        cells = [
            spec.label,
            f"{row['req_s']:,.0f}",
            f"{_ratio(row['req_s'], base['req_s']):.2f}x",
            f"{row['cpu_us']:.0f}",
            f"{_ratio(row['cpu_us'], base['cpu_us']):.2f}x",
            f"{row['cpu_us'] - base['cpu_us']:+.0f}" if name != "plain" else "-",
            f"{row['upstream_per_call']:.3f}",
            f"{row['not_modified_per_call']:.3f}",
            f"`{row['returns']}`",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    strict, off, hit = v["strict"], v["off"], v["hit"]
    miss, reval = v["miss"], v["revalidate"]
    rounds = cc["rounds"]
    return f"""
## Cache and contracts: a validated call, and a cache hit, miss and revalidation
{provenance}
Variant 3a's client (every policy, metrics, no call log; asyncio's loop) at concurrency
{cc["concurrency"]}, one client per row (each its own cache), against the section's own upstream
(a minimal keep-alive server in its own process, on the upstream's core, counting the
requests it answers per path) answering a price series of {cc["candles"]} candles
({cc["payload_bytes"]:,} bytes of JSON) with an ETag and `Cache-Control: max-age=3600` (`max-age=0` for
the revalidation row), and a 304 to a matching `If-None-Match`. All rows side by side in one
process, in blocks of {cc["block"]:,} calls taken in turn (the order turned each cycle),
{cc["calls"]:,} calls each after 1,000 of warm-up; medians of {rounds} such run{"s" if rounds > 1 else ""}. The model is
{cc["model"]}. Cache rows use the memory store (64 MB, its default).

- *CPU µs/call* is the process's CPU time over each row's blocks over its calls (the
  upstream's is not in it); *Δ* is against the plain row. Side by side the rows move
  together; separate runs on this shared machine move by 0.2x or more.
- *Upstream requests/call* and *304s/call* are counted by the upstream, per row (each has
  its own path), over the measured calls: 0 for a fresh hit, 1 for a miss, one 304 per
  call for a revalidation (each caller has its own key, so no two share a fetch).
- *Miss*: a new query parameter every call, so each is a lookup, a fetch and a store (and,
  once 64 MB is full, an eviction). A hit still decodes the stored bytes (each caller gets
  its own copy).

| variant | req/s | vs plain | CPU µs/call | CPU vs plain | Δ CPU µs/call | upstream requests/call | 304s/call | returns |
|---|---:|---:|---:|---:|---:|---:|---:|---|
{table}

Validation (`strict`) costs {strict["cpu_us"] - base["cpu_us"]:+.0f} µs of CPU per call ({_ratio(strict["cpu_us"], base["cpu_us"]):.2f}x a plain call's); with
`response_validation="off"` the same call costs {off["cpu_us"] - base["cpu_us"]:+.0f} µs (the model built unchecked).
A fresh hit costs {hit["cpu_us"]:.0f} µs, {_ratio(hit["cpu_us"], base["cpu_us"]):.2f}x a plain call's CPU ({_ratio(hit["req_s"], base["req_s"]):.2f}x its req/s); a miss
{miss["cpu_us"] - base["cpu_us"]:+.0f} µs and a revalidation {reval["cpu_us"] - base["cpu_us"]:+.0f} µs over a plain call.
"""


#: Issue 16's targets on instruction ratios (c=64, raw aiohttp on asyncio's loop the baseline):
#: row -> (target, what the ratio is, the least it may be). A ratio is a throughput
#: equivalent, fewer instructions above 1: the baseline's count over the row's.
IR_RATIO_TARGETS: dict[str, tuple[str, str, str, float]] = {
    "framework-nolog": ("P1a", "aiohttp", "raw aiohttp / 3a", 0.92),
    "framework": ("P1b", "aiohttp", "raw aiohttp / 3", 0.87),
    # P2 is the lean transport's target (issue 16's moonshot): variant 4 on it.
    "framework-lean": ("P2", "aiohttp", "raw aiohttp on asyncio / 4b", 1.5),
}
#: P3: variant 3 against each of these, ``Ir(other) / Ir(variant 3)`` at least this.
IR_P3_TARGETS = {"aiohttp-retry": 1.0, "tenacity": 1.4}
#: P4: the route through the container against the same route by hand.
IR_P4_TARGET = 0.95
#: P5: a refusal, in µs at the machine's rate of instructions per µs (the calibration's).
IR_P5_US = 3.0


def _k(ir: float) -> str:
    """An instruction count, in thousands (``609k``) or as is when small."""
    return f"{ir / 1000:,.0f}k" if ir >= 10_000 else f"{ir:,.0f}"


def instruction_targets(ins: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, required, measured, met) judged on instruction counts, for the rows measured."""
    v = ins.get("variants", {})
    ir = {name: row["ir"] for name, row in v.items() if "ir" in row}
    out = []
    for name, (target, base, what, least) in IR_RATIO_TARGETS.items():
        if name in ir and base in ir:
            ratio = ir[base] / ir[name]
            out.append((f"{target}: {what}", f">= {least:g}x", f"{ratio:.2f}x", ratio >= least))
    if "framework" in ir:
        for other, least in IR_P3_TARGETS.items():
            if other in ir:
                ratio = ir[other] / ir["framework"]
                label = IR_VARIANTS[other].label.split(". ", 1)[-1]
                out.append((f"P3: {label} / 3", f">= {least:g}x", f"{ratio:.2f}x", ratio >= least))
    if "route-framework" in ir and "route-raw" in ir:
        ratio = ir["route-raw"] / ir["route-framework"]
        out.append(
            (
                "P4: gateway route (b) / route (a)",
                f">= {IR_P4_TARGET:g}x",
                f"{ratio:.2f}x",
                ratio >= IR_P4_TARGET,
            )
        )
    rate = ins.get("ir_per_us")
    for name, what in (("refusal-breaker", "open-breaker"), ("refusal-bulkhead", "full-bulkhead")):
        if name in ir and rate:
            us = ir[name] / rate
            out.append(
                (
                    f"P5: {what} refusal, call log on",
                    f"<= {IR_P5_US:g} µs",
                    f"{_k(ir[name])} ≈ {us:.1f} µs",
                    us <= IR_P5_US,
                )
            )
    return out


def _ir_client_cells(name: str, count: float, ir: dict[str, float]) -> tuple[str, str, bool | None]:
    base = ir.get("aiohttp")
    ratio = f"{base / count:.2f}x" if base else "-"
    if name in IR_RATIO_TARGETS and base:
        target, _, _, least = IR_RATIO_TARGETS[name]
        return ratio, f"{target} >= {least:g}x", base / count >= least
    if name in IR_P3_TARGETS and "framework" in ir:
        least, p3 = IR_P3_TARGETS[name], count / ir["framework"]
        return ratio, f"P3: 3 at >= {least:g}x this: {p3:.2f}x", p3 >= least
    return ratio, "-", None


def _ir_cells(
    name: str, count: float, ir: dict[str, float], rate: float | None
) -> tuple[str, str, bool | None]:
    """A row's ratio, its target and whether it is met (None: no target of its own)."""
    kind = IR_VARIANTS[name].kind
    if kind == "client":
        return _ir_client_cells(name, count, ir)
    if kind == "route":
        base = ir.get("route-raw")
        ratio = f"{base / count:.2f}x (b)" if base else "-"
        if name == "route-framework" and base:
            return ratio, f"P4 >= {IR_P4_TARGET:g}x (b)", base / count >= IR_P4_TARGET
        return ratio, "-", None
    if not rate:
        return "-", "-", None
    return f"≈ {count / rate:.1f} µs", f"P5 <= {IR_P5_US:g} µs", count / rate <= IR_P5_US


def instructions_report(r: dict[str, Any]) -> str:
    """The instructions section: callgrind's counts per request for every row, and the targets on them."""
    ins = r.get("instructions")
    if ins is None:
        return ""
    title = "\n## Instructions per request (callgrind)\n"
    if "skipped" in ins:
        return f"{title}\n**Skipped:** {ins['skipped']}.\n"
    alone = ins.get("alone")
    provenance = (
        f"\n*Measured alone* (`{alone['command']}`) on {alone['machine']}; the rest of this "
        "report may come from another run.\n"
        if alone
        else ""
    )
    v = ins["variants"]
    ir = {name: row["ir"] for name, row in v.items() if "ir" in row}
    rows = []
    for name, spec in IR_VARIANTS.items():
        row = v.get(name)
        if row is None or spec.kind == "calibration":
            continue
        if "ir" not in row:
            error = " ".join(row["error"].replace("|", "/").split())[:200]
            rows.append(f"| {spec.label} | failed: {error} | - | - | | - |")
            continue
        ratio, goal, met = _ir_cells(name, row["ir"], ir, ins.get("ir_per_us"))
        verdict = "" if met is None else ("met" if met else "**missed**")
        rows.append(
            f"| {spec.label} | {_k(row['ir'])} | {ratio} | {goal} | {verdict} | "
            f"{row['n1']:,} / {row['n2']:,} at c={row['concurrency']} |"
        )
    table = "\n".join(rows)
    calibration = v.get("calibration")
    rate = ins.get("ir_per_us")
    rate_line = (
        f"P5's µs are instructions at this machine's rate for CPython code: {rate:,.0f} instructions "
        f"per µs, from a fixed pure-Python workload (`benchmarks.ir`'s calibration: calls, objects, "
        f"a dict, a string, a raise) that takes {calibration['ir']:,.0f} instructions per step under "
        f"callgrind and {ins['calibration_us']:.2f} µs natively (CPU time, best of seven, core 0)."
        if rate and calibration and "ir" in calibration
        else "No calibration row: P5 is given in instructions only."
    )
    breakdown = ""
    if {"route-framework", "route-nodi", "route-raw"} <= set(ir):
        a, nodi, b = ir["route-framework"], ir["route-nodi"], ir["route-raw"]
        head = (
            f"\nThe route through the container costs {_k(a - b)} instructions more than the hand-written one"
        )
        breakdown = (
            f"{head}: {_k(a - nodi)} of them per-request dependency injection (route (a) against the same "
            f"client taken from the container by hand), {_k(nodi - b)} the framework's client against raw aiohttp.\n"
            if a >= nodi
            else f"{head}, all of it the framework's client against raw aiohttp: dependency injection costs "
            f"nothing per request (route (a) is {_k(nodi - a)} under the same client taken from the container "
            f"by hand, at {_k(nodi - b)} over the hand-written route).\n"
        )
    target_rows = "\n".join(
        f"| {name} | {need} | {got} | {'met' if ok else '**missed**'} |"
        for name, need, got, ok in instruction_targets(ins)
    )
    return f"""{title}{provenance}
Instructions executed per request, counted by `valgrind --tool=callgrind` (valgrind
{ins.get("valgrind", "?")}): they do not depend on what else the machine does (two runs agree to
about 0.1%; up to about 1.5% for rows with the call log, whose flushes are armed by wall
time: see the notes), so the issue's targets are judged on these ratios; the
wall-clock figures stay as context. Each row runs in its own process under callgrind, against {ins["upstream"]}
in another process (not counted). The process starts, builds its variant and warms up
({ins["warmup"]:,} requests) with callgrind's instrumentation off, freezes the heap built so far
(`gc.freeze()`: a full collection then walks what requests left, not the modules), turns
instrumentation on (`vgdb ... instrumentation on`) and runs two windows of N1 and N2
requests at concurrency {ins["concurrency"]}, each ended by a marker at which callgrind dumps its count
(`--dump-before=getppid`). Per request: (Ir(N2) - Ir(N1)) / (N2 - N1), so warm-up,
start-up and each window's own set-up cancel out; every thread of the process counts.
*vs raw aiohttp* is raw aiohttp's count over the row's (a throughput equivalent: above 1
is fewer instructions). The gateway routes are `benchmarks.gateway_app`'s, in process:
the real `create_app` (middleware, lifespan, container) with the JSON call log on, called
by a minimal ASGI driver at concurrency {ins["concurrency"]}, no server (uvicorn's share is not in
these counts), the config file's watch off (it re-reads the file every second of wall
time, and under callgrind a second is a few hundred requests). Refusals run one at a
time with the JSON call log on, no upstream. {rate_line}

| row | instructions per call | ratio | target | | N1 / N2 |
|---|---:|---:|---|---|---|
{table}
{breakdown}
| target (instructions) | required | measured | |
|---|---|---|---|
{target_rows}
"""


def chart(r: dict[str, Any], path: Path) -> None:
    """A bar chart of req/s at concurrency 64 on the 100 B body."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [v for v in VARIANTS if f"{v}@64" in r["small"]]
    values = [r["small"][f"{v}@64"]["req_s"] for v in names]
    colours = ["#2f81f7" if v.startswith("framework") else "#8b949e" for v in names]
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    bars = ax.barh([VARIANTS[v][0] for v in names], values, color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median), concurrency 64, 100 B JSON")
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
    ax.set_title("Client throughput against nginx on loopback (higher is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(r: dict[str, Any], output: Path) -> None:
    """BENCHMARKS.md (and the chart beside it, in docs/ for the default output)."""
    chart_path = output.parent / "docs" / "benchmarks.png"
    chart_path.parent.mkdir(exist_ok=True)
    chart(r, chart_path)
    rel_chart = chart_path.relative_to(output.parent)
    variants = list(VARIANTS)
    m, v = r["machine"], r["versions"]
    target_rows = "\n".join(
        f"| {name} | {need} | {got} | {'met' if ok else '**missed**'} |" for name, need, got, ok in targets(r)
    )
    concurrency_1 = (
        f"\n### Concurrency 1, 100 B JSON\n\n{_table(r['small'], 1, variants)}\n"
        if "aiohttp@1" in r["small"]
        else ""
    )
    text = f"""# Benchmarks

Generated by `make bench{"-quick" if r["quick"] else ""}` (`python -m benchmarks.run`) in {r["seconds"]:.0f} s; do not edit by hand.
{"**This is a quick run (one round, small counts): it checks the harness, its figures are not the reference.**" if r["quick"] else ""}

- Machine: {m["cores"]} cores, {m["cpu"]}, Linux {m["kernel"]}.
- Upstream: {r["upstream"]}, in its own process, keep-alive, on 127.0.0.1.
- Versions: {", ".join(f"{k} {val}" for k, val in v.items())}.
- Method: each client variant runs in its own process (pinned to core 0; nginx and the
  load generator on core 1) after a warm-up of 1,000 requests: {"2,000" if r["quick"] else "20,000"} requests per run at
  concurrency 64, {"500" if r["quick"] else "5,000"} at concurrency 1 (httpx a tenth of each, it is that slow);
  rounds are interleaved across variants and the figures are medians
  ({3 if not r["quick"] else 1} rounds). CPU µs per request is the process's CPU time
  (all threads) over the requests. Every variant decodes the JSON.
- Variant 3 has every policy on (bulkhead, deadline, retry, breaker, attempt timeout),
  metrics on and the JSON call log on, written to a file in batches by the event loop;
  3a is the same without the call log. Variant 4 is variant 3 on the framework's
  default runtime (uvloop). 3b and 4b are variants 3 and 4 on the lean transport
  (`transport="lean"`).
- The wall-clock targets below keep their first thresholds as context; the issue's
  targets are judged on instruction counts (next section).

![throughput]({rel_chart})

## Targets

| target | required | measured | |
|---|---|---|---|
{target_rows}
{instructions_report(r)}
## Client variants

### Concurrency 64, 100 B JSON

{_table(r["small"], 64, variants)}
{concurrency_1}
### Concurrency 64, 10 KB JSON

{_table(r["large"], 64, [x for x in variants if f"{x}@64" in r["large"]])}
{_fleet(r)}{shared_state_report(r)}{cache_contracts_report(r)}
## Gateway (one uvicorn worker, load from another process at concurrency 64)

| route | req/s |
|---|---:|
| (a) framework client injected by the container | {r["gateway"]["framework"]:,.0f} |
| (b) the same route by hand, raw aiohttp, no DI | {r["gateway"]["raw"]:,.0f} |
| (for the breakdown) the framework's client without per-request DI | {r["gateway"]["framework-nodi"]:,.0f} |
| ratio (a) / (b) | {r["gateway"]["framework"] / r["gateway"]["raw"]:.2f}x |

## Micro-benchmarks (in process, no network)

| what | µs per call |
|---|---:|
| open-breaker rejection (through `client.get`, error raised and counted) | {r["micro"]["open_breaker_rejection_us"]:.2f} |
| full-bulkhead rejection (through `client.get`) | {r["micro"]["bulkhead_full_rejection_us"]:.2f} |
| pipeline per-call overhead, trivial transport | {r["micro"]["pipeline_overhead_us"]:.2f} |

## Memory

| what | result |
|---|---|
| {r["inflight"]["calls"]:,} calls in flight at once (the endpoint answers none until the calls stop coming, then all at once: the peak includes reading every answer) | peak RSS {r["inflight"]["peak_rss_mb"]:.0f} MB (from {r["inflight"]["rss_before_mb"]:.0f} MB), {r["inflight"]["failures"]} failures |
| the same with raw aiohttp, for comparison | peak RSS {r["inflight_raw"]["peak_rss_mb"]:.0f} MB (from {r["inflight_raw"]["rss_before_mb"]:.0f} MB), {r["inflight_raw"]["failures"]} failures |{_lean_inflight(r)}
| {r["growth"]["calls"]:,} calls, 64 at a time | RSS {r["growth"]["rss_after_warmup_mb"]:.1f} MB after warm-up, {r["growth"]["rss_at_end_mb"]:.1f} MB at the end ({r["growth"]["growth_mb"]:+.1f} MB) |
"""
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists() and not r["quick"]:
        text += "\n" + notes.read_text()
    output.write_text(text)
