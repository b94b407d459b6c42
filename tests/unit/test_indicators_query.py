"""The gateway's indicators query: parsed to specs, and a bad item named by its position, never echoed."""

from __future__ import annotations

import pytest

from app.api.indicators import parse_indicators


def test_items_become_specs_with_defaults() -> None:
    """SMA:20,MACD:12:26 -> two specs; MACD's signal takes its default."""
    sma, macd = parse_indicators("SMA:20,MACD:12:26")
    assert (sma.name, sma.params) == ("SMA", {"period": 20})
    assert (macd.name, macd.params) == ("MACD", {"fast": 12, "slow": 26, "signal": 9})


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SMA:20,sk_live_TOPSECRET123", "item 2: unknown indicator"),
        ("SMA:sk_live_TOPSECRET123", "item 1 (SMA): period must be a whole number"),
        ("RSI:14,MACD:30:20", "item 2 (MACD)"),
    ],
)
def test_a_bad_item_is_named_by_position_not_echoed(query: str, reason: str) -> None:
    """The reason names the item's position (and a known name); what the caller sent is not repeated."""
    with pytest.raises(ValueError, match="item") as info:
        parse_indicators(query)
    assert reason in str(info.value)
    assert "TOPSECRET" not in str(info.value)
