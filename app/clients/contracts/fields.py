"""The field types and base classes every contract model is built from."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = [
    "Answer",
    "Finite",
    "Items",
    "Number",
    "Probability",
    "Request",
    "Symbol",
    "Text",
    "Timeframe",
]

#: A currency pair as the Analysis Engine names them (``EURUSD``); either case.
Symbol = Annotated[str, Field(pattern=r"^[A-Za-z]{6}$", examples=["EURUSD"])]
#: The timeframes the Analysis Engine serves (DESIGN §6).
Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
#: A finite float; an int is taken as a float (NaN and infinities are refused).
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: A finite number that keeps its kind: a smart-mode union, so ``"period": 20`` stays an
#: int on the way through (a float would come back as ``20.0``). The int is bounded to 64
#: bits: past them no JSON encoder of ours writes it (orjson refuses), so it is refused here.
Number = Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)] | Finite
#: A probability or a confidence.
Probability = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
#: Short text from an upstream: bounded, since an answer is hostile input.
Text = Annotated[str, Field(min_length=1, max_length=200)]


#: An answer's list or mapping: at most this many entries, and validation stops at the
#: first bad one. An answer is hostile input: a wrong 10 MB answer must cost microseconds to
#: refuse, not minutes of the loop collecting millions of errors.
def Items(limit: int) -> object:  # noqa: N802 - used like a type annotation's marker
    """``Field(max_length=limit, fail_fast=True)``, for ``Annotated[list[...], Items(n)]``."""
    return Field(max_length=limit, fail_fast=True)


class Request(BaseModel):
    """A request model: the caller's input, checked before anything is sent.

    Strict (no ``"20"`` for 20, no ``True`` for 1), and an unknown field is an error: a
    typo in a parameter must not be dropped silently.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Answer(BaseModel):
    """An answer model: what an upstream sent, checked before anyone reads it.

    Strict (no ``"1.5"`` for 1.5, no ``true`` for 1, finite numbers only), and keys it
    does not know are ignored, so an upstream may add fields without breaking its callers.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
