"""Compressed answers: max_response_bytes bounds the body after decoding, whatever the coding or framing.

Every bomb here is a real compressed stream sent by a raw TCP server on 127.0.0.1; the
client must refuse it at the limit (ResponseDecodeError, not retried, the connection
dropped) without ever inflating it, and the memory test measures that in a subprocess.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from app.clients import ClientResponseError, ResponseDecodeError, ServerError
from app.clients.decoding import ACCEPT_ENCODING
from tests.support import bombs, rawtcp
from tests.support.upstream import Upstream, json

LIMIT = 10 * 1024 * 1024  # ClientConfig's default max_response_bytes
REPO = str(Path(__file__).resolve().parents[2])
CODINGS = [
    pytest.param("gzip", "gzip", id="gzip"),
    pytest.param("deflate", "deflate", id="deflate"),
    pytest.param("deflate", "raw-deflate", id="raw-deflate"),
    pytest.param(
        "br", "br", id="br", marks=pytest.mark.skipif(bombs.brotli is None, reason="no brotli module")
    ),
    pytest.param(
        "zstd", "zstd", id="zstd", marks=pytest.mark.skipif(bombs.zstd is None, reason="no zstd module")
    ),
]
FRAMINGS = ["content-length", "chunked", "close-delimited"]


def _answer(
    status: int, coding: str, body: bytes | object, framing: str, length: int | None = None
) -> object:
    """A raw server answer with ``Content-Encoding: coding`` and the body framed as asked."""
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Encoding: {coding}"
    if framing == "content-length":
        if length is None:
            assert isinstance(body, bytes)
            length = len(body)
        head += f"\r\nContent-Length: {length}"
    return rawtcp.respond(head.encode(), body, chunked=framing == "chunked")  # type: ignore[arg-type]


def _bomb(kind: str, megabytes: int) -> tuple[object, int]:
    """A body of ``megabytes`` MiB of zeros under ``kind``, lazily where the coding allows; its length."""
    if kind in ("br", "zstd"):
        data = bombs.zeros(kind, megabytes)
        return data, len(data)
    return bombs.zeros_stream(kind, megabytes), len(bombs.zeros(kind, megabytes))


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(("coding", "kind"), CODINGS)
async def test_a_bomb_is_refused_at_the_limit(harness, coding, kind, framing) -> None:
    """1 GiB of zeros in about 1 MiB (256 MiB for br/zstd): ResponseDecodeError at the limit, fast, once."""
    body, length = _bomb(kind, 256 if kind in ("br", "zstd") else 1024)
    async with rawtcp.raw_server(_answer(200, coding, body, framing, length)) as url:
        client = harness.client(url, timeout_seconds=5.0, max_retries=3)
        started = time.monotonic()
        with pytest.raises(ResponseDecodeError, match="limit") as info:
            await client.get("bomb")
        elapsed = time.monotonic() - started
    assert info.value.attempts == 1  # a body too large is not retried
    assert info.value.status == 200
    assert elapsed < 2.0
    harness.assert_recorded(outcome="decode_error", attempts=1)


@pytest.mark.parametrize("coding", ["gzip, gzip", "x-gzip, gzip", "gzip,gzip", " GZIP , Gzip "])
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_stacked_bomb_is_refused_at_the_limit(harness, coding, framing) -> None:
    """Stacked codings: a few KiB that inflate to 1 GiB through two layers; refused at the limit."""
    body = bombs.stacked_gzip_bomb()
    assert len(body) < 16 * 1024
    async with rawtcp.raw_server(_answer(200, coding, body, framing)) as url:
        client = harness.client(url, timeout_seconds=5.0)
        with pytest.raises(ResponseDecodeError, match="limit"):
            await client.get("bomb")
    harness.assert_recorded(outcome="decode_error", attempts=1)


@pytest.mark.parametrize(
    "coding",
    ["compress", "xz", "gzip, br2", "\uff47\uff5a\uff49\uff50", "gzip, gzip, gzip", "identity, snappy"],
)
async def test_a_coding_we_cannot_decode_is_a_decode_error(harness, coding) -> None:
    """Unknown, non-ASCII or three stacked codings: ResponseDecodeError, not retried."""
    body = bombs.encode("gzip", b'{"ok": true}')
    async with rawtcp.raw_server(_answer(200, coding, body, "content-length")) as url:
        client = harness.client(url, timeout_seconds=2.0, max_retries=3)
        with pytest.raises(ResponseDecodeError, match="cannot be decoded"):
            await client.get("x")
    harness.assert_recorded(outcome="decode_error", attempts=1)


def _corrupt_bodies() -> list[object]:
    good = bombs.encode("gzip", b'{"ok": true}')
    cases = [
        pytest.param("gzip", b"\x1f\x8b\x08\x00garbage-not-deflate", id="gzip-garbage"),
        pytest.param("gzip", good[:-6], id="gzip-truncated"),
        pytest.param("gzip", good + b"trailing junk", id="gzip-trailing-junk"),
        pytest.param("gzip", good[:10] + bytes(b ^ 0xFF for b in good[10:]), id="gzip-flipped"),
        pytest.param("deflate", bombs.encode("deflate", b"{}")[:-1] + b"\x00", id="deflate-bad-checksum"),
        pytest.param("deflate", b"\xff\xfe\xfd not deflate", id="deflate-garbage"),
        pytest.param("gzip, gzip", bombs.encode("gzip", b"not gzip inside"), id="stacked-inner-garbage"),
    ]
    if bombs.brotli is not None:
        cases.append(pytest.param("br", b"\xff\xff\xff not brotli", id="br-garbage"))
    if bombs.zstd is not None:
        cases.append(pytest.param("zstd", bombs.encode("zstd", b"{}")[:-3], id="zstd-truncated"))
    return cases


@pytest.mark.parametrize(("coding", "body"), _corrupt_bodies())
async def test_a_corrupt_compressed_body_is_a_decode_error(harness, coding, body) -> None:
    """Garbage, truncated, flipped or trailing-junk compressed streams: ResponseDecodeError, not retried."""
    async with rawtcp.raw_server(_answer(200, coding, body, "content-length")) as url:
        client = harness.client(url, timeout_seconds=2.0, max_retries=3)
        with pytest.raises(ResponseDecodeError, match="cannot be decoded"):
            await client.get("x")
    harness.assert_recorded(outcome="decode_error", attempts=1)


PAYLOAD = {"values": list(range(2000)), "name": "é" * 100}


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(("coding", "kind"), CODINGS)
async def test_well_formed_compressed_bodies_decode(harness, coding, kind, framing) -> None:
    """An honest compressed JSON body under each coding and framing decodes to the same value."""
    body = bombs.encode(kind, jsonlib.dumps(PAYLOAD).encode())
    async with rawtcp.raw_server(_answer(200, coding, body, framing)) as url:
        client = harness.client(url, timeout_seconds=2.0)
        assert await client.get("x") == PAYLOAD
    harness.assert_recorded(outcome="success", attempts=1)


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        pytest.param(
            "gzip", bombs.encode("gzip", b'{"a": ') + bombs.encode("gzip", b"1}"), id="gzip-members"
        ),
        pytest.param("gzip, gzip", bombs.encode("gzip", bombs.encode("gzip", b'{"a": 1}')), id="stacked"),
        pytest.param("deflate, gzip", bombs.encode("gzip", bombs.encode("deflate", b'{"a": 1}')), id="mixed"),
        pytest.param("identity", b'{"a": 1}', id="identity"),
        pytest.param("", b'{"a": 1}', id="blank"),
        pytest.param("x-gzip", bombs.encode("gzip", b'{"a": 1}'), id="x-gzip"),
    ],
)
async def test_members_stacks_and_identity_decode(harness, coding, body) -> None:
    """Concatenated gzip members, two stacked codings, identity and blank codings: decoded correctly."""
    async with rawtcp.raw_server(_answer(200, coding, body, "chunked")) as url:
        client = harness.client(url, timeout_seconds=2.0)
        assert await client.get("x") == {"a": 1}


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize(("size", "fits"), [(1000, True), (1001, False)])
async def test_the_limit_is_exact_after_decoding(harness, coding, size, fits) -> None:
    """A decoded body of exactly max_response_bytes passes; one byte more is refused."""
    text = b'"' + b"a" * (size - 2) + b'"'
    async with rawtcp.raw_server(_answer(200, coding, bombs.encode(coding, text), "chunked")) as url:
        client = harness.client(url, timeout_seconds=2.0, max_response_bytes=1000)
        if fits:
            assert await client.get("x") == "a" * (size - 2)
        else:
            with pytest.raises(ResponseDecodeError, match="1000-byte limit"):
                await client.get("x")


async def test_an_error_status_keeps_its_compressed_detail(harness) -> None:
    """A 503 with a gzipped {"detail", "code"} body: ServerError with its detail and code."""
    body = bombs.encode("gzip", b'{"detail": "down for maintenance", "code": "MAINT"}')
    async with rawtcp.raw_server(_answer(503, "gzip", body, "content-length")) as url:
        client = harness.client(url, timeout_seconds=2.0, max_retries=0)
        with pytest.raises(ServerError) as info:
            await client.get("x")
    assert (info.value.detail, info.value.code, info.value.status) == ("down for maintenance", "MAINT", 503)


@pytest.mark.parametrize(("status", "cls"), [(503, ServerError), (418, ClientResponseError)])
async def test_an_error_status_with_a_bomb_keeps_its_status(harness, status, cls) -> None:
    """A 5xx or 4xx whose body is a bomb: the status's error, without detail, the bomb never inflated."""
    async with rawtcp.raw_server(_answer(status, "gzip, gzip", bombs.stacked_gzip_bomb(), "chunked")) as url:
        client = harness.client(url, timeout_seconds=2.0, max_retries=0)
        with pytest.raises(cls) as info:
            await client.get("x")
    assert info.value.status == status
    assert info.value.detail is None


