"""InjectedRoute: a FastAPI route that hands its container markers their request itself."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from dependency_injector import wiring
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from app.api.markers import AsyncProvide

__all__ = ["InjectedRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

#: The name the request goes to the endpoint's stand-in under, when the endpoint takes none.
_REQUEST = "_injected_route_request"

# FastAPI (0.165) builds an included route's handler with the inclusion's own state (the
# router's prefix and dependencies) in this variable, for ``get_route_handler`` to read; an
# older FastAPI has none, and reads the route itself.
_EFFECTIVE_ROUTE = getattr(fastapi_routing, "_effective_route_context_var", None)
# The error context FastAPI gives a validation error, cached by the endpoint's id; the
# stand-in's entry is the function under the endpoint's decorators, so that errors name
# the route's own file (FastAPI's own handler names @inject's, from dependency-injector).
_ENDPOINT_CONTEXTS: dict[int, Any] | None = getattr(fastapi_routing, "_endpoint_context_cache", None)
# dependency-injector's record of what each ``@inject`` wrapper injects.
_PATCHED = getattr(wiring, "_patched_registry", None)


class InjectedRoute(APIRoute):
    """An ``APIRoute`` whose ``AsyncProvide`` dependencies skip FastAPI's dependency solving.

    FastAPI solves each ``Depends`` with a recursive ``solve_dependencies`` (its parameters
    read, a cache key, a result object), and ``@inject`` then wraps the call in
    dependency-injector's resolver: ~65k instructions a request for one injected client,
    as much as the client's own work over raw aiohttp. This route takes the markers out
    of the dependant its handler solves and hands them the request itself, in a stand-in
    for the endpoint; the endpoint itself is called past ``@inject`` when every marker
    ``@inject`` knows of has been resolved to a value (otherwise through it, as before).

    Everything else is FastAPI's own handler: parameters, body, 422s, other dependencies
    (router-level ones too), background tasks, the response model. Left to FastAPI, as
    declared: a marker it would share with another dependency (it appears twice in the
    route's tree), one under ``max_concurrency``, and a subclass asking for more than the
    connection (or sync). A request while ``app.dependency_overrides`` holds anything (read
    as the request starts) takes FastAPI's unchanged handler: an override may replace a
    marker, or depend on one. Overriding the container's provider (``container.x.override()``)
    needs neither: the marker calls the provider, which honours it.

    What differs from FastAPI's route, on purpose:

    * the markers are resolved last, after the parameters are validated and the other
      dependencies solved (FastAPI: in declaration order, before the parameters), so a bad
      request gets its 422 without a provider being called;
    * so FastAPI's own tracing counts a provider's time in the endpoint's span, not the
      dependencies', and its telemetry's values hold the request, not the markers' values;
    * a validation error names the route's own function and file (FastAPI's route names
      ``@inject``'s wrapper's file, in dependency-injector).

    Use it as a router's ``route_class`` (the gateway's routers do).
    """

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, and, when the route has markers to hand, the faster one."""
        full = super().get_route_handler()
        route = _effective(self)
        markers_handed = _without_markers(route.dependant)
        if markers_handed is None:
            return full
        original = route.dependant
        route.dependant = markers_handed
        try:
            fast = super().get_route_handler()
        finally:
            route.dependant = original
        provider = route.dependency_overrides_provider
        if provider is None:
            return fast

        async def handler(request: Request) -> Response:
            if provider.dependency_overrides:
                return await full(request)
            return await fast(request)

        return handler


def _effective(route: APIRoute) -> Any:
    """What FastAPI's ``get_route_handler`` reads: the inclusion's state of ``route``, or ``route``."""
    if _EFFECTIVE_ROUTE is not None:
        context = _EFFECTIVE_ROUTE.get()
        if context is not None and context.original_route is route:
            return context
    return route


def _calls(dependant: Dependant) -> Iterator[Any]:
    """Every dependency's callable in ``dependant``'s tree, each time it appears."""
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _without_markers(dependant: Dependant) -> Dependant | None:
    """The dependant without its markers, calling a stand-in that resolves them; ``None`` without any."""
    endpoint = dependant.call
    # A sync endpoint runs in FastAPI's threadpool: a coroutine stand-in would run it on the loop.
    if endpoint is None or not inspect.iscoroutinefunction(endpoint):
        return None
    calls = list(_calls(dependant))
    markers: list[tuple[str, AsyncProvide]] = []
    kept: list[Dependant] = []
    for sub in dependant.dependencies:
        # Once in the tree: FastAPI would share a marker's value between its uses.
        handed = _handed(sub)
        if handed is not None and sum(c is sub.call for c in calls) == 1:
            markers.append(handed)
        else:
            kept.append(sub)
    if not markers:
        return None
    key = dependant.request_param_name or _REQUEST
    if key == _REQUEST and key in _names(dependant):
        return None
    return dataclasses.replace(
        dependant, dependencies=kept, call=_stand_in(endpoint, tuple(markers), key), request_param_name=key
    )


