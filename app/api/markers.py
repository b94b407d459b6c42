"""AsyncProvide: dependency-injector's ``Provide`` marker, resolved by FastAPI on the event loop."""

# No `from __future__ import annotations`: FastAPI reads ``__call__``'s ``HTTPConnection`` from
# its signature, and a string annotation would not resolve in this module's namespace.

import inspect
from asyncio import Future
from typing import Any

from dependency_injector import providers
from dependency_injector.wiring import Provide, ProvidersMap
from starlette.requests import HTTPConnection

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

    Declare it with ``Depends(marker, scope="request")`` (as ``app.api.deps`` does): a
    dependency without a declared scope makes FastAPI classify its callable again on every
    request, to compute one (~9k instructions); ``"request"``, not ``"function"``, so that
    a generator dependency of the default (request) scope may still depend on it.
    """

    async def __call__(self, connection: HTTPConnection) -> Any:
        """The provider's value in the app's container (the marker itself without one).

        ``HTTPConnection``: FastAPI passes it to HTTP and WebSocket routes alike.
        """
        # Per request, this is DI's share of the route's cost, so each step is the cheap
        # spelling of it: ``scope["app"]``, not the ``.app`` property (a Python call), and
        # ``state["container"]``, not ``state.container``, which fails the normal lookup
        # first and formats an AttributeError message before ``State.__getattr__`` (~5k).
        try:
            container = connection.scope["app"].state["container"]
        except KeyError:
            return self
        if container is None:
            return self
        # The bindings live on the container, and go with it: a map of containers held
        # by the (module-level) marker would keep every container it served alive.
        bound: dict[AsyncProvide, providers.Provider[Any] | None] | None = getattr(container, _BOUND, None)
        if bound is None:
            bound = {}
            setattr(container, _BOUND, bound)
        try:
            provider = bound[self]
        except KeyError:
            provider = bound[self] = ProvidersMap(container).resolve_provider(self.provider, self.modifier)
        if provider is None:
            return self
        value = provider()
        # An opened async Resource's answer is a Future: told by its class, without the
        # call to dependency-injector's own test of what to await (``isawaitable``),
        # which the other answers still get.
        if value.__class__ is Future or inspect.isawaitable(value):
            value = await value
        return value


#: The container attribute holding each marker's provider in that container.
_BOUND = "_async_provide_bound"