async def test_accept_encoding_offers_only_what_is_decoded(make_client, upstream: Upstream) -> None:
    """Accept-Encoding names exactly the codings the client decodes in bounded steps."""
    upstream.route("x", json({}))
    client = make_client(upstream.base_url)
    await client.get("x")
    sent = upstream.requests[0].headers["Accept-Encoding"]
    assert sent == ACCEPT_ENCODING
    offered = {c.strip() for c in sent.split(",")}
    assert {"gzip", "deflate"} <= offered <= {"gzip", "deflate", "br", "zstd"}
    assert ("br" in offered) == (bombs.brotli is not None)
    assert ("zstd" in offered) == (bombs.zstd is not None)


async def test_an_aiohttp_server_compressing_its_answer_is_decoded(make_client, upstream: Upstream) -> None:
    """An aiohttp server's own response compression (chosen from our Accept-Encoding) round-trips."""

    async def compressed(request: web.Request) -> web.StreamResponse:
        resp = web.json_response(PAYLOAD)
        resp.enable_compression()
        return resp

    upstream.route("x", compressed)
    client = make_client(upstream.base_url)
    assert await client.get("x") == PAYLOAD


# -- memory: many bombs at once, measured in a fresh interpreter -------------------------

_RSS_SCRIPT = r"""
import asyncio, json, resource, sys
from app.clients import BaseServiceClient, ClientConfig, ResponseDecodeError

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

async def main(normal, stacked, single, n, transport):
    config = ClientConfig(
        base_url=normal, service_name="bombs", max_retries=0, timeout_seconds=20, transport=transport,
        bulkhead_max_concurrent=2 * n, bulkhead_max_waiting=2 * n,
        circuit_breaker_failure_threshold=10_000,
    )
    async with BaseServiceClient(config) as client:
        # The baseline: the same client after the same number of honest calls, all at once.
        for _ in range(3):
            await asyncio.gather(*(client.get("ok") for _ in range(2 * n)))
        baseline = peak_mib()
    out = {"baseline_mib": baseline}
    for name, url in (("stacked", stacked), ("single", single)):
        async with BaseServiceClient(config.model_copy(update={"base_url": url})) as client:
            results = await asyncio.gather(*(client.get("bomb") for _ in range(n)), return_exceptions=True)
        out[name] = sorted({type(r).__name__ for r in results})
        out[name + "_peak_mib"] = peak_mib()
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:4], int(sys.argv[4]), sys.argv[5]))
"""


