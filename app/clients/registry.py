"""Which client class serves an upstream: a subclass bound to the upstream's name in one line."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TypeVar

from app.clients.base import BaseServiceClient

__all__ = [
    "UPSTREAM_NAME",
    "client_class_for",
    "default_service_name",
    "register_client_class",
    "unregister_client_class",
    "upstream_client",
]

C = TypeVar("C", bound=BaseServiceClient)

#: What an upstream's name may be: it is the ``<NAME>`` of ``APP_UPSTREAMS__<NAME>__...``
#: (environment names are case-insensitive, so names are lower-case) and a key in code.
UPSTREAM_NAME = re.compile(r"[a-z][a-z0-9_]*")

_lock = threading.Lock()
_classes: dict[str, type[BaseServiceClient]] = {}


def _checked(name: str) -> str:
    if not UPSTREAM_NAME.fullmatch(name):
        raise ValueError(
            f"upstream name {name!r}: use lower-case letters, digits and '_', starting with a letter"
        )
    return name


def default_service_name(name: str) -> str:
    """The ``service_name`` of an upstream that does not set one: ``pricing`` -> ``pricing-service``.

    The same rule names the gateway's own: ``analysis_engine`` -> ``analysis-engine-service``.
    """
    return _checked(name).replace("_", "-") + "-service"


def register_client_class(name: str, client_class: type[BaseServiceClient]) -> None:
    """Have the container build ``client_class`` for the upstream ``name``.

    Binding the same class again is a no-op, and so is re-binding a class of the same
    module and name (a reloaded module). Another class for a bound name is a
    ``ValueError``: two modules claiming one upstream is a mistake to see at import.
    """
    if not (isinstance(client_class, type) and issubclass(client_class, BaseServiceClient)):
        raise TypeError(f"{client_class!r} is not a BaseServiceClient subclass")
    _checked(name)
    with _lock:
        bound = _classes.get(name)
        same = bound is not None and (bound.__module__, bound.__qualname__) == (
            client_class.__module__,
            client_class.__qualname__,
        )
        if bound is not None and not same:
            raise ValueError(
                f"upstream {name!r} is already served by {bound.__module__}.{bound.__qualname__}; "
                f"unregister_client_class({name!r}) first to bind {client_class.__qualname__}"
            )
        _classes[name] = client_class


def unregister_client_class(name: str) -> None:
    """Forget the class bound to ``name`` (the container builds a ``BaseServiceClient`` again)."""
    with _lock:
        _classes.pop(name, None)


def upstream_client(name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator binding a client subclass to the upstream ``name``.

    ``@upstream_client("pricing")`` above ``class PricingClient(BaseServiceClient)`` makes the
    container build a ``PricingClient`` for ``APP_UPSTREAMS__PRICING__...``. The binding
    is made at import, so import the module before the container builds its clients
    (a route module that uses the class does).
    """

    def bind(client_class: type[C]) -> type[C]:
        register_client_class(name, client_class)
        return client_class

    return bind


def client_class_for(name: str) -> type[BaseServiceClient]:
    """The class bound to the upstream ``name``, else ``BaseServiceClient``."""
    return _classes.get(name, BaseServiceClient)
