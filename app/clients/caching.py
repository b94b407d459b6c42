"""A client's calls through its upstream's response cache: keys, verdicts, one fetch per key, stale."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import BaseModel
from yarl import URL

from app.cache import (
    Action,
    CacheEntry,
    CacheKey,
    Headers,
    MemoryStore,
    cache_key,
    header_values,
    parse_cache_control,
)
from app.cache.response_cache import ResponseCache
from app.clients.config import ClientConfig
from app.clients.fallback import falls_back, mark_degraded, resolve
from app.clients.response import RawResponse
from app.errors import ClientError, ClientTimeoutError, ErrorContext, ResponseDecodeError
from app.observability.context import inbound_deadline_var, request_id_var
from app.resilience.pipeline import CallRecord

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping

    from app.cache.store import CacheStore
    from app.clients.base import BaseServiceClient
    from app.observability.metrics import MetricFamilies
    from app.resilience.clock import Clock
    from app.state import SharedState

__all__ = ["CACHED_METHODS", "CachedCall", "ClientCache", "cache_from_config", "credential_scope"]

logger = logging.getLogger("app.clients.cache")

#: Methods cached without being asked (``cache=True`` adds a call of another method).
CACHED_METHODS = frozenset({"GET", "HEAD"})

#: Request fields whose values are credentials: a Vary on them records only ``_CREDENTIAL``.
_CREDENTIAL_FIELDS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_CREDENTIAL = "<credential>"


def _own_validation(name: str) -> bool:
    """A request field that makes the call the caller's own conditional or range request."""
    lower = name.lower()
    return lower.startswith("if-") or lower == "range"


class _Target(NamedTuple):
    """Where a call's answer is stored: its key, the fields Vary matches, and whether it is authenticated."""

    key: CacheKey
    request_headers: Headers
    authenticated: bool


class CachedCall(NamedTuple):
    """A call's arguments as ``request()`` took them, for the fetch the cache makes (or shares)."""

    method: str
    endpoint: str
    url: URL
    params: Mapping[str, Any] | None
    json: Any
    headers: Mapping[str, str] | None
    path_params: Mapping[str, Any] | None
    timeout: float | None
    idempotent: bool | None
    idempotency_key: str | None

    async def _request(self, client: BaseServiceClient, **options: Any) -> Any:
        """The call through ``client.request`` with its own arguments and ``options``."""
        return await client.request(
            self.method,
            self.endpoint,
            params=self.params,
            json=self.json,
            headers=self.headers,
            path_params=self.path_params,
            idempotent=self.idempotent,
            idempotency_key=self.idempotency_key,
            **options,
        )

    async def send(self, client: BaseServiceClient, conditional: Mapping[str, str]) -> RawResponse:
        """The call through the client's pipeline, uncached, its response whole (``conditional`` sent too).

        The deadline is the client's own (``total_timeout_seconds``), not the first caller's:
        the fetch answers every caller that joins it, and each waits at most its own.
        """
        raw: RawResponse = await self._request(client, _conditional=conditional)
        return raw

    async def uncached(self, client: BaseServiceClient, fallback: Any, response_model: Any) -> Any:
        """The call as if there were no cache."""
        return await self._request(
            client, timeout=self.timeout, fallback=fallback, response_model=response_model, cache=False
        )


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def credential_scope(config: ClientConfig) -> tuple[str, frozenset[str]]:
    """Whose answers a client's calls get, as a digest (two credentials never share an entry), and its fields.

    An API key or a static bearer token by its value; OAuth2 client credentials by the
    client's identity at its token endpoint (its tokens change, the identity does not).
    The fields are the request headers that carry credentials (lower-case).
    """
    parts: list[str] = []
    fields = set(_CREDENTIAL_FIELDS)
    if config.api_key is not None:
        fields.add(config.api_key_header.lower())
        parts.append(f"{config.api_key_header.lower()}={config.api_key.get_secret_value()}")
    auth = config.auth
    if auth is not None:
        if auth.type == "oauth2_client_credentials":
            parts.append(f"oauth2={auth.token_url} {auth.client_id} {auth.scope} {auth.audience}")
        elif auth.type == "bearer":
            parts.append(f"bearer={auth.token.get_secret_value()}")
        else:
            fields.add(auth.header.lower())
            parts.append(f"{auth.header.lower()}={auth.key.get_secret_value()}")
    return (_digest("\n".join(parts)) if parts else ""), frozenset(fields)


