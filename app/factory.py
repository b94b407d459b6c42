"""The factory path, for code without DI: shared clients backed by the container's singletons.

Who closes what:

- A **shared client** (``get_analysis_engine_client()``, ``get_client(cls, name)`` without
  ``config_override``) belongs to the factory, because every caller in the process gets
  the same object. Its ``close()``, ``close_sync()``, ``async with`` and ``with`` do
  nothing, so no caller can close it under the others. The factory closes it: when the
  event loop its async calls ran on ends (``asyncio.run``, uvicorn and pytest-asyncio all
  cancel the loop's tasks on the way out, and a task of the factory's closes the session
  then), at interpreter exit for the sync twins' session, or at once with ``await
  close_factory_clients()`` (needed on a loop closed by hand, without cancelling its
  tasks). After that, the next ``get_*`` call gives a new shared client.
- A client made with ``config_override`` has policies of its own and belongs to the
  caller, like any client built by hand: close it (``async with``, ``with``, ``close()``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.base import BaseServiceClient
from app.clients.config import ClientConfig
from app.clients.ml_workbench import MLWorkbenchClient
from app.containers import Container

__all__ = [
    "close_factory_clients",
    "get_analysis_engine_client",
    "get_client",
    "get_ml_workbench_client",
    "register_client_config",
    "reset_factory",
    "use_container",
]

C = TypeVar("C", bound=BaseServiceClient)

_lock = threading.RLock()
_container: Container | None = None
_registered: dict[str, ClientConfig] = {}
#: The shared client handed out for each (class, service); a closed one is dropped.
_clients: dict[tuple[type[BaseServiceClient], str], _SharedClient] = {}
#: Every shared client not yet closed, handed out or not any more (reset_factory and
#: re-registration forget the cache, not the duty to close what is still open).
_open: set[_SharedClient] = set()
#: Per event loop, the shared clients whose async session lives there, and the task
#: that closes them when the loop's tasks are cancelled at its end.
_loop_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch] = weakref.WeakKeyDictionary()
_atexit_registered = False


class _LoopWatch:
    """The shared clients used on one loop, and the task that closes them at the loop's end."""

    __slots__ = ("clients", "task")

    def __init__(self, task: asyncio.Task[None], clients: set[_SharedClient]) -> None:
        self.task = task  # held here: a loop keeps only weak references to its tasks
        self.clients = clients


class _SharedClient(BaseServiceClient):
    """The factory-owned side of a shared client; the factory mixes it into the service's class."""

    #: The event loop this client's async calls run on; its session is bound to it.
    _factory_loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        """Does nothing: a shared client is the factory's (see ``close_factory_clients``)."""

    def close_sync(self) -> None:
        """Does nothing: a shared client is the factory's (see ``close_factory_clients``)."""

    async def request(self, method: str, endpoint: str, **options: Any) -> Any:
        """As :meth:`BaseServiceClient.request`; the first call on a loop arranges the session's close."""
        loop = asyncio.get_running_loop()
        # The sync twins run on the client's own loop thread, which closes that session itself.
        if loop is not self._factory_loop and loop is not self._sync.loop:
            _close_at_end_of(loop, self)
        return await super().request(method, endpoint, **options)


_shared_classes: dict[type[BaseServiceClient], type[_SharedClient]] = {}


def _shared_class(client_class: type[C]) -> type[C]:
    """``client_class`` with the factory's ownership (_SharedClient) mixed in, made once."""
    shared = _shared_classes.get(client_class)
    if shared is None:
        namespace = {"__module__": __name__, "__doc__": f"A factory-owned, shared {client_class.__name__}."}
        made = type(f"Shared{client_class.__name__}", (_SharedClient, client_class), namespace)
        shared = _shared_classes[client_class] = cast(type[_SharedClient], made)
    return cast(type[C], shared)


