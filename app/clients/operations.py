"""``@operation``: marks a typed service method, naming it in the errors that pass through it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from app.errors import ClientError

__all__ = ["operation"]

P = ParamSpec("P")
R = TypeVar("R")


def operation(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Mark a service method: a typed error passing through gains ``operation`` = its name.

    ``functools.wraps`` keeps the method's name, docstring, annotations and (through
    ``__wrapped__``) its signature, so ``inspect.signature``, ``help()`` and the sync
    twins built from it show the real parameters, not ``(*args, **kwargs)``.
    """
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except ClientError as error:
            error.operation = name
            raise

    return wrapper
