"""AsyncProvide: dependency-injector's ``Provide`` marker, resolved by FastAPI on the event loop."""

# No `from __future__ import annotations`: FastAPI reads ``__call__``'s ``Request`` from
# its signature, and a string annotation would not resolve in this module's namespace.

import weakref
from typing import Any

from dependency_injector import providers
from dependency_injector.wiring import Provide, ProvidersMap
from starlette.requests import Request

__all__ = ["AsyncProvide"]


class AsyncProvide(Provide):  # type: ignore[misc,valid-type]
    """``Provide[...]`` that FastAPI resolves itself, from the app's own container.

    The stock marker's ``__call__`` is sync, so FastAPI ran it in its threadpool (a thread
    hop per request), and ``@inject`` then resolved the provider: for an async Resource
    (the lifespan's clients) through ``asyncio.gather``, a Task and an extra loop pass per
    request, ~200k instructions. Here the marker finds its provider in the container of
    the app serving the request (``app.state.container``, set by ``create_app``) once,
    and per request calls it: an opened Resource answers with a finished future, awaited
    without a loop pass. ``@inject`` sees a value, not a marker, and leaves it alone.
    ``provider.override()`` works as before: the provider call honours it. An app without
    a container in its state gets the marker back, for ``@inject`` to resolve as before.
    """

    def __init__(self, provider: Any, modifier: Any = None) -> None:
        super().__init__(provider, modifier)
        # Per container: the provider this marker names in it (containers are few, and
        # a test's container is dropped with its app).
        self._bound: weakref.WeakKeyDictionary[Any, providers.Provider[Any] | None] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self, request: Request) -> Any:
        """The provider's value in the app's container (the marker itself without one)."""
        container = getattr(request.app.state, "container", None)
        if container is None:
            return self
        try:
            provider = self._bound[container]
        except KeyError:
            provider = self._bound[container] = ProvidersMap(container).resolve_provider(
                self.provider, self.modifier
            )
        if provider is None:
            return self
        value = provider()
        if provider.is_async_mode_enabled() or hasattr(value, "__await__"):
            value = await value
        return value
