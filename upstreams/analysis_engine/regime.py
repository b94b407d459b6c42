"""Market regime from ADX (Wilder) and relative volatility."""

from __future__ import annotations

import statistics

from upstreams.analysis_engine.indicators import Series, atr, true_range
from upstreams.analysis_engine.prices import Candles

__all__ = ["adx", "detect_regime"]

ADX_TREND = 25.0
VOLATILE_RATIO = 1.5


def _wilder_sum(values: list[float], period: int) -> Series:
    out: Series = [None] * len(values)
    if len(values) < period:
        return out
    prev = sum(values[:period])
    out[period - 1] = prev
    for i in range(period, len(values)):
        prev = prev - prev / period + values[i]
        out[i] = prev
    return out


def adx(c: Candles, period: int = 14) -> tuple[Series, Series, Series]:
    """Wilder's ADX with +DI and -DI."""
    n = len(c)
    plus_dm, minus_dm = [0.0], [0.0]
    for i in range(1, n):
        up = c.high[i] - c.high[i - 1]
        down = c.low[i - 1] - c.low[i]
        plus_dm.append(up if up > down and up > 0 else 0.0)
        minus_dm.append(down if down > up and down > 0 else 0.0)
    tr_s, plus_s, minus_s = (_wilder_sum(x[1:], period) for x in (true_range(c), plus_dm, minus_dm))
    plus_di: Series = [None] * n
    minus_di: Series = [None] * n
    dx: list[float] = []
    dx_at: list[int] = []
    for j, (t, p, m) in enumerate(zip(tr_s, plus_s, minus_s, strict=True)):
        if t is None or p is None or m is None or t == 0:
            continue
        pdi, mdi = 100 * p / t, 100 * m / t
        plus_di[j + 1], minus_di[j + 1] = pdi, mdi
        dx.append(0.0 if pdi + mdi == 0 else 100 * abs(pdi - mdi) / (pdi + mdi))
        dx_at.append(j + 1)
    out: Series = [None] * n
    if len(dx) >= period:
        prev = sum(dx[:period]) / period
        out[dx_at[period - 1]] = prev
        for k in range(period, len(dx)):
            prev = (prev * (period - 1) + dx[k]) / period
            out[dx_at[k]] = prev
    return out, plus_di, minus_di


def detect_regime(c: Candles) -> tuple[str, float, dict[str, float]]:
    """``(regime, confidence, metrics)``: volatile beats trending beats ranging."""
    adx_s, plus_s, minus_s = adx(c)
    atr_s = atr(c, 14)
    atr_pct = [a / close for a, close in zip(atr_s, c.close, strict=True) if a is not None]
    adx_now = next(v for v in reversed(adx_s) if v is not None)
    plus_now = next(v for v in reversed(plus_s) if v is not None)
    minus_now = next(v for v in reversed(minus_s) if v is not None)
    vol_ratio = atr_pct[-1] / statistics.median(atr_pct)
    metrics = {
        "adx": adx_now,
        "plus_di": plus_now,
        "minus_di": minus_now,
        "atr_pct": atr_pct[-1],
        "volatility_ratio": vol_ratio,
    }
    if vol_ratio >= VOLATILE_RATIO:
        return "volatile", min(1.0, 0.5 + (vol_ratio - VOLATILE_RATIO) / 1.5), metrics
    if adx_now >= ADX_TREND:
        regime = "trending_up" if plus_now >= minus_now else "trending_down"
        return regime, min(1.0, 0.5 + (adx_now - ADX_TREND) / 50), metrics
    return "ranging", min(1.0, 0.5 + (ADX_TREND - adx_now) / 50), metrics
