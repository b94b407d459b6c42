"""Deterministic OHLC series: a seeded random walk with per-pair levels and volatility."""

from __future__ import annotations

import functools
import math
import random
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Candles", "MAX_CANDLES", "PAIRS", "TIMEFRAMES", "candles"]

#: Timeframe -> minutes per candle.
TIMEFRAMES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}

#: Pair -> (starting level, hourly volatility, decimals): levels near late-2020s quotes.
PAIRS = {
    "EURUSD": (1.0850, 0.0011, 5),
    "GBPUSD": (1.2700, 0.0013, 5),
    "USDJPY": (150.00, 0.0012, 3),
    "AUDUSD": (0.6600, 0.0014, 5),
    "USDCHF": (0.8800, 0.0011, 5),
    "USDCAD": (1.3600, 0.0009, 5),
    "NZDUSD": (0.6100, 0.0015, 5),
}

MAX_CANDLES = 5000
#: Every series ends at this candle boundary, so the same request gives the same candles.
ANCHOR = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Candles:
    """Columns of one series, oldest first."""

    timestamps: tuple[str, ...]
    open: tuple[float, ...]
    high: tuple[float, ...]
    low: tuple[float, ...]
    close: tuple[float, ...]
    volume: tuple[float, ...]

    def tail(self, n: int) -> Candles:
        """The last ``n`` candles."""
        return Candles(
            *(
                col[-n:]
                for col in (
                    self.timestamps,
                    self.open,
                    self.high,
                    self.low,
                    self.close,
                    self.volume,
                )
            )
        )

    def __len__(self) -> int:
        return len(self.close)


@functools.lru_cache(maxsize=64)
def candles(symbol: str, timeframe: str) -> Candles:
    """The full series (``MAX_CANDLES`` long) of ``symbol`` at ``timeframe``.

    The walk switches regime every 150 candles (drift up, down or none; calm or
    volatile), so every regime the engine reports shows up somewhere in the data.
    """
    level, hourly_vol, decimals = PAIRS[symbol]
    minutes = TIMEFRAMES[timeframe]
    vol = hourly_vol * math.sqrt(minutes / 60)
    # crc32, not hash(): Python salts str hashes per process, and the series must not change.
    rng = random.Random(zlib.crc32(f"{symbol}/{timeframe}".encode()))  # noqa: S311 - test data
    step = timedelta(minutes=minutes)
    start = ANCHOR - step * MAX_CANDLES
    ts, op, hi, lo, cl, vo = [], [], [], [], [], []
    price = level
    drift, vol_mult = 0.0, 1.0
    for i in range(MAX_CANDLES):
        if i % 150 == 0:
            drift = rng.choice((-0.12, 0.0, 0.0, 0.12)) * vol
            vol_mult = rng.choice((0.7, 1.0, 1.0, 1.9))
        sigma = vol * vol_mult
        o = price
        # A weak pull back to the pair's level keeps 5000 candles of daily data realistic.
        pull = -0.004 * math.log(o / level)
        c = o * math.exp(drift + pull + sigma * rng.gauss(0, 1))
        h = max(o, c) * math.exp(abs(rng.gauss(0, 1)) * sigma * 0.5)
        low = min(o, c) * math.exp(-abs(rng.gauss(0, 1)) * sigma * 0.5)
        ts.append((start + step * i).isoformat().replace("+00:00", "Z"))
        op.append(round(o, decimals))
        hi.append(round(h, decimals))
        lo.append(round(low, decimals))
        cl.append(round(c, decimals))
        vo.append(float(round(1000 * vol_mult * (1 + abs(rng.gauss(0, 1))) * math.sqrt(minutes))))
        price = c
    return Candles(tuple(ts), tuple(op), tuple(hi), tuple(lo), tuple(cl), tuple(vo))
