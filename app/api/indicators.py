"""The gateway's ``indicators=SMA:20,RSI:14`` query: its grammar, documented as a pattern, and its parser.

``INDICATORS_PATTERN`` is what the OpenAPI document promises, and ``parse_indicators``
accepts exactly the strings it matches (plus the one rule a pattern cannot say: MACD's
``fast`` below its ``slow``), with a reason that names the bad item for the rest.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from app.clients.contracts import INDICATOR_PARAMS, MAX_INDICATORS, MAX_PERIOD, MAX_STDDEV, IndicatorSpec
from app.clients.validation import adapter, describe

__all__ = ["INDICATORS_PATTERN", "MAX_INDICATORS", "parse_indicators"]

#: A whole number from 1 to MAX_PERIOD (500), and a decimal in (0, MAX_STDDEV] (10):
#: the Analysis Engine's own bounds, which tests/api checks these against.
_PERIOD = r"(?:[1-9]|[1-9][0-9]|[1-4][0-9]{2}|500)"
_STDDEV = r"(?:10(?:\.0+)?|[1-9](?:\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)"
_VALUE = {"stddev": _STDDEV}


def _caseless(name: str) -> str:
    # JSON Schema patterns have no flags: each letter in either case.
    return "".join(f"[{c}{c.lower()}]" for c in name)


def _item(name: str, params: list[str]) -> str:
    tail = ""
    for key in reversed(params):  # each parameter optional, in order: NAME[:a[:b[:c]]]
        tail = f"(?::{_VALUE.get(key, _PERIOD)}{tail})?"
    return _caseless(name) + tail


_ITEM = "(?:" + "|".join(_item(name, list(params)) for name, params in INDICATOR_PARAMS.items()) + ")"
#: ``NAME[:param[:param…]]``, comma-separated, 1 to MAX_INDICATORS items, no spaces.
INDICATORS_PATTERN = f"^{_ITEM}(?:,{_ITEM}){{0,{MAX_INDICATORS - 1}}}$"
_GRAMMAR = re.compile(INDICATORS_PATTERN)
_VALUES = {key: re.compile(pattern) for key, pattern in (("period", _PERIOD), ("stddev", _STDDEV))}


def _value(text: str, key: str, where: str) -> int | float:
    if not _VALUES["stddev" if key == "stddev" else "period"].fullmatch(text):
        if key == "stddev":
            raise ValueError(f"{where}: stddev must be a decimal number in (0, {MAX_STDDEV:g}]")
        raise ValueError(f"{where}: {key} must be a whole number from 1 to {MAX_PERIOD}")
    return float(text) if key == "stddev" else int(text)


def _spec(item: str, position: int) -> IndicatorSpec:
    # The item is named by its position (and its name, once known), never echoed: the
    # answer goes back to a caller, and a query may carry anything (a pasted token).
    name, *args = item.split(":")
    defaults = INDICATOR_PARAMS.get(name.upper())
    if defaults is None:
        raise ValueError(f"item {position}: unknown indicator; known: {', '.join(INDICATOR_PARAMS)}")
    where = f"item {position} ({name.upper()})"
    if len(args) > len(defaults):
        raise ValueError(f"{where}: {name.upper()} takes at most {len(defaults)} parameters")
    params = dict(defaults)
    for key, text in zip(defaults, args, strict=False):
        params[key] = _value(text, key, where)
    try:
        spec: IndicatorSpec = adapter(IndicatorSpec).validate_python({"name": name, "params": params})
    except ValidationError as exc:  # the rules no pattern can say (MACD's fast below its slow)
        raise ValueError(f"{where}: {describe(exc)}") from None
    return spec


def parse_indicators(query: str) -> list[IndicatorSpec]:
    """``"SMA:20,MACD:12:26:9"`` -> ``[IndicatorSpec(name="SMA", params={"period": 20}), …]``.

    Each parameter is positional, in the order of ``INDICATOR_PARAMS``; one left out takes
    its default. Raises ``ValueError`` with a reason naming the bad item by its position.
    """
    if not query:
        raise ValueError("at least one indicator is required, e.g. SMA:20,RSI:14")
    items = query.split(",")
    if len(items) > MAX_INDICATORS:
        raise ValueError(f"at most {MAX_INDICATORS} indicators per request")
    specs = [_spec(item, position) for position, item in enumerate(items, 1)]
    if not _GRAMMAR.fullmatch(query):  # every item is fine, so only the form is left to check
        raise ValueError("expected NAME[:param…] items separated by commas, e.g. SMA:20,RSI:14")
    return specs
