"""Cache and contracts: the cost of a validated answer, and of a cache hit, a miss and a revalidation.

``python -m benchmarks.cache_contracts serve PORT`` is the upstream: a minimal keep-alive
server answering a price series of 200 candles with ``Cache-Control`` and an ETag (304 to
a matching ``If-None-Match``), counting the requests it answers per path.
``python -m benchmarks.cache_contracts measure BASE C N BLOCK [VARIANT ...]`` is one run of
every variant (or of those named: to profile one, under ``python -m cProfile``), side by
side in one process, in blocks of ``BLOCK`` calls taken in turn; it prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from benchmarks.upstream import free_port, pin_server

if TYPE_CHECKING:
    from app.clients import BaseServiceClient

ROOT = Path(__file__).resolve().parent.parent

#: Candles in the series every answer carries (about 21 KB of JSON).
CANDLES = 200
#: ``max-age`` of the answers under ``/prices/``; ``/reval/`` answers have ``max-age=0``.
MAX_AGE_SECONDS = 3600
ETAG = b'"prices-v1"'
#: Warm-up calls per variant before anything is measured (as ``benchmarks.worker``).
WARMUP = 1000


def price_series(candles: int = CANDLES) -> dict[str, Any]:
    """A realistic answer of an analysis engine: one symbol's 1-minute candles, oldest first."""
    rows = []
    price = 1.08512
    for i in range(candles):
        drift = ((i * 7919) % 23 - 11) * 0.00003
        high, low = price + 0.00061 + abs(drift), price - 0.00044 - abs(drift)
        rows.append(
            {
                "timestamp": f"2026-01-02T{i // 60:02d}:{i % 60:02d}:00Z",
                "open": round(price, 5),
                "high": round(high, 5),
                "low": round(low, 5),
                "close": round(price + drift, 5),
                "volume": float(1200 + (i * 37) % 500),
            }
        )
        price += drift
    return {"symbol": "EURUSD", "timeframe": "1m", "candles": rows}


PRICES = json.dumps(price_series(), separators=(",", ":")).encode()


class BenchCandle(BaseModel):
    """One OHLC candle, strictly typed (the fields of ``app.clients.Candle``)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    timestamp: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class BenchPriceSeries(BaseModel):
    """Candles for one symbol and timeframe (the fields of ``app.clients.PriceSeries``), strictly typed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    symbol: str
    timeframe: str
    candles: list[BenchCandle]


def contract() -> tuple[type[BaseModel], str]:
    """The pydantic ``PriceSeries`` the answers are validated against, and where it comes from.

    The framework's own when it is a pydantic model that takes this payload
    (``app.clients.contracts``, else ``app.clients``); otherwise this module's strict
    equivalent, and the reason.
    """
    data = json.loads(PRICES)
    why = "app.clients has no pydantic PriceSeries"
    for module in ("app.clients.contracts", "app.clients"):
        try:
            found = getattr(__import__(module, fromlist=["PriceSeries"]), "PriceSeries", None)
        except ImportError:
            continue
        if isinstance(found, type) and issubclass(found, BaseModel):
            try:
                found.model_validate(data)
            except ValidationError as exc:
                why = f"{module}.PriceSeries does not take this payload ({exc.error_count()} problems)"
                continue
            return found, f"{module}.PriceSeries"
    return BenchPriceSeries, f"benchmarks.cache_contracts.BenchPriceSeries (strict; {why})"


# -- the upstream ------------------------------------------------------------------


def _response(status: bytes, cache_control: bytes, body: bytes | None) -> bytes:
    lines = [b"HTTP/1.1 " + status, b"Cache-Control: " + cache_control, b"ETag: " + ETAG]
    if body is not None:  # a 304 has none, and no Content-Length of its own
        lines += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


#: (200, 304) per path prefix: fresh for an hour, or stale at once (every use revalidates).
_ANSWERS = {
    b"/prices/": (
        _response(b"200 OK", b"max-age=%d" % MAX_AGE_SECONDS, PRICES),
        _response(b"304 Not Modified", b"max-age=%d" % MAX_AGE_SECONDS, None),
    ),
    b"/reval/": (
        _response(b"200 OK", b"max-age=0", PRICES),
        _response(b"304 Not Modified", b"max-age=0", None),
    ),
}
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"

