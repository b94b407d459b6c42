"""Content-Encoding, decoded by us in bounded steps, so a compressed body cannot outgrow its limit.

aiohttp's own decompressor inflates whatever arrives in one network read at once (64 KiB
of gzipped zeros is 64 MiB), before any size check can run. The client turns it off on
every request, and :class:`BodyDecoder` decodes here instead: every codec is asked for at
most a few hundred KiB of output at a time, so memory never exceeds the limit plus one
step, and a bomb is refused as soon as its output passes the limit. Only the codings this
module can decode in bounded steps are advertised in ``Accept-Encoding``
(:data:`ACCEPT_ENCODING`): gzip and deflate always, br with Brotli >= 1.2, zstd with
Python 3.14's ``compression.zstd`` or ``backports.zstd``.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

__all__ = ["ACCEPT_ENCODING", "BodyDecoder", "BodyDecodingError", "BodyTooLargeError", "is_identity"]

#: Output asked of one codec per step: small enough to bound memory, big enough to be cheap.
_STEP = 256 * 1024
#: A gzip body may be several members back to back; more than this is not a real body.
_MAX_MEMBERS = 1024
#: Stacked codings ("gzip, gzip") beyond this are refused: nobody sends them for real.
_MAX_CODINGS = 2


class BodyTooLargeError(Exception):
    """The body is over the configured limit; reading stopped there."""


class BodyDecodingError(Exception):
    """The body's Content-Encoding is unknown, or its compressed stream is corrupt or truncated."""


class _Stage(Protocol):
    """One codec: input in with ``feed``, output out in bounded pieces with ``read``."""

    def feed(self, data: bytes) -> None:
        """Hand over the next input; only called once ``read`` has returned ``b""``."""

    def read(self, limit: int) -> bytes:
        """Up to about ``limit`` bytes of output; ``b""`` when it needs more input."""

    def close(self) -> None:
        """The input ended: raise ``BodyDecodingError`` if the stream is incomplete."""


class _Zlib:
    """gzip (``wbits`` 31) or deflate (zlib-wrapped or raw, told apart by the first byte)."""

    __slots__ = ("_d", "_input", "_members", "_wbits")

    def __init__(self, wbits: int | None) -> None:
        # None: deflate, whose framing is sniffed from the first byte (no decompressor yet).
        self._wbits = zlib.MAX_WBITS if wbits is None else wbits
        self._d: Any = None if wbits is None else zlib.decompressobj(wbits)
        self._input = b""
        self._members = 1

    def feed(self, data: bytes) -> None:
        self._input = data

    def read(self, limit: int) -> bytes:
        while True:
            d = self._d
            if d is None:
                if not self._input:
                    return b""
                # RFC 9110 says zlib-wrapped, but some servers send raw deflate: sniff it,
                # as browsers and aiohttp do (a zlib header's low nibble is 8).
                self._wbits = zlib.MAX_WBITS if self._input[0] & 0x0F == 8 else -zlib.MAX_WBITS
                self._d = d = zlib.decompressobj(self._wbits)
            if d.eof:
                rest = d.unused_data + self._input
                self._input = b""
                if not rest:
                    return b""
                # Concatenated members (RFC 1952 §2.2): each needs a fresh decompressor.
                self._members += 1
                if self._members > _MAX_MEMBERS:
                    raise BodyDecodingError("too many compressed members")
                self._d = zlib.decompressobj(self._wbits)
                self._input = rest
                continue
            data = d.unconsumed_tail
            if not data:
                data, self._input = self._input, b""
                if not data:
                    return b""
            out: bytes = d.decompress(data, limit)
            if out:
                return out

    def close(self) -> None:
        if self._d is not None and not self._d.eof:
            raise BodyDecodingError("compressed body is truncated")


_CODEC_ERRORS: tuple[type[Exception], ...] = (zlib.error, EOFError, ValueError, TypeError)
_CODECS: dict[str, Any] = {
    "gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),
    "x-gzip": lambda: _Zlib(16 + zlib.MAX_WBITS),  # RFC 9110 §8.4.1.3: an alias of gzip
    "deflate": lambda: _Zlib(None),
}

# brotli only from a version whose decompressor takes an output limit (Brotli >= 1.2);
# an older one would inflate a whole read at once, so br is then neither decoded nor asked for.
try:
    import brotli  # type: ignore[import-not-found, import-untyped, unused-ignore]

    _HAS_BROTLI = hasattr(brotli.Decompressor(), "can_accept_more_data")
except ImportError:  # pragma: no cover - depends on what is installed
    _HAS_BROTLI = False

if _HAS_BROTLI:

    class _Brotli:
        """br, through Brotli's output-limited ``process``."""

        __slots__ = ("_d", "_input", "_seen")

        def __init__(self) -> None:
            self._d = brotli.Decompressor()
            self._input = b""
            self._seen = False

        def feed(self, data: bytes) -> None:
            self._input = data
            self._seen = self._seen or bool(data)

        def read(self, limit: int) -> bytes:
            d = self._d
            if not d.can_accept_more_data():
                out: bytes = d.process(b"", output_buffer_limit=limit)
                return out
            data, self._input = self._input, b""
            if not data:
                return b""
            if d.is_finished():
                raise BodyDecodingError("data after the end of the compressed body")
            return d.process(data, output_buffer_limit=limit)  # type: ignore[no-any-return]

        def close(self) -> None:
            if self._seen and not self._d.is_finished():
                raise BodyDecodingError("compressed body is truncated")

    _CODECS["br"] = _Brotli
    _CODEC_ERRORS += (brotli.error,)

