"""UpstreamRegistry: every upstream's sub-container by name, built from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from dependency_injector import containers, providers

from app.clients.reconfigure import reconfigure_problems
from app.clients.registry import client_class_for
from app.observability.status import DependencyView
from settings import Settings
from settings.loader import env_names

__all__ = ["UpstreamRegistry", "open_configured_upstreams"]

log = logging.getLogger("app.upstreams")

#: How often a removed upstream is looked at while its calls in flight finish.
_DRAIN_POLL_SECONDS = 0.05


class UpstreamRegistry(Mapping[str, Any]):
    """Each upstream of ``settings.upstreams`` by name, as an ``UpstreamContainer``.

    - The container's declared upstreams (``declared``: the gateway's own, which its
      routes are bound to at import) are entries as they are: the lifespan already
      opens them.
    - Every other configured upstream gets a sub-container of ``container_class`` here,
      in ``configured``: a ``DynamicContainer`` filled from the settings, the idiom
      dependency-injector documents for a structure known only from configuration. Its
      ``init_resources()`` / ``shutdown_resources()`` open and close exactly those
      (``open_configured_upstreams``, a Resource of the container's lifespan).

    Entries keep the settings' order: the gateway's own first, then the others by name.
    Each has the config, client class (``client_class_for(name)``, see
    ``app.clients.registry``) and ``essential`` flag the settings give.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        declared: Mapping[str, Any],
        container_class: type[containers.DeclarativeContainer],
        shared_state: Any = None,
    ) -> None:
        self.configured = containers.DynamicContainer()
        self._container_class = container_class
        self._shared_state = shared_state
        self._entries: dict[str, Any] = {}
        #: Opening an added upstream, draining and closing a removed one (see ``reconfigure``).
        self._changes: set[asyncio.Task[None]] = set()
        for name, config in settings.upstreams.items():
            if name in declared:
                self._entries[name] = declared[name]
            else:
                self._add(name, config, settings)

    def _add(self, name: str, config: Any, settings: Settings) -> Any:
        if hasattr(self.configured, name):
            # The name would shadow a method of the container that opens it.
            raise ValueError(f"upstream name {name!r} is reserved by dependency-injector; pick another")
        sub = providers.Container(
            self._container_class,
            config=providers.Object(config),
            client_class=providers.Object(client_class_for(name)),
            essential=providers.Object(settings.is_essential(name)),
            shared_state=providers.Object(self._shared_state),
        )
        self.configured.set_provider(name, sub)
        self._entries[name] = sub.container
        return sub.container

    def __getitem__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no upstream {name!r}; configured: {', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"UpstreamRegistry({', '.join(self._entries)})"

    def find(self, name: str) -> tuple[str, Any] | None:
        """The entry called ``name``, or whose ``service_name`` is ``name``, with its name."""
        if name in self._entries:
            return name, self._entries[name]
        for key, sub in self._entries.items():
            if sub.config().service_name == name:
                return key, sub
        return None

    def client(self, name: str) -> Any:
        """The client of ``name`` as its provider gives it (an awaitable, for the lifespan's Resource)."""
        return self[name].client()

    def views(self) -> list[DependencyView]:
        """Every upstream's live status, in the registry's order."""
        return [sub.view() for sub in self._entries.values()]

    # -- live configuration (the config store's check and apply) -----------------------

    def reconfigure_problems(self, old: Settings, new: Settings) -> list[str]:
        """Why ``new``'s upstreams cannot be applied in place: one line per field, naming its variable."""
        problems: list[str] = []
        for name, config in new.upstreams.items():
            before = old.upstreams.get(name)
            if before is None:
                if hasattr(self.configured, name) and name not in self._entries:
                    problems.append(
                        f"upstream name {name!r} is reserved by dependency-injector; pick another"
                    )
                continue
            problems += reconfigure_problems(before, config, name, env_name=_env_name(name))
        return problems

    def reconfigure(self, old: Settings, new: Settings) -> None:
        """Apply ``new``'s upstreams in place: the same clients, policies and connections go on.

        A changed upstream's policies and every client on them take the new config (each
        keeping its state: ``BaseServiceClient.reconfigure``); an added one is built and
        opened in the background; a removed one leaves the registry at once (no new call
        finds it) and is closed once its calls in flight have finished, or after its
        longest call's deadline. Readiness follows the new ``essential_dependencies``.
        Runs in the event loop (the config store's reload does), and never awaits.
        """
        for name, config in new.upstreams.items():
            before = old.upstreams.get(name)
            if before is None:
                sub = self._add(name, config, new)
                self._in_background(sub.init_resources(), f"opening upstream {name}")
            elif before != config:
                self._reconfigure(self._entries[name], config)
        for name in [n for n in old.upstreams if n not in new.upstreams and n in self._entries]:
            sub = self._entries.pop(name)
            self._in_background(
                self._drain_and_close(name, sub, old.upstreams[name]), f"closing upstream {name}"
            )
        for name, sub in self._entries.items():
            sub.view().essential = new.is_essential(name)

    @staticmethod
    def _reconfigure(sub: Any, config: Any) -> None:
        policies = sub.policies()
        for client in policies.clients():
            client.reconfigure(config)
        policies.reconfigure(config)  # with no client yet (and a no-op after one did it)

    async def _drain_and_close(self, name: str, sub: Any, config: Any) -> None:
        clients = sub.policies().clients()
        # A call admitted now ends by its own deadline at the latest; waiting past it helps
        # nothing. Each client's own calls, wherever they wait (a rate limiter, the
        # bulkhead's queue, the upstream), not the bulkhead's count alone.
        limit = config.total_timeout_seconds or config.timeout_seconds * (config.max_retries + 1)
        for _ in range(int(limit / _DRAIN_POLL_SECONDS) + 1):
            if not any(client.calls_in_flight for client in clients):
                break
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        closing = sub.shutdown_resources()
        if closing is not None:
            await closing
        with contextlib.suppress(AttributeError):
            delattr(self.configured, name)
        log.info("upstream %s removed by a reload, closed", name)

    def _in_background(self, work: Awaitable[None] | None, what: str) -> None:
        if work is None:
            return

        async def run() -> None:
            try:
                await work
            except Exception:  # one upstream failing to open or close must not stop the others
                log.exception("config: %s failed", what)

        task = asyncio.get_running_loop().create_task(run(), name=what)
        self._changes.add(task)
        task.add_done_callback(self._changes.discard)

    async def settled(self) -> None:
        """Wait for every upstream a reload is opening or closing (the lifespan's end, tests)."""
        while self._changes:
            await asyncio.wait(set(self._changes))


def _env_name(upstream: str) -> Callable[[str], str]:
    """How the settings name a field of ``upstream``: its section's variable and the generic one."""
    return lambda field: env_names(("upstreams", upstream, field))


async def open_configured_upstreams(registry: UpstreamRegistry) -> AsyncIterator[UpstreamRegistry]:
    """Open the sessions and clients of the upstreams known only from the settings; close them at the end."""
    opening = registry.configured.init_resources()
    if opening is not None:
        await opening
    try:
        yield registry
    finally:
        await registry.settled()
        closing = registry.configured.shutdown_resources()
        if closing is not None:
            await closing