async def test_fifty_concurrent_bombs_keep_memory_near_the_baseline(tmp_path: Path, transport) -> None:
    """50 concurrent gzip bombs (stacked, then chunked; 1 GiB each): peak RSS within 100 MiB of baseline."""
    # The client runs in a fresh interpreter that reads its own ru_maxrss: the baseline
    # is its peak after 100 concurrent honest calls; inflating even one bomb would take
    # a GiB, and holding each up to the limit, 50 x 10 MiB.
    n = 50
    honest = bombs.encode("gzip", jsonlib.dumps(PAYLOAD).encode())
    servers = [
        rawtcp.raw_server(_answer(200, "gzip", honest, "content-length")),
        rawtcp.raw_server(_answer(200, "gzip, gzip", bombs.stacked_gzip_bomb(), "chunked")),
        rawtcp.raw_server(_answer(200, "gzip", bombs.zeros_stream("gzip", 1024), "chunked")),
    ]
    urls = [await s.__aenter__() for s in servers]
    try:
        env = {**os.environ, "PYTHONPATH": REPO}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-W", "error", "-c", _RSS_SCRIPT, *urls, str(n), transport,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        for server in reversed(servers):
            await server.__aexit__(None, None, None)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report = jsonlib.loads(stdout)
    print(report)  # the measured numbers, for the record (pytest -s)
    assert report["stacked"] == report["single"] == ["ResponseDecodeError"]
    assert report["stacked_peak_mib"] - report["baseline_mib"] < 100
    assert report["single_peak_mib"] - report["baseline_mib"] < 100