# zstd from the standard library (3.14) or its backport, the same modules aiohttp uses.
try:
    try:
        from compression import zstd  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]
    _HAS_ZSTD = True
except ImportError:  # pragma: no cover - depends on what is installed
    _HAS_ZSTD = False

if _HAS_ZSTD:

    class _Zstd:
        """zstd, through the decompressor's ``max_length``; frames may follow one another."""

        __slots__ = ("_d", "_frames", "_input", "_seen")

        def __init__(self) -> None:
            self._d = zstd.ZstdDecompressor()
            self._input = b""
            self._frames = 1
            self._seen = False

        def feed(self, data: bytes) -> None:
            self._input = data
            self._seen = self._seen or bool(data)

        def read(self, limit: int) -> bytes:
            while True:
                d = self._d
                if d.eof:
                    rest = d.unused_data + self._input
                    self._input = b""
                    if not rest:
                        return b""
                    # Frames may follow one another (RFC 8878 §3.1): a fresh decompressor each.
                    self._frames += 1
                    if self._frames > _MAX_MEMBERS:
                        raise BodyDecodingError("too many compressed frames")
                    self._d = zstd.ZstdDecompressor()
                    self._input = rest
                    continue
                if d.needs_input:
                    data, self._input = self._input, b""
                    if not data:
                        return b""
                else:
                    data = b""  # output is still buffered inside: drain it first
                out: bytes = d.decompress(data, limit)
                if out or not data:
                    return out  # no output from no input: wait for more rather than spin

        def close(self) -> None:
            if self._seen and not self._d.eof:
                raise BodyDecodingError("compressed body is truncated")

    _CODECS["zstd"] = _Zstd
    _CODEC_ERRORS += (zstd.ZstdError,)

#: What the client asks for: exactly the codings :class:`BodyDecoder` can decode.
ACCEPT_ENCODING = ", ".join(c for c in ("gzip", "deflate", "br", "zstd") if c in _CODECS)


def _codings(header: str) -> list[str]:
    """The codings of a Content-Encoding value, in the order they were applied."""
    codings = [c.strip().lower() for c in header.split(",")]
    return [c for c in codings if c and c != "identity"]


def is_identity(header: str) -> bool:
    """True when a Content-Encoding value names no coding at all (``identity`` or blank)."""
    return not _codings(header)


class BodyDecoder:
    """Decodes one body's Content-Encoding as it streams in, refusing it past ``limit`` bytes.

    Raises ``BodyDecodingError`` (at construction) for a coding it cannot decode, or more
    than two stacked, and (while feeding or at ``finish``) for a corrupt or truncated
    stream; ``BodyTooLargeError`` as soon as the decoded size passes ``limit``, or the
    compressed input passes twice that (a compressed body larger than its decoded limit
    allows is not one worth reading).
    """

    __slots__ = ("_limit", "_parts", "_raw", "_raw_limit", "_size", "_stages")

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = _codings(content_encoding)
        if len(codings) > _MAX_CODINGS:
            raise BodyDecodingError("too many stacked content codings")
        factories = [_CODECS.get(c) for c in codings]
        if None in factories:
            raise BodyDecodingError("unsupported content coding")
        # Codings are listed in the order they were applied: undo the last one first.
        self._stages: list[_Stage] = [f() for f in reversed(factories) if f is not None]
        self._limit = limit
        self._raw_limit = 2 * limit + _STEP
        self._raw = 0
        self._size = 0
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Decode the next piece of the compressed body."""
        self._raw += len(data)
        if self._raw > self._raw_limit:
            self._parts = []
            raise BodyTooLargeError
        try:
            self._push(0, data)
        except _CODEC_ERRORS as exc:
            self._parts = []
            raise BodyDecodingError("compressed body is corrupt") from exc

    def finish(self) -> bytes:
        """The decoded body, once every compressed stream has ended cleanly."""
        try:
            for stage in self._stages:
                stage.close()
        except _CODEC_ERRORS as exc:
            raise BodyDecodingError("compressed body is corrupt") from exc
        return b"".join(self._parts)

    def _push(self, index: int, data: bytes) -> None:
        if index == len(self._stages):
            self._size += len(data)
            if self._size > self._limit:
                # Dropped now: the exception's traceback keeps this frame (and so the
                # decoder) alive for as long as the caller keeps the error.
                self._parts = []
                raise BodyTooLargeError
            self._parts.append(data)
            return
        stage = self._stages[index]
        stage.feed(data)
        last = index == len(self._stages) - 1
        while True:
            # The last stage is asked for one byte past what is left, so "over" shows at once.
            want = min(_STEP, self._limit - self._size + 1) if last else _STEP
            out = stage.read(want)
            if not out:
                return
            self._push(index + 1, out)
