"""The ML Workbench over HTTP, and the reproducibility of its fitted models."""

from __future__ import annotations

import json

import pytest

from upstreams.ml_workbench.fit import MODELS_PATH, fit_models

FEATURES = {"rsi_14": 0.62, "macd_hist_atr": 0.3, "sma_trend_atr": 1.2, "bb_width": 0.01}


async def test_models(http, ml) -> None:
    """At least two models, each with id, name, version, features and classes."""
    async with http.get(f"{ml}/models") as resp:
        models = await resp.json()
    assert len(models) >= 2
    for model in models:
        assert {"id", "name", "version", "features", "classes"} <= set(model)
        assert model["classes"] == ["down", "up"]
    async with http.get(f"{ml}/models/direction-logreg-v1") as resp:
        one = await resp.json()
    assert one["features"] == ["rsi_14", "macd_hist_atr", "sma_trend_atr", "bb_width"]


async def test_predictions_are_deterministic(http, ml) -> None:
    """The same features give the same answer, every time."""
    req = {"symbol": "eurusd", "timeframe": "1h", "features": FEATURES}
    answers = []
    for _ in range(3):
        async with http.post(f"{ml}/models/direction-logreg-v1/predict", json=req) as resp:
            answers.append(await resp.json())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["symbol"] == "EURUSD"
    assert answers[0]["prediction"] in {"up", "down"}
    assert 0.5 <= answers[0]["probability"] <= 1


@pytest.mark.parametrize(
    ("path", "features", "status", "reason"),
    [
        ("/models/nope/predict", FEATURES, 404, "unknown model"),
        ("/models/direction-logreg-v1/predict", {"rsi_14": 0.5}, 422, "missing"),
        ("/models/direction-logreg-v1/predict", {**FEATURES, "rsi_14": None}, 422, "finite"),
    ],
)
async def test_bad_predictions(http, ml, path, features, status, reason) -> None:
    """An unknown model is 404; a missing or non-finite feature is 422."""
    async with http.post(ml + path, json={"symbol": "EURUSD", "features": features}) as resp:
        body = await resp.json()
    assert resp.status == status
    assert reason in body["detail"]


async def test_non_finite_json_is_refused(http, ml) -> None:
    """NaN and Infinity in the body are refused (422), never predicted on."""
    raw = '{"symbol": "EURUSD", "features": {"rsi_14": NaN, "macd_hist_atr": 0, "sma_trend_atr": 0, "bb_width": Infinity}}'
    async with http.post(
        f"{ml}/models/direction-logreg-v1/predict",
        data=raw,
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 422


def test_models_json_is_what_the_fit_script_writes() -> None:
    """The committed coefficients are reproducible from the reference series."""
    stored = json.loads(MODELS_PATH.read_text())
    assert json.loads(json.dumps(fit_models(), sort_keys=True)) == stored