def _content_type(headers: Headers) -> tuple[str, str | None]:
    """The media type and charset of a stored response's Content-Type."""
    values = header_values(headers, "content-type")
    if not values:
        return "application/octet-stream", None
    media, *params = values[0].split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media.strip().lower(), charset


def _raw(entry: CacheEntry) -> RawResponse:
    content_type, charset = _content_type(entry.headers)
    return RawResponse(entry.status, entry.headers, content_type, charset, entry.body)


class ClientCache:
    """One upstream's ``ResponseCache`` as its clients use it (shared by them, like the breaker).

    Per call: the key (method, URL with its query, credential scope; a marked POST's body
    digest too), the stored entry its Vary selects, and the verdict. A fresh entry answers
    at once: no bulkhead slot, no breaker trial, no upstream call. A stale one within
    ``stale-while-revalidate`` answers too, and one revalidation runs in the background.
    Otherwise one fetch per key goes through the client's pipeline (conditional when the
    entry has validators; a 304 freshens it), shared by every caller that arrives
    meanwhile. When that fetch fails as unavailable or timed out and the entry is within
    ``stale-if-error``, the entry answers, marked degraded like a fallback.
    """

    def __init__(
        self, store: CacheStore, service: str, families: MetricFamilies | None, clock: Clock
    ) -> None:
        self.cache = cache = ResponseCache(store, clock=clock, count=self.count)
        self.service = service
        self._families = families
        self._counters: dict[str, Any] = {}
        #: Every result counted so far, for the status API (the metrics have the same).
        self.results: dict[str, int] = {}
        if families is not None:
            families.cache_bytes.labels(service).set_function(lambda: cache.store.stats().bytes)

    def __repr__(self) -> str:
        return f"ClientCache({self.service!r}, {self.cache!r})"

    def count(self, result: str) -> None:
        """Count a lookup's result (``hit``, ``miss``, …) or a storing one (``stored``, ``not_stored:…``)."""
        results = self.results
        results[result] = results.get(result, 0) + 1
        families = self._families
        if families is None:
            return
        counter = self._counters.get(result)
        if counter is None:
            family, label = (
                (families.cache_stores, result)
                if result == "stored" or result.startswith("not_stored")
                else (families.cache_lookups, result)
            )
            counter = self._counters[result] = family.labels(self.service, label)
        counter.inc()

    def status(self) -> dict[str, Any]:
        """The cache as the status API and the dashboard show it: its store, and how calls were answered."""
        stats = self.cache.store.stats()
        results = self.results
        lookups = sum(results.get(r, 0) for r in ("hit", "miss", "stale", "revalidated", "stale_if_error"))
        served = sum(results.get(r, 0) for r in ("hit", "stale", "revalidated", "stale_if_error"))
        return {
            "store": self.cache.store.kind,
            "entries": stats.entries,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "store_failures": stats.failures,
            "hits": results.get("hit", 0),
            "misses": results.get("miss", 0),
            "revalidated": results.get("revalidated", 0),
            "stale": results.get("stale", 0),
            "stale_if_error": results.get("stale_if_error", 0),
            "stored": results.get("stored", 0),
            # Answered without the body crossing the network (a hit, a stale answer, a 304).
            "hit_ratio": round(served / lookups, 4) if lookups else None,
        }

    async def call(
        self, client: BaseServiceClient, call: CachedCall, fallback: Any, response_model: Any
    ) -> Any:
        """The call's answer: from the store when RFC 9111 allows it, else fetched once for every caller."""
        cache = self.cache
        target = self._cacheable(client, call)
        if target is None:
            return await call.uncached(client, fallback, response_model)
        key = target.key
        request_cc = parse_cache_control(header_values(target.request_headers, "cache-control"))
        entry = await cache.lookup(key, target.request_headers)
        serve_on_error = False
        if entry is not None:
            verdict = cache.assess(entry, request_cc)
            if verdict.action is Action.SERVE:
                self.count("hit")
                return await self._answer(client, call, key, _raw(entry), response_model)
            if verdict.action is Action.SERVE_STALE_AND_REVALIDATE:
                self.count("stale")
                cache.in_background(self._revalidate(client, call, target, entry))
                return await self._answer(client, call, key, _raw(entry), response_model)
            serve_on_error = verdict.serve_on_error
        else:
            self.count("miss")
        try:
            raw = await self._shared_fetch(client, call, target, entry)
        except ClientError as error:
            # Only an upstream that is unavailable or timed out is answered stale: the rule of
            # a fallback (``falls_back``), the entry standing in for one.
            if entry is not None and serve_on_error and falls_back(entry, error):
                self.count("stale_if_error")
                mark_degraded(self.service)
                return await self._answer(client, call, key, _raw(entry), response_model)
            if falls_back(fallback, error):
                metrics = client.observer.metrics
                if metrics is not None:
                    metrics.fallback()
                mark_degraded(self.service)
                return resolve(fallback, error)
            raise
        return await self._answer(client, call, key, raw, response_model)

    async def write(
        self, client: BaseServiceClient, call: CachedCall, fallback: Any, response_model: Any
    ) -> Any:
        """A call of an unsafe method: once it succeeds, what is stored for its URL is dropped (§4.4).

        Only the caller's own credential scope: another credential's entries are keyed apart
        and cannot be named from here.
        """
        result = await call.uncached(client, fallback, response_model)
        target = self._cacheable(client, call._replace(method="GET"))
        if target is None:
            return result
        store = self.cache.store
        for method in CACHED_METHODS:
            await store.remove(cache_key(method, target.key.url, target.key.scope))
        return result

    def _cacheable(self, client: BaseServiceClient, call: CachedCall) -> _Target | None:
        """Where the call's answer is stored; None for a call the cache leaves alone.

        That is the caller's own conditional or range request (its answer is the caller's
        to read), and a query a key cannot hold (the call itself then says why).
        """
        if call.headers and any(_own_validation(name) for name in call.headers):
            return None
        try:
            return self._target(client, call)
        except (TypeError, ValueError):
            return None

    def _target(self, client: BaseServiceClient, call: CachedCall) -> _Target:
        """The call's key, the request fields Vary is matched on, and whether it carries a credential."""
        url = call.url.extend_query(call.params) if call.params else call.url
        scope, credential_fields = client.cache_scope
        given = {name.lower(): value for name, value in client.fixed_headers.items()}
        if call.headers:
            given.update((name.lower(), value) for name, value in call.headers.items())
            own = sorted(name.lower() for name in call.headers if name.lower() in credential_fields)
            if own:  # the call sends a credential of its own: its answers are that credential's
                scope = _digest(scope + "\n" + "\n".join(f"{name}={given[name]}" for name in own))
        authenticated = bool(scope)
        if call.method not in CACHED_METHODS:
            body = (
                call.json.model_dump_json() if isinstance(call.json, BaseModel) else orjson.dumps(call.json)
            )
            body_bytes = body.encode() if isinstance(body, str) else body
            scope += "\nbody=" + hashlib.sha256(body_bytes).hexdigest()
        # What Vary is matched on. A credential only as a marker: the scope already keeps
        # credentials apart, and no trace of one (not even a digest) is ever stored.
        request_headers = tuple(
            (name, _CREDENTIAL if name in credential_fields else value) for name, value in given.items()
        )
        return _Target(cache_key(call.method, str(url), scope), request_headers, authenticated)

    async def _shared_fetch(
        self, client: BaseServiceClient, call: CachedCall, target: _Target, entry: CacheEntry | None
    ) -> RawResponse:
        """One fetch for every caller of this key (per event loop), each waiting at most its own deadline."""
        loop = asyncio.get_running_loop()
        flight_key = (target.key, loop, tuple(sorted(call.headers.items())) if call.headers else ())
        fetch: Coroutine[Any, Any, RawResponse] = self.cache.flights.run(
            flight_key, lambda: self._fetch(client, call, target, entry)
        )
        deadline = client._deadline(call.timeout)
        if not deadline.bounded:
            return await fetch
        left = max(0.0, deadline.remaining())
        try:
            return await asyncio.wait_for(fetch, left)
        except TimeoutError:
            error = ClientTimeoutError(
                "deadline exceeded waiting for a shared fetch",
                attempts=0,
                service_name=self.service,
                method=call.method,
                endpoint=call.endpoint,
            )
            # This caller's own call ends here (the fetch goes on for the others): counted and
            # logged as every call that ends.
            record = CallRecord(self.service, call.method, call.endpoint, request_id_var.get() or "")
            client.observer.call_ended(record, left, error)
            try:
                raise error from None
            finally:
                del error  # its traceback holds this frame: no reference cycle through it

    async def _fetch(
        self, client: BaseServiceClient, call: CachedCall, target: _Target, entry: CacheEntry | None
    ) -> RawResponse:
        """The upstream call, conditional when ``entry`` has validators; its answer stored when it may be."""
        cache, wall, key = self.cache, self.cache.wall, target.key
        # The fetch runs in a task of its own for every caller that joins it: the first
        # caller's inbound deadline is not theirs (each waits at most its own).
        inbound_deadline_var.set(None)
        request_time = wall.time()
        raw = await call.send(client, cache.conditional(entry))
        response_time = wall.time()
        if raw.status == 304:
            if entry is not None:
                fresh = await cache.not_modified(
                    key, entry, raw.headers, request_time=request_time, response_time=response_time
                )
                if fresh is not None:
                    self.count("revalidated")
                    return _raw(fresh)
            # A 304 that is not about what is stored: ask again, unconditionally (§4.3.4).
            request_time = wall.time()
            raw = await call.send(client, {})
            response_time = wall.time()
            if raw.status == 304:
                raise ResponseDecodeError(
                    "304 Not Modified to an unconditional request",
                    status=304,
                    service_name=self.service,
                    method=call.method,
                    endpoint=call.endpoint,
                )
        await cache.store_response(
            key,
            status=raw.status,
            response_headers=raw.headers,
            body=raw.body,
            request_headers=target.request_headers,
            request_time=request_time,
            response_time=response_time,
            authenticated=target.authenticated,
        )
        return raw

    async def _revalidate(
        self, client: BaseServiceClient, call: CachedCall, target: _Target, entry: CacheEntry
    ) -> None:
        """Revalidate a stale entry after it was served (stale-while-revalidate); a failure is logged only."""
        try:
            await self._shared_fetch(client, call, target, entry)
        except ClientError as error:  # the call itself was counted and logged as it ended
            logger.debug("background revalidation of %s failed: %s", target.key, type(error).__name__)

    async def _answer(
        self,
        client: BaseServiceClient,
        call: CachedCall,
        key: CacheKey,
        raw: RawResponse,
        response_model: Any,
    ) -> Any:
        """The caller's own copy of the answer, decoded (or validated) from the bytes."""
        context: ErrorContext = {
            "service_name": self.service,
            "method": call.method,
            "endpoint": call.endpoint,
        }
        try:
            if response_model is None:
                return raw.value(context)
            record = CallRecord(self.service, call.method, call.endpoint, "")
            record.status = raw.status
            # From the bytes: a typed answer is parsed by pydantic once, not decoded first.
            return client.check_answer(response_model, raw, raw.status, record)
        except ResponseDecodeError:
            await self.cache.store.remove(key)  # served again it would fail again
            raise


def cache_from_config(
    config: ClientConfig,
    clock: Clock,
    families: MetricFamilies | None,
    shared_state: SharedState | None,
) -> ClientCache | None:
    """The upstream's response cache when ``cache_enabled``: in memory, or in Redis when asked for."""
    if not config.cache_enabled:
        return None
    store: CacheStore
    if config.cache_store == "redis" and shared_state is not None:
        from app.cache.redis_store import RedisStore  # noqa: PLC0415 - only with Redis in use

        store = RedisStore(shared_state, config.service_name, max_bytes=config.cache_max_bytes, clock=clock)
    else:
        store = MemoryStore(config.cache_max_bytes)
    return ClientCache(store, config.service_name, families, clock)