def _close_at_end_of(loop: asyncio.AbstractEventLoop, client: _SharedClient) -> None:
    with _lock:
        home = client._factory_loop
        if home is not None and home is not loop and not home.is_closed():
            # An aiohttp session serves one loop; a second loop would fail deep inside it.
            raise RuntimeError(
                f"{client!r} is shared on another event loop; on this one, use a client "
                "of your own (config_override=...) and close it"
            )
        client._factory_loop = loop
        watch = _loop_watches.get(loop)
        if watch is None:
            clients: set[_SharedClient] = set()
            # Created before the call sends anything, so the task has started (and is inside
            # its try) by the time the loop's tasks are cancelled.
            task = loop.create_task(
                _close_when_cancelled(loop, clients), name="factory: close shared clients"
            )
            watch = _loop_watches[loop] = _LoopWatch(task, clients)
        watch.clients.add(client)


async def _close_when_cancelled(loop: asyncio.AbstractEventLoop, clients: set[_SharedClient]) -> None:
    """Wait for the loop's end (its tasks cancelled), then close its shared clients' sessions."""
    try:
        await loop.create_future()  # never set: only cancellation ends the wait
    finally:
        with _lock:
            _loop_watches.pop(loop, None)
            owned = list(clients)
        for client in owned:
            await _close(client)


def _forget(client: _SharedClient) -> None:
    """Make sure no one is handed ``client`` again, and that exit does not close it twice."""
    with _lock:
        _open.discard(client)
        for key in [k for k, v in _clients.items() if v is client]:
            del _clients[key]


async def _close(client: _SharedClient) -> None:
    """Really close a shared client (on the loop its async session belongs to)."""
    _forget(client)
    await BaseServiceClient.close(client)


def _close_at_exit() -> None:
    """At interpreter exit: close the sync twins' sessions of the shared clients still open.

    Their loop thread is a daemon and still runs while atexit handlers do. An async
    session whose loop ended without its tasks being cancelled cannot be closed any more.
    """
    with _lock:
        left = list(_open)
        _open.clear()
    for client in left:
        # RuntimeError: an exit from inside a running loop, where a blocking close would hang.
        with contextlib.suppress(RuntimeError):
            BaseServiceClient.close_sync(client)


async def close_factory_clients() -> None:
    """Close every shared client now; the next ``get_*`` call makes a new one.

    Await it where your program shuts down, if you want the sessions closed before the
    event loop ends (``asyncio.run`` and uvicorn close them then anyway), and always on a
    loop you close by hand (``loop.close()`` without cancelling its tasks first). From
    sync code: ``asyncio.run(close_factory_clients())``. Clients made with
    ``config_override`` are yours, not the factory's, and are not touched.
    """
    loop = asyncio.get_running_loop()
    with _lock:
        clients = list(_open)
        watch = _loop_watches.pop(loop, None)
    if watch is not None:
        # Its clients are closed below; a loop closed with the task still pending would
        # log "Task was destroyed but it is pending".
        watch.task.cancel()
        await asyncio.wait({watch.task})
    for client in clients:
        home = client._factory_loop
        if home is None or home is loop:
            await _close(client)
        elif home.is_closed():
            # Its loop was closed by hand, without cancelling its tasks: that session is
            # lost with it, and only the sync side can still be closed (blocking, so off
            # this loop).
            _forget(client)
            await asyncio.to_thread(BaseServiceClient.close_sync, client)
        else:
            # Its session belongs to a loop running in another thread: close it there.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_close(client), home))


def _default_container() -> Container:
    global _container  # noqa: PLW0603 - the process-wide default, created on first use
    with _lock:
        if _container is None:
            _container = Container()
        return _container


def use_container(container: Container) -> None:
    """Make ``container`` the one the factory path reads (``create_app`` calls this)."""
    global _container  # noqa: PLW0603
    with _lock:
        _container = container
        _clients.clear()


def reset_factory() -> None:
    """Forget the default container, registrations and cached clients (for tests).

    Shared clients already handed out are still closed by the factory, as above.
    """
    global _container  # noqa: PLW0603
    with _lock:
        _container = None
        _registered.clear()
        _clients.clear()


def _upstream(container: Container, service_name: str) -> tuple[str, Any]:
    """The canonical name (the upstream's, for the container's) and its sub-container, or None."""
    found: tuple[str, Any] | None = container.upstreams().find(service_name)
    return found if found is not None else (service_name, None)


