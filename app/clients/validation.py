"""Typed contracts: requests and answers checked against pydantic models, each adapter built once."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from app.clients.response import RawResponse
from app.errors import ErrorContext, InvalidRequestError, ResponseDecodeError

__all__ = [
    "ValidationMode",
    "adapter",
    "check_answer",
    "check_request",
    "describe",
]

logger = logging.getLogger("app.clients.validation")

#: ``strict``: an answer that does not validate is a ``ResponseDecodeError``; ``lax``: it
#: is logged and counted, and what was decoded is returned (unvalidated); ``off``: no check.
ValidationMode = Literal["strict", "lax", "off"]

M = TypeVar("M")

#: How many problems a message lists, and how much of each location it shows: an answer
#: is hostile input, and the message may go back to a gateway's caller.
_MAX_PROBLEMS = 3
_MAX_LOC_PART = 40


_adapters: dict[Any, TypeAdapter[Any]] = {}


def adapter(model: Any) -> TypeAdapter[Any]:
    """The ``TypeAdapter`` of ``model`` (a model class, ``list[Model]``, …), built once per type.

    Building one compiles a validator (tens of microseconds to milliseconds); a call must
    not pay that. Two threads building the same one at once is harmless: either is kept.
    """
    found = _adapters.get(model)
    if found is None:
        found = _adapters[model] = TypeAdapter(model)
    return found


#: A location part shown as it is: an index, or a name as fields are named. Anything else is
#: an answer's own mapping key (hostile text, maybe a token) and is shown as ``<key>``.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,39}")


def _where(loc: tuple[int | str, ...]) -> str:
    parts = (str(p) if isinstance(p, int) or _PLAIN.fullmatch(p) else "<key>" for p in loc)
    return ".".join(parts) or "body"


#: The tag pydantic puts after a field for each member of a union it tried (``int``, ``float``,
#: ``constrained-int``): one field, not one per member, for a reader.
_UNION_MEMBER = re.compile(r"(?:constrained-)?(?:int|float|str|bool|none|bytes)")


def describe(error: ValidationError) -> str:
    """The first few problems as ``field: reason``; never the values (they may be anything).

    A union's members' failures are one problem (``bid: Input should be a valid number``,
    the last member's reason), not one per member tried.
    """
    problems: dict[str, str] = {}
    for p in error.errors(include_input=False, include_url=False, include_context=False):
        loc = p["loc"]
        if len(loc) > 1 and isinstance(loc[-1], str) and _UNION_MEMBER.fullmatch(loc[-1]):
            loc = loc[:-1]
        problems[_where(loc)] = p["msg"]
    listed = list(problems.items())
    text = "; ".join(f"{where}: {msg}" for where, msg in listed[:_MAX_PROBLEMS])
    if len(listed) > _MAX_PROBLEMS:
        text += f"; and {len(listed) - _MAX_PROBLEMS} more"
    return text


def _name(model: Any) -> str:
    return getattr(model, "__name__", None) or repr(model)


def check_request(model: type[M], data: Mapping[str, Any], context: ErrorContext) -> M:
    """``data`` as ``model``, or ``InvalidRequestError`` naming the fields (nothing is sent)."""
    try:
        return cast(M, adapter(model).validate_python(data))
    except ValidationError as exc:
        raise InvalidRequestError(
            f"request does not match {_name(model)}: {describe(exc)}", attempts=0, **context
        ) from None


def _unchecked(model: Any, data: Any) -> Any:
    # What was decoded, as the model's type where that costs nothing to build: a model
    # class from a dict (fields set as decoded, nested values left as they are).
    if isinstance(data, dict) and isinstance(model, type) and issubclass(model, BaseModel):
        # Only the model's own fields: a key such as "cls" must not reach the call's arguments.
        fields = model.model_fields
        return model.model_construct(**{name: value for name, value in data.items() if name in fields})
    return data


def _mismatch(
    model: Any, exc: ValidationError, mode: ValidationMode, context: ErrorContext, status: int | None
) -> str:
    """The problem an answer that does not match ``model`` has: raised in ``strict``, returned in ``lax``."""
    text = f"answer does not match {_name(model)}: {describe(exc)}"
    if mode == "strict":  # the error names the service, method and endpoint itself
        raise ResponseDecodeError(text, status=status, **context) from None
    return f"{context['method']} {context['endpoint']}: {text}"


def _check_json(
    model: type[M], raw: RawResponse, mode: ValidationMode, context: ErrorContext
) -> tuple[M, str | None]:
    """A JSON body validated from its bytes: pydantic parses it once, no Python objects in between."""
    try:
        return cast(M, adapter(model).validate_json(raw.body)), None
    except ValidationError as exc:
        # Invalid JSON is the one error pydantic gives for it: no need to list them all.
        if exc.error_count() == 1 and exc.errors(include_input=False)[0]["type"] == "json_invalid":
            raise ResponseDecodeError("body is not valid JSON", status=raw.status, **context) from None
        problem = _mismatch(model, exc, mode, context, raw.status)
        return cast(M, _unchecked(model, raw.value(context))), problem


def check_answer(
    model: type[M], data: Any, mode: ValidationMode, context: ErrorContext, status: int | None
) -> tuple[M, str | None]:
    """``data`` as ``model`` and, in ``lax`` mode, the problem that was let through (else None).

    ``strict``: a ``ResponseDecodeError`` naming the fields and the endpoint template.
    ``lax``: the problem is returned (the caller logs and counts it) with the unvalidated data.
    ``off``: nothing is checked. ``data`` may be a ``RawResponse``: a JSON body is then
    validated from its bytes.
    """
    if isinstance(data, RawResponse):
        if mode != "off" and data.is_json:
            return _check_json(model, data, mode, context)
        data = data.value(context)
    if mode == "off":
        return cast(M, _unchecked(model, data)), None
    try:
        return cast(M, adapter(model).validate_python(data)), None
    except ValidationError as exc:
        return cast(M, _unchecked(model, data)), _mismatch(model, exc, mode, context, status)