def _handed(sub: Dependant) -> tuple[str, AsyncProvide] | None:
    """``sub``'s name and marker, if the stand-in can resolve it as FastAPI would: nothing else asked."""
    marker, name = sub.call, sub.name
    if name is None or not isinstance(marker, AsyncProvide) or sub.concurrency is not None:
        return None  # concurrency: Depends(max_concurrency=...), FastAPI's semaphore
    # A subclass may ask for more than the connection, which only FastAPI's solving supplies,
    # or be sync (FastAPI runs it in its threadpool).
    if _fields(sub) or any(_specials(sub)) or sub.dependencies:
        return None
    if (sub.http_connection_param_name is None) == (sub.request_param_name is None):
        return None  # not exactly one parameter for the connection
    if not inspect.iscoroutinefunction(type(marker).__call__):
        return None
    return name, marker


def _fields(dependant: Dependant) -> list[Any]:
    """``dependant``'s parameters read from the request: path, query, headers, cookies, body."""
    d = dependant
    return [*d.path_params, *d.query_params, *d.header_params, *d.cookie_params, *d.body_params]


def _specials(dependant: Dependant) -> list[str | None]:
    """The names of ``dependant``'s parameters FastAPI fills itself, but for the request and connection."""
    return [
        dependant.websocket_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    ]


def _names(dependant: Dependant) -> set[str | None]:
    """Every name ``dependant`` gives the values its endpoint is called with."""
    subs = {sub.name for sub in dependant.dependencies}
    return (
        {f.name for f in _fields(dependant)}
        | subs
        | {*_specials(dependant), dependant.http_connection_param_name}
    )


#: One stand-in per endpoint, markers and request key: kept, so that rebuilding a route (every
#: app, every inclusion) reuses it, and FastAPI's error contexts, cached by a callable's id,
#: never meet a freed stand-in's id again.
_STAND_INS: dict[
    tuple[Callable[..., Any], tuple[tuple[str, AsyncProvide], ...], str], Callable[..., Any]
] = {}


def _stand_in(
    endpoint: Callable[..., Any], markers: tuple[tuple[str, AsyncProvide], ...], key: str
) -> Callable[..., Any]:
    """The endpoint's stand-in: resolves ``markers`` with the request under ``key``, then calls it."""
    memo = (endpoint, markers, key)
    known = _STAND_INS.get(memo)
    if known is not None:
        return known
    own_request = key != _REQUEST
    direct = _past_inject(endpoint, {name for name, _ in markers})

    async def stand_in(**values: Any) -> Any:
        request = values[key] if own_request else values.pop(key)
        target = direct
        for name, marker in markers:
            value = await marker(request)
            if value is marker:  # no container in the app's state: @inject resolves it, as before
                target = None
            values[name] = value
        return await (target or endpoint)(**values)

    # FastAPI's tracing and error messages name the callable they are given: the endpoint's names.
    stand_in.__module__ = getattr(endpoint, "__module__", stand_in.__module__)
    stand_in.__name__ = getattr(endpoint, "__name__", stand_in.__name__)
    stand_in.__qualname__ = getattr(endpoint, "__qualname__", stand_in.__qualname__)
    stand_in.__doc__ = endpoint.__doc__
    if _ENDPOINT_CONTEXTS is not None:
        _ENDPOINT_CONTEXTS[id(stand_in)] = fastapi_routing._extract_endpoint_context(inspect.unwrap(endpoint))
    _STAND_INS[memo] = stand_in
    return stand_in


def _past_inject(endpoint: Callable[..., Any], resolved: set[str]) -> Callable[..., Any] | None:
    """The function under ``endpoint``'s ``@inject``, when the markers cover all it injects."""
    patched = _PATCHED.get_callable(endpoint) if _PATCHED is not None else None
    if patched is None or patched.original is None or patched.reference_closing:
        return None
    if not set(patched.reference_injections) <= resolved:
        return None
    original: Callable[..., Any] = patched.original
    return original
