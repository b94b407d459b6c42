"""The Analysis Engine's indicators agree to 1e-9 with an independent pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from upstreams.analysis_engine.indicators import atr, bbands, ema, macd, rsi, sma
from upstreams.analysis_engine.prices import PAIRS, candles

CASES = [(s, tf) for s in ("EURUSD", "USDJPY", "NZDUSD") for tf in ("1h", "1d")]


def seeded_ewm(x: pd.Series, period: int, alpha: float) -> pd.Series:
    """The textbook EMA: NaN warm-up, SMA seed at the period-th value, then recursive smoothing."""
    valid = x.dropna()
    start = valid.index[0]
    seed_at = start + period - 1
    s = pd.Series(np.nan, index=x.index)
    s[seed_at] = x[start : seed_at + 1].mean()
    s[seed_at + 1 :] = x[seed_at + 1 :]
    return s.ewm(alpha=alpha, adjust=False, ignore_na=True).mean().where(s.index >= seed_at)


def assert_close(ours: list[float | None], ref: pd.Series) -> None:
    ours_arr = np.array([np.nan if v is None else v for v in ours], dtype=float)
    ref_arr = ref.to_numpy(dtype=float)
    assert np.array_equal(np.isnan(ours_arr), np.isnan(ref_arr)), "warm-up positions differ"
    mask = ~np.isnan(ref_arr)
    assert np.max(np.abs(ours_arr[mask] - ref_arr[mask])) < 1e-9


@pytest.fixture(params=CASES, ids="-".join)
def series(request):
    c = candles(*request.param).tail(400)
    df = pd.DataFrame({"high": c.high, "low": c.low, "close": c.close})
    return c, df


@pytest.mark.parametrize("period", [1, 5, 20, 50])
def test_sma(series, period) -> None:
    """SMA is the rolling mean; the first period-1 values are null."""
    c, df = series
    assert_close(sma(c.close, period), df.close.rolling(period).mean())


@pytest.mark.parametrize("period", [5, 12, 26])
def test_ema(series, period) -> None:
    """EMA with alpha 2/(n+1), seeded with the SMA of the first n closes."""
    c, df = series
    assert_close(ema(c.close, period), seeded_ewm(df.close, period, 2 / (period + 1)))


@pytest.mark.parametrize("period", [7, 14])
def test_rsi_wilder(series, period) -> None:
    """Wilder's RSI: averages seeded with the mean of the first n changes, smoothed with 1/n."""
    c, df = series
    delta = df.close.diff()
    gain = seeded_ewm(delta.clip(lower=0), period, 1 / period)
    loss = seeded_ewm((-delta).clip(lower=0), period, 1 / period)
    assert_close(rsi(c.close, period), 100 - 100 / (1 + gain / loss))


def test_macd(series) -> None:
    """MACD line, signal and histogram from the seeded EMAs."""
    c, df = series
    line = seeded_ewm(df.close, 12, 2 / 13) - seeded_ewm(df.close, 26, 2 / 27)
    signal = seeded_ewm(line, 9, 2 / 10)
    ours = macd(c.close, 12, 26, 9)
    assert_close(ours["macd"], line)
    assert_close(ours["signal"], signal)
    assert_close(ours["histogram"], line - signal)


def test_bollinger_bands(series) -> None:
    """Middle SMA(20), bands at 2 population standard deviations."""
    c, df = series
    mid = df.close.rolling(20).mean()
    sd = df.close.rolling(20).std(ddof=0)
    ours = bbands(c.close, 20, 2.0)
    assert_close(ours["middle"], mid)
    assert_close(ours["upper"], mid + 2 * sd)
    assert_close(ours["lower"], mid - 2 * sd)


def test_atr_wilder(series) -> None:
    """Wilder's ATR: true range (high-low on the first bar), mean of the first n, then 1/n smoothing."""
    c, df = series
    prev = df.close.shift()
    tr = pd.concat([df.high - df.low, (df.high - prev).abs(), (df.low - prev).abs()], axis=1).max(axis=1)
    assert_close(atr(c, 14), seeded_ewm(tr, 14, 1 / 14))


def test_rsi_textbook_extremes() -> None:
    """Only gains: RSI 100. Alternating equal moves: RSI 50."""
    assert rsi([float(i) for i in range(30)], 14)[-1] == 100.0
    zigzag = [1.0 + (i % 2) for i in range(40)]
    value = rsi(zigzag, 14)[-1]
    assert value is not None
    assert abs(value - 50.0) < 5


def test_prices_are_deterministic_and_aligned() -> None:
    """The same (symbol, timeframe) always gives the same candles, on timeframe boundaries."""
    for symbol in PAIRS:
        a = candles(symbol, "4h")
        candles.cache_clear()
        b = candles(symbol, "4h")
        assert a == b
        assert all(
            ts.endswith(("T00:00:00Z", "T04:00:00Z", "T08:00:00Z", "T12:00:00Z", "T16:00:00Z", "T20:00:00Z"))
            for ts in a.timestamps
        )
        assert all(
            lo <= min(o, c) and hi >= max(o, c)
            for o, hi, lo, c in zip(a.open, a.high, a.low, a.close, strict=True)
        )
    assert 100 < candles("USDJPY", "1h").close[-1] < 200
