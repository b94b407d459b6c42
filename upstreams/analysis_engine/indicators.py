"""SMA, EMA, RSI (Wilder), MACD, Bollinger Bands and ATR (Wilder); warm-up positions are None."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from upstreams.analysis_engine.prices import Candles

__all__ = ["INDICATORS", "Series", "atr", "bbands", "compute", "ema", "macd", "rsi", "sma"]

Series = list[float | None]


def sma(values: Sequence[float], period: int) -> Series:
    """Simple moving average; the first ``period - 1`` positions are None."""
    out: Series = [None] * len(values)
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= period:
            total -= values[i - period]
        if i >= period - 1:
            out[i] = total / period
    return out


def _ema_from(values: Sequence[float | None], period: int) -> Series:
    """EMA seeded with the SMA of the first ``period`` defined values (the textbook start)."""
    out: Series = [None] * len(values)
    first = next((i for i, v in enumerate(values) if v is not None), None)
    if first is None or len(values) - first < period:
        return out
    alpha = 2.0 / (period + 1)
    seed_end = first + period - 1
    prev = sum(v for v in values[first : seed_end + 1] if v is not None) / period
    out[seed_end] = prev
    for i in range(seed_end + 1, len(values)):
        v = values[i]
        assert v is not None  # noqa: S101 - defined values are contiguous after the warm-up
        prev = alpha * v + (1 - alpha) * prev
        out[i] = prev
    return out


def ema(values: Sequence[float], period: int) -> Series:
    """Exponential moving average, alpha = 2 / (period + 1), seeded with an SMA."""
    return _ema_from(list(values), period)


def rsi(values: Sequence[float], period: int) -> Series:
    """Wilder's RSI: the first value at index ``period``, then Wilder smoothing."""
    out: Series = [None] * len(values)
    if len(values) <= period:
        return out
    gains = [max(values[i] - values[i - 1], 0.0) for i in range(1, len(values))]
    losses = [max(values[i - 1] - values[i], 0.0) for i in range(1, len(values))]
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period

    def value(g: float, loss: float) -> float:
        return 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + g / loss)

    out[period] = value(avg_gain, avg_loss)
    for i in range(period, len(gains)):
        avg_gain = (avg_gain * (period - 1) + gains[i]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i]) / period
        out[i + 1] = value(avg_gain, avg_loss)
    return out


def macd(values: Sequence[float], fast: int, slow: int, signal: int) -> dict[str, Series]:
    """MACD line (EMA fast - EMA slow), its signal (EMA of the line) and the histogram."""
    fast_ema, slow_ema = ema(values, fast), ema(values, slow)
    line: Series = [
        f - s if f is not None and s is not None else None for f, s in zip(fast_ema, slow_ema, strict=True)
    ]
    sig = _ema_from(line, signal)
    hist: Series = [
        m - s if m is not None and s is not None else None for m, s in zip(line, sig, strict=True)
    ]
    return {"macd": line, "signal": sig, "histogram": hist}


def bbands(values: Sequence[float], period: int, stddev: float) -> dict[str, Series]:
    """Bollinger Bands: SMA middle, +/- ``stddev`` population standard deviations."""
    middle = sma(values, period)
    upper: Series = [None] * len(values)
    lower: Series = [None] * len(values)
    for i, m in enumerate(middle):
        if m is None:
            continue
        window = values[i - period + 1 : i + 1]
        sd = math.sqrt(sum((v - m) ** 2 for v in window) / period)
        upper[i] = m + stddev * sd
        lower[i] = m - stddev * sd
    return {"upper": upper, "middle": middle, "lower": lower}


def true_range(c: Candles) -> list[float]:
    """True range; the first candle, with no previous close, uses high - low."""
    tr = [c.high[0] - c.low[0]]
    for i in range(1, len(c)):
        prev = c.close[i - 1]
        tr.append(max(c.high[i] - c.low[i], abs(c.high[i] - prev), abs(c.low[i] - prev)))
    return tr


def atr(c: Candles, period: int) -> Series:
    """Wilder's ATR: the mean of the first ``period`` true ranges, then Wilder smoothing."""
    tr = true_range(c)
    out: Series = [None] * len(tr)
    if len(tr) < period:
        return out
    prev = sum(tr[:period]) / period
    out[period - 1] = prev
    for i in range(period, len(tr)):
        prev = (prev * (period - 1) + tr[i]) / period
        out[i] = prev
    return out


def _single(
    fn: Callable[[Sequence[float], int], Series],
) -> Callable[[Candles, dict[str, float]], tuple[Series, dict[str, Series] | None]]:
    return lambda c, p: (fn(c.close, int(p["period"])), None)


def _macd(c: Candles, p: dict[str, float]) -> tuple[Series, dict[str, Series]]:
    parts = macd(c.close, int(p["fast"]), int(p["slow"]), int(p["signal"]))
    return parts["macd"], parts


def _bbands(c: Candles, p: dict[str, float]) -> tuple[Series, dict[str, Series]]:
    parts = bbands(c.close, int(p["period"]), float(p["stddev"]))
    return parts["middle"], parts


def _atr(c: Candles, p: dict[str, float]) -> tuple[Series, None]:
    return atr(c, int(p["period"])), None


#: Name -> (defaults, compute(candles, params) -> (main line, components or None)).
INDICATORS: dict[
    str,
    tuple[
        dict[str, float],
        Callable[[Candles, dict[str, float]], tuple[Series, dict[str, Series] | None]],
    ],
] = {
    "SMA": ({"period": 20}, _single(sma)),
    "EMA": ({"period": 20}, _single(ema)),
    "RSI": ({"period": 14}, _single(rsi)),
    "MACD": ({"fast": 12, "slow": 26, "signal": 9}, _macd),
    "BBANDS": ({"period": 20, "stddev": 2.0}, _bbands),
    "ATR": ({"period": 14}, _atr),
}


def compute(name: str, candles: Candles, params: dict[str, float]) -> tuple[Series, dict[str, Series] | None]:
    """The indicator ``name`` over ``candles`` with ``params`` (already validated)."""
    return INDICATORS[name][1](candles, params)
