"""Fit the registry's models on the reference prices: ``python -m upstreams.ml_workbench.fit``.

Reproducible: the series are deterministic and the fit is plain Newton-Raphson (IRLS)
for an L2-regularised logistic regression, so the same code writes the same JSON.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from upstreams.analysis_engine.prices import PAIRS, candles
from upstreams.ml_workbench.features import FEATURES, feature_rows

__all__ = ["MODELS_PATH", "fit_models"]

MODELS_PATH = Path(__file__).with_name("models.json")
TIMEFRAMES = ("1h", "4h")
L2 = 1.0


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the systems here are 5x5)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def _dataset() -> tuple[list[list[float]], list[int]]:
    xs, ys = [], []
    for symbol in PAIRS:
        for timeframe in TIMEFRAMES:
            c = candles(symbol, timeframe)
            for i, feats in feature_rows(c):
                if i + 1 < len(c):
                    xs.append([feats[f] for f in FEATURES])
                    ys.append(1 if c.close[i + 1] > c.close[i] else 0)
    return xs, ys


def _logistic(
    xs: list[list[float]], ys: list[int]
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    k = len(FEATURES)
    mean = [sum(x[j] for x in xs) / len(xs) for j in range(k)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x in xs) / len(xs)) or 1.0 for j in range(k)]
    zs = [[1.0] + [(x[j] - mean[j]) / std[j] for j in range(k)] for x in xs]
    w = [0.0] * (k + 1)
    for _ in range(25):
        grad = [0.0] * (k + 1)
        hess = [[0.0] * (k + 1) for _ in range(k + 1)]
        for z, y in zip(zs, ys, strict=True):
            p = 1 / (1 + math.exp(-sum(a * b for a, b in zip(w, z, strict=True))))
            d = p * (1 - p)
            for a in range(k + 1):
                grad[a] += (p - y) * z[a]
                for b in range(k + 1):
                    hess[a][b] += d * z[a] * z[b]
        for a in range(1, k + 1):  # the intercept is not penalised
            grad[a] += L2 * w[a]
            hess[a][a] += L2
        step = _solve(hess, grad)
        w = [a - b for a, b in zip(w, step, strict=True)]
        if max(abs(s) for s in step) < 1e-10:
            break
    correct, loss = 0, 0.0
    for z, y in zip(zs, ys, strict=True):
        p = 1 / (1 + math.exp(-sum(a * b for a, b in zip(w, z, strict=True))))
        correct += (p >= 0.5) == (y == 1)
        loss -= math.log(p if y else 1 - p)
    return (
        w,
        mean,
        std,
        {"rows": len(ys), "accuracy": correct / len(ys), "log_loss": loss / len(ys)},
    )


def fit_models() -> list[dict[str, Any]]:
    """The registry: the fitted logistic model and the class-prior baseline."""
    xs, ys = _dataset()
    w, mean, std, quality = _logistic(xs, ys)
    prior = sum(ys) / len(ys)
    data = (
        f"reference series, pairs {sorted(PAIRS)}, timeframes {list(TIMEFRAMES)}; label: next close > close"
    )
    return [
        {
            "id": "direction-logreg-v1",
            "name": "Direction (logistic regression on momentum and RSI features)",
            "version": "1.0.0",
            "features": list(FEATURES),
            "classes": ["down", "up"],
            "kind": "logistic",
            "intercept": w[0],
            "coefficients": dict(zip(FEATURES, w[1:], strict=True)),
            "mean": dict(zip(FEATURES, mean, strict=True)),
            "std": dict(zip(FEATURES, std, strict=True)),
            "training": {"data": data, **quality},
        },
        {
            "id": "baseline-prior-v1",
            "name": "Baseline (training-set class prior)",
            "version": "1.0.0",
            "features": [],
            "classes": ["down", "up"],
            "kind": "prior",
            "p_up": prior,
            "training": {"data": data, "rows": len(ys), "accuracy": max(prior, 1 - prior)},
        },
    ]


def main() -> int:
    """Write ``models.json`` next to this file."""
    MODELS_PATH.write_text(json.dumps(fit_models(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {MODELS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
