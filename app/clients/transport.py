"""The transport seam: what one attempt hands the wire, and what a transport owes in return.

As in httpx, the client above the seam runs the policies and the transport below it
speaks HTTP. A transport is chosen per client class (``BaseServiceClient.transport_factory``,
:class:`~app.clients.aiohttp_transport.AiohttpTransport` by default), so a leaner one
can take its place without the client changing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import aiohttp
    from multidict import CIMultiDict
    from yarl import URL

    from app.clients.config import ClientConfig
    from app.errors import ErrorContext
    from app.resilience.pipeline import CallRecord

__all__ = [
    "DEADLINE_HEADER",
    "RAW_BODY",
    "RAW_CONDITIONAL",
    "Reconfigurable",
    "Request",
    "Transport",
    "TransportFactory",
    "reconfigure_transport",
]

#: The header that tells the upstream how long this attempt may take, in milliseconds.
DEADLINE_HEADER = "X-Request-Timeout-Ms"

#: ``Request.raw``: a 2xx comes back whole, its body not decoded (a typed answer is
#: validated straight from the bytes).
RAW_BODY = 1
#: ``Request.raw``: a 2xx or a 304 comes back whole (the response cache's fetch).
RAW_CONDITIONAL = 2


class Request:
    """What every attempt of one logical call sends, encoded once before the first.

    ``headers`` are the call's, a ``CIMultiDict`` (case-insensitive, as aiohttp takes
    them; ``dict(headers)`` for a plain one); an attempt may send a copy with more (the
    deadline it has left, trace context). ``url`` already holds the query. ``record`` is where the
    transport notes the status it saw; ``context`` names the call in every error.
    """

    __slots__ = (
        "body",
        "forward_deadline",
        "fresh_headers",
        "headers",
        "method",
        "params",
        "raw",
        "record",
        "tried",
        "url",
    )

    def __init__(  # noqa: PLR0917 - once per call: request() passes them by position, the cheapest
        self,
        record: CallRecord,
        url: URL,
        body: bytes | None,
        headers: CIMultiDict[str],
        params: dict[str, Any] | None,
        forward_deadline: bool,
        traced: bool,
    ) -> None:
        self.record = record
        self.method = record.method
        self.url = url
        self.body = body
        self.headers = headers
        self.params = params  # as given, for the DEBUG attempt log
        self.forward_deadline = forward_deadline
        # Each attempt then sends headers of its own: hedged attempts run side by side.
        self.fresh_headers = forward_deadline or traced
        #: The instances this call's attempts went to, when the upstream has several.
        self.tried: list[str] | None = None
        #: 0, ``RAW_BODY`` or ``RAW_CONDITIONAL``: which answers come back whole (a ``RawResponse``).
        self.raw = 0

    @property
    def context(self) -> ErrorContext:
        """What names the call in its errors: built when one is, not held while the call runs."""
        return self.record.context()

    def to(self, url: URL) -> Request:
        """The same request sent to ``url`` (another instance of the upstream)."""
        clone = object.__new__(Request)
        for name in Request.__slots__:
            setattr(clone, name, getattr(self, name))
        clone.url = url
        return clone


class Transport(Protocol):
    """Sends attempts to one upstream and reads their answers within the client's limits."""

    async def send(self, request: Request, headers: Mapping[str, str], timeout: float) -> Any:
        """One attempt, done within ``timeout`` seconds: the decoded body, or a typed error.

        With ``request.raw`` a 2xx (``RAW_BODY``), or a 2xx or a 304 (``RAW_CONDITIONAL``),
        is returned as a ``RawResponse`` instead: status, headers and the body as read, not
        decoded (for typed answers, validated from the bytes, and for the response cache).

        Sets ``request.record.status`` to each status it sees. Raises the ``ClientError``
        of DESIGN §4 for the answer (status, body, redirect), ``ClientTimeoutError`` or
        ``ClientConnectionError`` only for failures below HTTP, and ``ClientClosedError``
        when its own connections were closed under the attempt.
        """
        ...

    async def aclose(self) -> None:
        """Close what the transport opened (a session handed to it stays open); later sends fail closed."""
        ...


class TransportFactory(Protocol):
    """Builds a client's transport; ``session`` is an injected aiohttp session, or None."""

    def __call__(self, config: ClientConfig, *, session: aiohttp.ClientSession | None = None) -> Transport:
        """A transport for the upstream ``config`` describes."""
        ...


@runtime_checkable
class Reconfigurable(Protocol):
    """A transport that takes a new config in place (optional: a transport without it keeps its own)."""

    def reconfigure(self, config: ClientConfig) -> None:
        """Attempts from now on follow ``config`` (its timeout, limits, pool size)."""
        ...


def reconfigure_transport(transport: Transport, config: ClientConfig) -> None:
    """Give ``transport`` the new ``config`` when it takes one."""
    if isinstance(transport, Reconfigurable):
        transport.reconfigure(config)
