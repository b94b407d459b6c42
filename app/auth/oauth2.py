"""OAuth2ClientCredentials: one token for every caller, fetched once for all, refreshed ahead of expiry."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import random
import threading
from typing import NamedTuple

from app.auth.config import OAuth2ClientCredentialsAuth
from app.auth.metrics import TokenMetrics
from app.auth.token import Token
from app.auth.token_endpoint import TokenEndpoint
from app.errors import ClientClosedError, TokenEndpointError
from app.redaction import forget_secret
from app.resilience.clock import MONOTONIC, Clock

__all__ = ["OAuth2ClientCredentials"]

logger = logging.getLogger("app.auth")

#: A replaced token stays masked this long past its expiry: a call that sent it may still
#: be answered, and the answer may echo it.
_FORGET_AFTER = 300.0
#: At most this many replaced tokens are kept masked (401s can replace tokens quickly).
_MAX_RETIRED = 32
#: After a failed refresh ahead, the next is tried half the time left later, at least this much.
_MIN_REFRESH_PAUSE = 1.0


class _Held(NamedTuple):
    """The token in use and when to refresh it: replaced whole, so readers on any thread see a pair."""

    token: Token
    refresh_at: float


class OAuth2ClientCredentials:
    """``Authorization: Bearer <token>`` from an OAuth2 token endpoint, for any number of callers.

    - Single flight: callers without a valid token share one token request, on any event
      loop (the async calls' and the sync twins'). A caller that is cancelled or gives up
      leaves it running for the others; its failure reaches every one of them.
    - Refresh ahead: past ``1 - refresh_ahead_fraction`` of the lifetime (less jitter) the
      next caller starts a refresh in the background and is served the current token, as
      is everyone until it expires; then callers wait for that same fetch. A failed refresh
      keeps the current token and is tried again later.
    - ``rejected(sent)``: the upstream answered 401 to ``sent``; it is dropped if it is still
      the current token, and the next ``authorization()`` fetches a new one (once for all).

    Time is the injected clock's. Tokens are registered as secrets while they may still show
    up anywhere, and forgotten after. Never logs a token or a secret.
    """

    __slots__ = (
        "__weakref__",  # the expiry gauge holds its credentials weakly
        "_ahead", "_clock", "_closed", "_flight", "_held", "_jitter", "_lock", "_retired", "_rng", "_tasks",
        "endpoint", "metrics", "service_name",
    )  # fmt: skip

    #: The header it fills.
    header = "Authorization"
    #: None: the value changes, so it is asked for per call (see ``Credentials``).
    static_value: str | None = None

    def __init__(
        self,
        config: OAuth2ClientCredentialsAuth,
        *,
        service_name: str,
        clock: Clock = MONOTONIC,
        metrics: TokenMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.service_name = service_name
        self.metrics = metrics
        self.endpoint = TokenEndpoint(config, service_name=service_name, clock=clock, metrics=metrics)
        self._clock = clock
        self._ahead = config.refresh_ahead_fraction
        self._jitter = config.refresh_jitter_fraction
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._held: _Held | None = None
        self._flight: concurrent.futures.Future[Token] | None = None
        self._tasks: set[asyncio.Task[Token]] = set()
        self._retired: collections.deque[Token] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        if metrics is not None:
            metrics.watch(self)

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(service_name={self.service_name!r}, token_url={self.endpoint.url!r})"

    # -- what a client asks, per call and per attempt ------------------------------------

    def current(self) -> str | None:
        """The header value to send now, when a valid token is held; never waits, never fetches."""
        held = self._held
        if held is None or self._clock.now() >= held.token.expires_at:
            return None
        return held.token.value

    async def authorization(self, timeout: float | None = None) -> str:
        """The header value: the current token's, or the next fetch's when there is no valid one.

        Waits at most ``timeout`` seconds (then ``TokenEndpointError``: the token endpoint
        was too slow for the call); a failed fetch raises its ``TokenEndpointError`` (the
        same for every caller that waited for it).
        """
        held = self._held
        if held is not None:
            now = self._clock.now()
            if now < held.token.expires_at:
                if now >= held.refresh_at and self._flight is None and not self._closed:
                    self._join()  # in the background: this caller goes on with the current token
                return held.token.value
        return await self._wait(timeout)

    def rejected(self, sent: str) -> bool:
        """The upstream answered 401 to ``sent``: drop it if still current; True: retry with a fresh one."""
        with self._lock:
            held = self._held
            dropped = held is not None and held.token.value == sent
            if held is not None and dropped:
                self._held = None
                self._retire(held.token)
        if dropped:
            logger.info(
                "token for %s refused by the upstream; fetching a new one",
                self.service_name,
                extra={"fields": {"peer.service": self.service_name, "event": "token_rejected"}},
            )
        return not self._closed

    def seconds_left(self) -> float:
        """Seconds until the current token expires; 0 without one."""
        held = self._held
        return 0.0 if held is None else max(0.0, held.token.expires_at - self._clock.now())

    # -- the single flight -------------------------------------------------------------

    async def _wait(self, timeout: float | None) -> str:
        while True:
            flight = self._join()
            try:
                # shield: a caller that gives up (timeout, cancellation) leaves the fetch to the others.
                token = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(flight)), timeout)
            except TimeoutError:
                # The token endpoint's slowness, not the upstream's: nothing was sent there,
                # and its rolling stats must not count a timeout (TokenEndpointError's outcome).
                raise TokenEndpointError(
                    f"token endpoint {self.endpoint.url} did not answer within the call's deadline",
                    token_endpoint=self.endpoint.url,
                    service_name=self.service_name,
                ) from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled
                if self._closed:
                    raise ClientClosedError("credentials closed", service_name=self.service_name) from None
                continue  # the loop that ran the fetch ended under it: start another here
            return token.value

    def _join(self) -> concurrent.futures.Future[Token]:
        """The fetch in flight, or a new one started on the running loop."""
        with self._lock:
            flight = self._flight
            if flight is not None:
                return flight
            if self._closed:
                raise ClientClosedError("credentials closed", service_name=self.service_name)
            flight = self._flight = concurrent.futures.Future()
        task = asyncio.get_running_loop().create_task(
            self.endpoint.fetch(), name=f"{self.service_name} token fetch"
        )
        self._tasks.add(task)
        # A done callback, not code in the task: it runs even for a task cancelled before it
        # started (its loop ending), so no caller is left waiting on a flight that never lands.
        task.add_done_callback(functools.partial(self._fetched, flight))
        return flight

    def _fetched(self, flight: concurrent.futures.Future[Token], task: asyncio.Task[Token]) -> None:
        """The fetch task ended: its token becomes the current one, or its error every waiter's."""
        self._tasks.discard(task)
        if task.cancelled():
            self._landed(flight, None)
            flight.cancel()
            return
        error = task.exception()
        if error is None:
            token = task.result()
            if self._landed(flight, token):
                flight.set_result(token)
            else:
                flight.cancel()
            return
        self._landed(flight, None)
        if isinstance(error, Exception):  # a TokenEndpointError, or a defect of ours
            self._fetch_failed(error)
        flight.set_exception(error)  # a concurrent future: nobody waiting is no warning

    def _landed(self, flight: concurrent.futures.Future[Token], token: Token | None) -> bool:
        """The fetch ended: no longer in flight, and its token (if any) the current one; False when closed."""
        with self._lock:
            if self._flight is flight:
                self._flight = None
            if token is None:
                return True
            if self._closed:
                forget_secret(token.secret)
                return False
            lifetime = token.lifetime
            jitter = self._rng.uniform(0, lifetime * self._jitter)
            old, self._held = self._held, _Held(token, token.expires_at - lifetime * self._ahead - jitter)
            if old is not None:
                self._retire(old.token)
        logger.info(
            "token for %s from %s: valid for %.0f s",
            self.service_name,
            self.endpoint.url,
            lifetime,
            extra={"fields": {"peer.service": self.service_name, "event": "token_fetched"}},
        )
        return True

    def _fetch_failed(self, error: Exception) -> None:
        """A fetch failed: with a valid token still held, try again later, not at every call."""
        now = self._clock.now()
        with self._lock:
            held = self._held
            left = 0.0 if held is None else held.token.expires_at - now
            if held is not None and left > 0:
                pause = max(left / 2, min(left, _MIN_REFRESH_PAUSE))
                self._held = _Held(held.token, now + pause)
        fields = {"peer.service": self.service_name, "event": "token_fetch_failed"}
        if left > 0:
            logger.warning(
                "token refresh for %s failed, the current token (%.0f s left) stays in use: %s",
                self.service_name,
                left,
                error,
                extra={"fields": fields},
            )
        else:
            logger.warning("no token for %s: %s", self.service_name, error, extra={"fields": fields})

    def _retire(self, token: Token) -> None:
        """Keep a replaced token masked for a while; forget the ones long expired (the lock is held)."""
        retired = self._retired
        retired.append(token)
        now = self._clock.now()
        while retired and (len(retired) > _MAX_RETIRED or retired[0].expires_at + _FORGET_AFTER <= now):
            forget_secret(retired.popleft().secret)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop for good, from any thread: fetches in flight are cancelled, tokens forgotten."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, None
            tokens = [*self._retired, *([] if held is None else [held.token])]
            self._retired.clear()
        for token in tokens:
            forget_secret(token.secret)
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for task in tuple(self._tasks):
            loop = task.get_loop()
            if loop is here:
                task.cancel()
            else:
                with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nothing running
                    loop.call_soon_threadsafe(task.cancel)
        if self.metrics is not None:
            self.metrics.unwatch(self)

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the fetches on this loop to end."""
        self.close()
        loop = asyncio.get_running_loop()
        here = [task for task in tuple(self._tasks) if task.get_loop() is loop]
        if here:
            await asyncio.gather(*here, return_exceptions=True)
