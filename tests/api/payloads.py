"""Well-formed upstream answers, as the reference upstreams give them (DESIGN §6)."""

from __future__ import annotations

from typing import Any

__all__ = ["INDICATORS", "PREDICTION", "REGIME"]

INDICATORS: dict[str, Any] = {
    "symbol": "EURUSD",
    "timeframe": "1h",
    "results": [
        {"name": "SMA", "params": {"period": 20}, "values": [None, 1.1], "timestamps": ["a", "b"]},
        {"name": "SMA", "params": {"period": 50}, "values": [None, 1.0], "timestamps": ["a", "b"]},
        {"name": "RSI", "params": {"period": 14}, "values": [None, 60.0], "timestamps": ["a", "b"]},
        {"name": "ATR", "params": {"period": 14}, "values": [None, 0.01], "timestamps": ["a", "b"]},
        {
            "name": "MACD",
            "params": {"fast": 12, "slow": 26, "signal": 9},
            "values": [None, 0.002],
            "timestamps": ["a", "b"],
            "components": {
                "macd": [None, 0.002],
                "signal": [None, 0.001],
                "histogram": [None, 0.001],
            },
        },
        {
            "name": "BBANDS",
            "params": {"period": 20, "stddev": 2.0},
            "values": [None, 1.1],
            "timestamps": ["a", "b"],
            "components": {"upper": [None, 1.2], "middle": [None, 1.1], "lower": [None, 1.0]},
        },
    ],
}
REGIME: dict[str, Any] = {
    "symbol": "EURUSD",
    "timeframe": "1h",
    "regime": "ranging",
    "confidence": 0.7,
    "metrics": {"adx": 14.2},
}
PREDICTION: dict[str, Any] = {
    "model_id": "direction-logreg-v1",
    "symbol": "EURUSD",
    "prediction": "up",
    "probability": 0.8,
}
