"""Parses the gateway's ``indicators=SMA:20,RSI:14`` query into Analysis Engine requests."""

from __future__ import annotations

from typing import Any

__all__ = ["INDICATOR_PARAMS", "parse_indicators"]

#: Each indicator's positional parameters, in the order the query gives them, with defaults.
INDICATOR_PARAMS: dict[str, tuple[tuple[str, float], ...]] = {
    "SMA": (("period", 20),),
    "EMA": (("period", 20),),
    "RSI": (("period", 14),),
    "ATR": (("period", 14),),
    "MACD": (("fast", 12), ("slow", 26), ("signal", 9)),
    "BBANDS": (("period", 20), ("stddev", 2.0)),
}
MAX_INDICATORS = 20


def _number(text: str, name: str, spec: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{spec!r}: {name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value <= 0:  # noqa: PLR0124
        raise ValueError(f"{spec!r}: {name} must be a positive number")
    return int(value) if value.is_integer() and name != "stddev" else value


def parse_indicators(query: str) -> list[dict[str, Any]]:
    """``"SMA:20,MACD:12:26:9"`` -> ``[{"name": "SMA", "params": {"period": 20}}, …]``.

    Raises ``ValueError`` with a reason naming the bad item.
    """
    items = [part.strip() for part in query.split(",") if part.strip()]
    if not items:
        raise ValueError("at least one indicator is required, e.g. SMA:20,RSI:14")
    if len(items) > MAX_INDICATORS:
        raise ValueError(f"at most {MAX_INDICATORS} indicators per request")
    out = []
    for spec in items:
        name, *args = spec.split(":")
        name = name.upper()
        params = INDICATOR_PARAMS.get(name)
        if params is None:
            raise ValueError(f"{spec!r}: unknown indicator; known: {', '.join(INDICATOR_PARAMS)}")
        if len(args) > len(params):
            raise ValueError(f"{spec!r}: {name} takes at most {len(params)} parameters")
        values: dict[str, float | int] = dict(params)
        for (key, _), text in zip(params, args, strict=False):
            values[key] = _number(text, key, spec)
        out.append({"name": name, "params": values})
    return out
