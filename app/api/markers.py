"""AsyncProvide: dependency-injector's ``Provide`` marker, awaited by FastAPI on the event loop."""

from __future__ import annotations

from typing import Any

from dependency_injector.wiring import Provide

__all__ = ["AsyncProvide"]


class AsyncProvide(Provide):  # type: ignore[misc,valid-type]
    """``Provide[...]`` with an async ``__call__``.

    FastAPI runs a sync dependency in its threadpool; the stock marker's ``__call__``
    is sync, so every ``Depends(Provide[...])`` cost a thread hop per request (it halved
    a route's throughput in the benchmark). Awaited instead, the marker returns itself
    at once and ``@inject`` swaps in the provider's value as before: container,
    ``@inject`` and ``provider.override()`` work unchanged.
    """

    async def __call__(self) -> Any:
        """Return the marker, for ``@inject`` to resolve."""
        return self
