"""The upstream's bodies: 100 B and 10 KB of JSON, and a 503."""

from __future__ import annotations

import json

SMALL = json.dumps(
    {
        "symbol": "EURUSD",
        "bid": 1.08512,
        "ask": 1.08519,
        "ts": "2026-01-02T00:00:00Z",
        "seq": 12345,
        "ok": True,
    },
    separators=(",", ":"),
).encode()

LARGE = json.dumps(
    [
        {
            "t": f"2026-01-02T{i // 60:02d}:{i % 60:02d}:00Z",
            "o": 1.08512,
            "h": 1.08601,
            "l": 1.08433,
            "c": 1.08519,
            "v": 1200 + i,
        }
        for i in range(104)
    ],
    separators=(",", ":"),
).encode()

ERROR = b'{"detail":"unavailable","code":"busy"}'
