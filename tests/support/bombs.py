"""Compressed bodies and decompression bombs, built in milliseconds without holding a gigabyte."""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from collections.abc import Callable, Iterator

MiB = 1 << 20
_ZEROS = bytes(MiB)

try:
    import brotli  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional
    brotli = None
try:
    from backports import zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional
    zstd = None


@functools.cache
def _deflate_pieces() -> tuple[bytes, bytes, bytes]:
    """Raw deflate of 1 MiB of zeros: the first piece, the steady-state piece, and the last.

    After a sync flush the window holds only zeros, so every further MiB of zeros
    compresses to the very same bytes: n MiB is first + middle * (n - 2) + last.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = c.compress(_ZEROS) + c.flush(zlib.Z_SYNC_FLUSH)
    middle = c.compress(_ZEROS) + c.flush(zlib.Z_SYNC_FLUSH)
    last = c.compress(_ZEROS) + c.flush(zlib.Z_FINISH)
    return first, middle, last


def _deflate_stream(megabytes: int) -> Iterator[bytes]:
    first, middle, last = _deflate_pieces()
    yield first
    for _ in range(megabytes - 2):
        yield middle
    yield last


def _checksums(megabytes: int) -> tuple[int, int]:
    crc, adler = 0, 1
    for _ in range(megabytes):
        crc = zlib.crc32(_ZEROS, crc)
        adler = zlib.adler32(_ZEROS, adler)
    return crc, adler


def zeros_stream(coding: str, megabytes: int) -> Callable[[], Iterator[bytes]]:
    """A valid ``gzip``, ``deflate`` (zlib) or ``raw-deflate`` body of ``megabytes`` MiB of zeros, lazily."""
    crc, adler = _checksums(megabytes)

    def pieces() -> Iterator[bytes]:
        if coding == "gzip":
            yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        elif coding == "deflate":
            yield b"\x78\xda"
        yield from _deflate_stream(megabytes)
        if coding == "gzip":
            yield struct.pack("<II", crc, (megabytes * MiB) & 0xFFFFFFFF)
        elif coding == "deflate":
            yield struct.pack(">I", adler)

    return pieces


@functools.cache
def zeros(coding: str, megabytes: int) -> bytes:
    """The whole of :func:`zeros_stream` (about 1 KiB per MiB for the zlib codings)."""
    if coding == "br":
        assert brotli is not None
        return bytes(brotli.compress(bytes(megabytes * MiB), quality=1))
    if coding == "zstd":
        assert zstd is not None
        c = zstd.ZstdCompressor()
        return bytes(b"".join(c.compress(_ZEROS) for _ in range(megabytes)) + c.flush())
    return b"".join(zeros_stream(coding, megabytes)())


@functools.cache
def stacked_gzip_bomb(gigabytes: int = 1) -> bytes:
    """``Content-Encoding: gzip, gzip``: a few KiB that inflate to ``gigabytes`` GiB."""
    return gzip.compress(zeros("gzip", gigabytes * 1024), 9)


def encode(coding: str, data: bytes) -> bytes:
    """``data`` under one content coding, as a well-behaved server would send it."""
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "raw-deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if coding == "br":
        assert brotli is not None
        return bytes(brotli.compress(data))
    if coding == "zstd":
        assert zstd is not None
        return bytes(zstd.compress(data))
    raise ValueError(coding)
