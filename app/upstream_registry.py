"""UpstreamRegistry: every upstream's sub-container by name, built from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from dependency_injector import containers, providers

from app.clients.registry import client_class_for
from app.observability.status import DependencyView
from settings import Settings

__all__ = ["UpstreamRegistry", "open_configured_upstreams"]


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
        self._entries: dict[str, Any] = {}
        for name, config in settings.upstreams.items():
            if name in declared:
                self._entries[name] = declared[name]
                continue
            if hasattr(self.configured, name):
                # The name would shadow a method of the container that opens it.
                raise ValueError(f"upstream name {name!r} is reserved by dependency-injector; pick another")
            sub = providers.Container(
                container_class,
                config=providers.Object(config),
                client_class=providers.Object(client_class_for(name)),
                essential=providers.Object(settings.is_essential(name)),
                shared_state=providers.Object(shared_state),
            )
            self.configured.set_provider(name, sub)
            self._entries[name] = sub.container

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


async def open_configured_upstreams(registry: UpstreamRegistry) -> AsyncIterator[UpstreamRegistry]:
    """Open the sessions and clients of the upstreams known only from the settings; close them at the end."""
    opening = registry.configured.init_resources()
    if opening is not None:
        await opening
    try:
        yield registry
    finally:
        closing = registry.configured.shutdown_resources()
        if closing is not None:
            await closing
