"""BalancedTransport: one upstream's many instances behind the transport seam, an instance per attempt."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp
from yarl import URL

from app.balancing import Balancer, Instance, NoInstanceError
from app.balancing.balancer import AttemptOutcome
from app.clients.config import ClientConfig
from app.clients.transport import Request, Transport, TransportFactory, reconfigure_transport
from app.discovery import DiscoveryRunner
from app.errors import ClientClosedError, ClientConnectionError, ClientError, ClientTimeoutError
from app.observability.context import attempt_span_var
from app.resilience.clock import Clock

__all__ = ["BalancedTransport", "attempt_outcome"]

#: The async calls' transport and the sync twins' run on two threads and share the
#: discovery: only one of them may start it.
_DISCOVERY_START = threading.Lock()


def attempt_outcome(error: ClientError) -> AttemptOutcome:
    """What a failed attempt says of the instance that made it (see ``AttemptOutcome``)."""
    if isinstance(error, ClientClosedError):
        return "cancelled"  # our own shutdown: nothing about the instance
    if isinstance(error, ClientConnectionError | ClientTimeoutError):
        return "failure"
    status = error.status
    if status == 429:
        return "throttled"
    if status is not None and status >= 500:
        return "failure"
    return "error"


class BalancedTransport:
    """A Transport over the balancer's instances: each attempt goes to the one it picks.

    The instance gets a transport of its own (``factory``, on its base URL, so redirects
    stay under that instance), opened on its first attempt and closed once it has left
    the set and drained. A retry or a hedge goes to an instance the call has not tried,
    when there is one. An instance's failure is ``instance_local`` (not counted by the
    breaker) unless every instance is failing too.

    ``discovery``, when given, is started by the first transport of the client to send
    (in its event loop) and closed by that one's ``aclose``; the async calls and the
    sync twins each have a transport, and share the discovery as they share the balancer.
    ``reconfigure`` and ``use_discovery`` take a new config and a new discovery in place.
    """

    def __init__(
        self,
        balancer: Balancer,
        factory: TransportFactory,
        config: ClientConfig,
        *,
        clock: Clock,
        session: aiohttp.ClientSession | None = None,
        discovery: DiscoveryRunner | None = None,
    ) -> None:
        self._balancer = balancer
        self._factory = factory
        self._config = config
        self._clock = clock
        self._session = session
        self._discovery = discovery
        self._base_length = len(config.base_url)
        self._transports: dict[str, Transport] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_discovery = False
        self._closed = False
        balancer.add_removal_listener(self._removed)

    def __repr__(self) -> str:
        return f"BalancedTransport({self._config.service_name!r}, instances={len(self._balancer.urls())})"

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The injected session every instance shares, if any."""
        return self._session

    def transport_for(self, url: str) -> Transport | None:
        """The open transport of the instance at ``url`` (tests look into it)."""
        return self._transports.get(url)

    async def send(self, request: Request, headers: Mapping[str, str], timeout: float) -> Any:
        """One attempt, to the instance the balancer picks (see :class:`~app.clients.transport.Transport`)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._start_discovery()
        if self._closed:
            raise ClientClosedError(**request.context)
        instance = await self._pick(request, timeout)
        tried = request.tried
        if tried is None:
            tried = request.tried = []
        tried.append(instance.url)
        request.record.instance = instance.address
        span = attempt_span_var.get()
        if span is not None:
            span.set_attribute("server.address", instance.host)
            span.set_attribute("server.port", instance.port)
        transport = self._transports.get(instance.url)
        if transport is None:
            own = self._instance_config(instance.url)
            transport = self._transports[instance.url] = self._factory(own, session=self._session)
        # The call's URL was built under base_url once; only its instance part changes.
        url = URL(instance.url + str(request.url)[self._base_length :], encoded=True)
        balancer, clock = self._balancer, self._clock
        started = clock.now()
        try:
            result = await transport.send(request.to(url), headers, timeout)
        except ClientError as error:
            outcome = attempt_outcome(error)
            retry_after = error.retry_after if outcome != "error" else None
            every_instance_failing = balancer.finished(instance, outcome, clock.now() - started, retry_after)
            error.instance = instance.address
            if outcome in ("failure", "throttled") and not every_instance_failing:
                error.instance_local = True
            raise
        except BaseException:
            balancer.finished(instance, "cancelled", clock.now() - started)
            raise
        balancer.finished(instance, "success", clock.now() - started)
        return result

    async def _pick(self, request: Request, timeout: float) -> Instance:
        try:
            return self._balancer.pick(request.tried or ())
        except NoInstanceError:
            pass
        # Discovery has not found any instance yet (DNS or etcd still answering): wait
        # for it within this attempt's time, then give up as a connect failure would.
        if await self._wait_for_instances(timeout):
            try:
                return self._balancer.pick(request.tried or ())
            except NoInstanceError:
                pass
        problem = "no instances discovered" if self._discovery is not None else "no instances"
        if self._discovery is not None and self._discovery.last_error:
            problem += f" ({self._discovery.last_error})"
        raise ClientConnectionError(problem, request_sent=False, **request.context)

    async def _wait_for_instances(self, timeout: float) -> bool:
        discovery = self._discovery
        if discovery is None:
            return False
        if self._owns_discovery:
            return await discovery.wait_ready(timeout)
        # Another loop watches the source (its events belong to that loop): look again now and then.
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        while not discovery.instances and loop.time() < ends:  # noqa: ASYNC110 - its Event is the other loop's
            await asyncio.sleep(0.02)
        return bool(discovery.instances)

    def _instance_config(self, url: str) -> ClientConfig:
        """The config of the instance at ``url``'s own transport: the client's, on its base URL."""
        return self._config.model_copy(update={"base_url": url})

    def reconfigure(self, config: ClientConfig) -> None:
        """Attempts from now on take ``config``'s settings, on every instance's transport (open or not yet).

        Each call's URL was built under the base URL this transport was made with, and
        stays so: ``config.base_url`` may have moved with the instances, but only the
        old one's length is cut off each attempt, so calls in flight and new ones alike
        reach the instance picked.
        """
        self._config = config
        for url, transport in list(self._transports.items()):
            reconfigure_transport(transport, self._instance_config(url))

    def use_discovery(self, discovery: DiscoveryRunner | None) -> None:
        """Take ``discovery`` in place of the current one (a reconfigure replaced the source); any thread.

        In this transport's loop, once it has one: the old runner is stopped if this
        transport ran it, and the new one started if no other transport has started it.
        Before its first send, the first send starts it.
        """
        old = self._discovery
        if discovery is old:
            return
        self._discovery = discovery
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        owned, self._owns_discovery = self._owns_discovery, False
        loop.call_soon_threadsafe(self._switch_discovery, old if owned else None)

    def _switch_discovery(self, old: DiscoveryRunner | None) -> None:
        if old is not None:
            self._close_later(old.aclose)
        if not self._closed:
            self._start_discovery()

    def _start_discovery(self) -> None:
        """Start the discovery in this loop, unless it runs already (here, or in the other transport's)."""
        discovery = self._discovery
        if discovery is None:
            return
        with _DISCOVERY_START:
            if not discovery.running:
                discovery.start()
                self._owns_discovery = True

    def _removed(self, instance: Instance) -> None:
        """An instance left the set and drained: close its transport (and the connections it holds)."""
        transport = self._transports.pop(instance.url, None)
        loop = self._loop
        if transport is None or loop is None or loop.is_closed():
            return
        # The balancer may be told on another thread (the sync twins' loop shares it).
        loop.call_soon_threadsafe(self._close_later, transport.aclose)

    def _close_later(self, aclose: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``aclose()`` (a drained instance's transport, an old discovery) here; ``aclose`` awaits it."""
        task = asyncio.ensure_future(aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every instance's transport and, when this transport started it, the discovery."""
        self._closed = True
        self._balancer.remove_removal_listener(self._removed)
        if self._discovery is not None and self._owns_discovery:
            await self._discovery.aclose()
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(t.aclose() for t in transports), *self._closing, return_exceptions=True)
