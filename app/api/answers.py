"""Upstream answers as the gateway serves them: checked against their model, whatever the client's mode.

A client in ``strict`` mode (the default) has checked its answer already, and that model
is served as it is. With ``response_validation`` set to ``lax`` or ``off`` (an operator's
choice for the clients, say during an upstream's migration) a client may hand over what
it decoded, unchecked; the gateway still promises its callers the shapes of its OpenAPI
document, so such an answer is checked here, and one that does not fit is the same
``ResponseDecodeError`` (502) that a strict client would have raised.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.clients.base import BaseServiceClient
from app.clients.validation import adapter, describe
from app.errors import ResponseDecodeError

__all__ = ["conforming"]

M = TypeVar("M", bound=BaseModel)


def conforming(model: type[M], value: Any, client: BaseServiceClient, method: str, endpoint: str) -> M:
    """A client method's answer as a checked ``model``, or ``ResponseDecodeError`` naming the fields."""
    # A client of ours in strict mode checked it already; a stand-in (a test's fake) did not.
    if (
        type(value) is model
        and isinstance(client, BaseServiceClient)
        and client.config.response_validation == "strict"
    ):
        return value
    # A model built unchecked (lax, off) holds the decoded fields as they came: check those.
    data = dict(value.__dict__) if isinstance(value, BaseModel) else value
    try:
        checked: M = adapter(model).validate_python(data)
    except ValidationError as exc:
        raise ResponseDecodeError(
            f"answer does not match {model.__name__}: {describe(exc)}",
            service_name=client.service_name,
            method=method,
            endpoint=endpoint,
        ) from None
    return checked