#: Requests answered per path (the query left out) and status: ``{"/prices/hit": {"200": 1}}``.
COUNTS: dict[str, dict[str, int]] = {}


def _not_modified(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"if-none-match":
            return ETAG in value or value.strip() == b"*"
    return False


class Upstream(asyncio.Protocol):
    """Answers GETs by path prefix; ``/stats`` gives ``COUNTS`` (itself not counted)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].split(b"?", 1)[0]
            self.transport.write(self._answer(head, path))  # type: ignore[attr-defined]

    @staticmethod
    def _answer(head: bytes, path: bytes) -> bytes:
        if path == b"/stats":
            body = json.dumps(COUNTS).encode()
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: keep-alive\r\n\r\n"
                + body
            )
        for prefix, (ok, not_modified) in _ANSWERS.items():
            if path.startswith(prefix):
                status = "304" if _not_modified(head) else "200"
                row = COUNTS.setdefault(path.decode(), {})
                row[status] = row.get(status, 0) + 1
                return not_modified if status == "304" else ok
        return _NOT_FOUND


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def serve(port: int) -> None:
    """Run the upstream on 127.0.0.1:``port`` (uvloop when installed) until terminated."""
    try:
        import uvloop  # noqa: PLC0415

        uvloop.run(_serve(port))
    except ImportError:
        asyncio.run(_serve(port))
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def upstream_server() -> Iterator[str]:
    """The upstream in its own process on the server core; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks.cache_contracts", "serve", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        preexec_fn=pin_server,  # noqa: PLW1509 - one syscall before exec
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cache-and-contracts upstream exited with {proc.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/stats", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("cache-and-contracts upstream did not start")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(5)


# -- the variants ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CacheVariant:
    """One row: its label, its endpoint, the client's config, whether calls give a model, and their keys."""

    label: str
    path: str
    config: dict[str, Any]
    model: bool = False
    #: ``same``: one URL; ``each-call``: a new query (a new cache key) every call;
    #: ``per-caller``: one per concurrent caller, so no two callers share a fetch.
    keys: Literal["same", "each-call", "per-caller"] = "same"


CACHE_VARIANTS: dict[str, CacheVariant] = {
    "plain": CacheVariant("plain GET: cache off, no model (baseline)", "/prices/plain", {}),
    "strict": CacheVariant(
        "`response_model=PriceSeries`, `response_validation=\"strict\"`", "/prices/strict",
        {"response_validation": "strict"}, model=True,
    ),
    "off": CacheVariant(
        "`response_model=PriceSeries`, `response_validation=\"off\"`", "/prices/off",
        {"response_validation": "off"}, model=True,
    ),
    "hit": CacheVariant(
        "cache on: fresh hit (one key, `max-age=3600`)", "/prices/hit", {"cache_enabled": True}
    ),
    "miss": CacheVariant(
        "cache on: miss (a new query each call: fetch + store)", "/prices/miss", {"cache_enabled": True},
        keys="each-call",
    ),
    "revalidate": CacheVariant(
        "cache on: revalidation (`max-age=0` + ETag: conditional GET, 304)", "/reval/prices",
        {"cache_enabled": True}, keys="per-caller",
    ),
}  # fmt: skip

Call = Callable[[], Awaitable[Any]]


def _client(name: str, base: str) -> BaseServiceClient:
    """Variant ``name``'s client: variant 3a's (every policy, metrics, no call log) plus its own settings."""
    from app.clients import BaseServiceClient, ClientConfig  # noqa: PLC0415

    return BaseServiceClient(
        ClientConfig(
            base_url=base,
            service_name=f"bench-{name}",  # its own metrics and its own cache
            timeout_seconds=10,
            enable_metrics=True,
            enable_request_logging=False,
            bulkhead_max_concurrent=256,
            **CACHE_VARIANTS[name].config,
        )
    )


def _callers(name: str, client: BaseServiceClient, model: Any, concurrency: int) -> list[Call]:
    """One call function per concurrent caller."""
    spec = CACHE_VARIANTS[name]
    options: dict[str, Any] = {"response_model": model} if spec.model else {}
    path = spec.path
    if spec.keys == "each-call":
        counter = itertools.count()

        async def each_call() -> Any:
            return await client.get(path, params={"n": next(counter)}, **options)

        return [each_call] * concurrency
    if spec.keys == "per-caller":

        def caller(i: int) -> Call:
            params = {"caller": i}

            async def call() -> Any:
                return await client.get(path, params=params, **options)

            return call

        return [caller(i) for i in range(concurrency)]

    async def same() -> Any:
        return await client.get(path, **options)

    return [same] * concurrency


async def drive(calls: list[Call], total: int) -> None:
    """``total`` calls, ``len(calls)`` at a time, each caller with its own call function."""
    remaining = total

    async def worker(call: Call) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(worker(call) for call in calls))


async def _upstream_counts(base: str) -> dict[str, dict[str, int]]:
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession() as session, session.get(f"{base}/stats") as resp:
        return dict(await resp.json())


def _answered(counts: dict[str, dict[str, int]], path: str, status: str | None = None) -> int:
    row = counts.get(path, {})
    return row.get(status, 0) if status else sum(row.values())


async def measure(
    base: str, *, concurrency: int, total: int, block: int, only: list[str] | None = None
) -> dict[str, Any]:
    """Every variant in this process, in blocks of ``block`` calls taken in turn; figures per call.

    Side by side, block after block (the order turned each cycle), so what the machine's
    other work does falls on every variant alike. Upstream requests are counted at the
    upstream, per variant (each has its own path), over the measured calls only.
    """
    from app.observability.logging import configure_logging, stop_logging  # noqa: PLC0415

    if total < concurrency:
        raise ValueError("total must be at least the concurrency (every caller warms up)")
    model, model_source = contract()
    log_file = open(tempfile.mktemp(prefix="bench-cache-", suffix=".log"), "w")  # noqa: S306, SIM115, ASYNC230
    configure_logging("WARNING", json=True, stream=log_file)  # variant 3a: no call log
    names = only or list(CACHE_VARIANTS)
    clients = {name: _client(name, base) for name in names}
    calls = {name: _callers(name, clients[name], model, concurrency) for name in names}
    returns: dict[str, str] = {}
    try:
        for name in names:
            returns[name] = type(await calls[name][0]()).__name__
            await drive(calls[name], min(WARMUP, total))
        before = await _upstream_counts(base)
        results_before = {name: dict(_results(clients[name])) for name in names}
        wall = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        done = dict.fromkeys(names, 0)
        for cycle in range(max(1, total // block)):
            turn = cycle % len(names)
            for name in names[turn:] + names[:turn]:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                await drive(calls[name], block)
                wall[name] += time.perf_counter() - wall0
                cpu[name] += time.process_time() - cpu0
                done[name] += block
        after = await _upstream_counts(base)
        out: dict[str, Any] = {}
        for name in names:
            path, n = CACHE_VARIANTS[name].path, done[name]
            results = _results(clients[name])
            lookups = {k: v - results_before[name].get(k, 0) for k, v in results.items()}
            out[name] = {
                "calls": n,
                "req_s": n / wall[name],
                "cpu_us": cpu[name] / n * 1e6,
                "upstream_per_call": (_answered(after, path) - _answered(before, path)) / n,
                "not_modified_per_call": (_answered(after, path, "304") - _answered(before, path, "304")) / n,
                "cache": {k: v for k, v in sorted(lookups.items()) if v},
                "returns": returns[name],
            }
    finally:
        for client in clients.values():
            await client.close()
        stop_logging()
        log_file.close()
    return {
        "concurrency": concurrency,
        "calls": total,
        "block": block,
        "model": model_source,
        "payload_bytes": len(PRICES),
        "candles": CANDLES,
        "variants": out,
    }


def _results(client: BaseServiceClient) -> dict[str, int]:
    """The cache's lookups and stores so far (``hit``, ``miss``, ``revalidated``, ``stored``, …)."""
    cache = client.policies.cache
    return {} if cache is None else cache.results


def main() -> None:
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
        return
    base, concurrency, total, block = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    only = [name for name in sys.argv[6:] if name in CACHE_VARIANTS] or None
    result = asyncio.run(measure(base, concurrency=concurrency, total=total, block=block, only=only))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
