"""The factory path, for code without DI: clients backed by the same container's singletons."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.base import BaseServiceClient
from app.clients.config import ClientConfig
from app.clients.ml_workbench import MLWorkbenchClient

if TYPE_CHECKING:
    from app.containers import Container, UpstreamContainer

__all__ = [
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
_clients: dict[tuple[type[BaseServiceClient], str], BaseServiceClient] = {}


def _default_container() -> Container:
    global _container  # noqa: PLW0603 - the process-wide default, created on first use
    with _lock:
        if _container is None:
            # Imported here: app.containers imports the client modules, this one included.
            from app.containers import Container  # noqa: PLC0415

            _container = Container()
        return _container


def use_container(container: Container) -> None:
    """Make ``container`` the one the factory path reads (``create_app`` calls this)."""
    global _container  # noqa: PLW0603
    with _lock:
        _container = container
        _clients.clear()


def reset_factory() -> None:
    """Forget the default container, registrations and cached clients (for tests)."""
    global _container  # noqa: PLW0603
    with _lock:
        _container = None
        _registered.clear()
        _clients.clear()


def _upstream(container: Container, service_name: str) -> tuple[str, UpstreamContainer | None]:
    """The canonical name (the container section, for its upstreams) and the sub-container."""
    for section in ("analysis_engine", "ml_workbench"):
        sub: UpstreamContainer = getattr(container, section)
        if service_name in (section, sub.config().service_name):
            return section, sub
    return service_name, None


def register_client_config(name: str, config: ClientConfig | Mapping[str, Any]) -> None:
    """Register the config of a service by name; a container upstream's name overrides it."""
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
    """The shared client of ``service_name``, or a separate one for ``config_override``.

    The shared client uses the container's breaker, bulkhead and retry singletons, so
    failures seen here and through DI trip the same breaker. With ``config_override``
    (a ClientConfig or a partial mapping over the service's config) the client is new,
    with its own policies, and the caller closes it.
    """
    with _lock:
        container = _default_container()
        service_name, sub = _upstream(container, service_name)
        if sub is not None:
            base = sub.config()
        elif service_name in _registered:
            base = _registered[service_name]
        else:
            known = sorted(["analysis_engine", "ml_workbench", *_registered])
            raise KeyError(f"unknown service {service_name!r}; known: {', '.join(known)}")
        if config_override is not None:
            return client_class(_merge(base, config_override))
        key = (client_class, service_name)
        client = _clients.get(key)
        if client is None:
            # A container upstream's client shares its policies; a registered one has its own.
            policies = sub.policies() if sub is not None else {}
            client = _clients[key] = client_class(base, **policies)
        return client  # type: ignore[return-value]


def get_analysis_engine_client(
    config_override: ClientConfig | Mapping[str, Any] | None = None,
) -> AnalysisEngineClient:
    """The Analysis Engine client (see :func:`get_client`)."""
    return get_client(AnalysisEngineClient, "analysis_engine", config_override)


def get_ml_workbench_client(
    config_override: ClientConfig | Mapping[str, Any] | None = None,
) -> MLWorkbenchClient:
    """The ML Workbench client (see :func:`get_client`)."""
    return get_client(MLWorkbenchClient, "ml_workbench", config_override)