def register_client_config(name: str, config: ClientConfig | Mapping[str, Any]) -> None:
    """Register the config of a service by name; for one of the container's upstreams, re-point it.

    The container's upstreams are every one in the settings (``APP_UPSTREAMS__<NAME>__...``
    included), found by name or ``service_name``. Any other name is the factory's alone,
    with policies of its own. The next ``get_client`` for ``name`` gives a new shared
    client with this config.
    """
    cfg = config if isinstance(config, ClientConfig) else ClientConfig.model_validate(config)
    with _lock:
        name, sub = _upstream(_default_container(), name)
        if sub is not None:
            sub.config.override(cfg)
            sub.reset_singletons()
        else:
            _registered[name] = cfg
        for key in [k for k in _clients if k[1] == name]:
            del _clients[key]


def _merge(base: ClientConfig, override: ClientConfig | Mapping[str, Any]) -> ClientConfig:
    if isinstance(override, ClientConfig):
        return override
    return ClientConfig.model_validate({**base.model_dump(), **override})


def get_client(
    client_class: type[C],
    service_name: str,
    config_override: ClientConfig | Mapping[str, Any] | None = None,
) -> C:
    """The shared client of ``service_name``, or a client of your own for ``config_override``.

    ``service_name`` is an upstream's name (``"pricing"`` for ``APP_UPSTREAMS__PRICING__...``)
    or its ``service_name``, or a name given to ``register_client_config``.

    The shared client uses the container's breaker, bulkhead and retry singletons, so
    failures seen here and through DI trip the same breaker. It is the factory's: do not
    close it (closing it does nothing); the factory closes it when the event loop it ran
    on ends, at exit, or on ``await close_factory_clients()``. It serves one event loop at
    a time; get it again (from the factory, not a variable) after that loop has ended: the
    old one raises ``ClientClosedError``.

    With ``config_override`` (a ClientConfig or a partial mapping over the service's
    config) the client is new, with its own policies, and yours to close:
    ``async with get_client(cls, name, {...}) as client: ...``.

    While a test overrides the container's client of that upstream
    (``app.clients.testing.override_client``), the shared client is that override.
    """
    with _lock:
        container = _default_container()
        service_name, sub = _upstream(container, service_name)
        if sub is not None:
            # The policies' config follows each reload; the provider's is the start-up one.
            base = sub.policies().config or sub.config()
        elif service_name in _registered:
            base = _registered[service_name]
        else:
            known = sorted([*container.upstreams(), *_registered])
            raise KeyError(f"unknown service {service_name!r}; known: {', '.join(known)}")
        if config_override is not None:
            return client_class(_merge(base, config_override))
        override = sub.client.last_overriding if sub is not None else None
        if override is not None:
            # Test mode: the fake stands in on the factory path too. Called directly, as
            # the async Resource would hand it out wrapped in a future.
            return cast(C, override())
        key = (client_class, service_name)
        client = _clients.get(key)
        if client is None:
            # A container upstream's client shares its policies; a registered one has its own.
            policies = sub.policies() if sub is not None else None
            client = cast(_SharedClient, _shared_class(client_class)(base, policies=policies))
            _clients[key] = client
            _open.add(client)
            _register_atexit()
        return cast(C, client)


def _register_atexit() -> None:
    global _atexit_registered  # noqa: PLW0603 - once per process
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True


def get_analysis_engine_client(
    config_override: ClientConfig | Mapping[str, Any] | None = None,
) -> AnalysisEngineClient:
    """The shared Analysis Engine client, or one of your own (see :func:`get_client`)."""
    return get_client(AnalysisEngineClient, "analysis_engine", config_override)


def get_ml_workbench_client(
    config_override: ClientConfig | Mapping[str, Any] | None = None,
) -> MLWorkbenchClient:
    """The shared ML Workbench client, or one of your own (see :func:`get_client`)."""
    return get_client(MLWorkbenchClient, "ml_workbench", config_override)
