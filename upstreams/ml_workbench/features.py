"""The model features, computed from a price series exactly as the gateway derives them."""

from __future__ import annotations

from upstreams.analysis_engine.indicators import Series, atr, bbands, macd, rsi, sma
from upstreams.analysis_engine.prices import Candles

__all__ = ["FEATURES", "feature_rows"]

#: Scale-free features: ratios to ATR, so pairs near 1.0 and near 150 compare.
FEATURES = ("rsi_14", "macd_hist_atr", "sma_trend_atr", "bb_width")


def feature_rows(c: Candles) -> list[tuple[int, dict[str, float]]]:
    """``(index, features)`` for every candle past the longest warm-up."""
    closes = c.close
    rsi_s = rsi(closes, 14)
    hist = macd(closes, 12, 26, 9)["histogram"]
    sma20, sma50 = sma(closes, 20), sma(closes, 50)
    bands = bbands(closes, 20, 2.0)
    atr_s = atr(c, 14)
    rows = []
    series: tuple[Series, ...] = (
        rsi_s,
        hist,
        sma20,
        sma50,
        bands["upper"],
        bands["lower"],
        bands["middle"],
        atr_s,
    )
    for i in range(len(closes)):
        values = [s[i] for s in series]
        if any(v is None for v in values):
            continue
        r, h, s20, s50, up, lo, mid, a = (float(v) for v in values if v is not None)
        if a <= 0 or mid <= 0:
            continue
        rows.append(
            (
                i,
                {
                    "rsi_14": r / 100,
                    "macd_hist_atr": h / a,
                    "sma_trend_atr": (s20 - s50) / a,
                    "bb_width": (up - lo) / mid,
                },
            )
        )
    return rows
