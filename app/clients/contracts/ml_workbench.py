"""The ML Workbench's contract (DESIGN §6): what its client sends, and what it answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.clients.contracts.fields import Answer, Finite, Items, Probability, Request, Symbol, Text, Timeframe

__all__ = [
    "MAX_FEATURES",
    "MAX_MODELS",
    "ModelId",
    "ModelInfo",
    "ModelList",
    "ModelRef",
    "PredictRequest",
    "Prediction",
]

#: The most features one prediction may carry.
MAX_FEATURES = 100
#: Models in the registry's answer.
MAX_MODELS = 1000

#: A model's id: one path segment, as long as the workbench takes (100).
ModelId = Annotated[str, Field(min_length=1, max_length=100, examples=["direction-logreg-v1"])]
FeatureName = Annotated[str, Field(min_length=1, max_length=100)]


class ModelRef(Request):
    """``GET models/{model_id}``: which model (an empty id would ask for the list instead)."""

    model_id: ModelId


class PredictRequest(Request):
    """``POST models/{model_id}/predict``: the features, every one a finite number.

    ``model_id`` goes in the path, not the body (``exclude``): the workbench refuses
    fields it does not know.
    """

    model_id: ModelId = Field(exclude=True)
    symbol: Symbol
    timeframe: Timeframe = "1h"
    features: Annotated[dict[FeatureName, Finite], Field(max_length=MAX_FEATURES)]


class ModelInfo(Answer):
    """A model in the registry."""

    id: Text
    name: Text
    version: Text
    features: Annotated[list[Text], Items(MAX_FEATURES)]
    classes: Annotated[list[Text], Items(MAX_FEATURES)]


#: The registry's answer to ``GET models``: bounded, and refused at its first bad model.
ModelList = Annotated[list[ModelInfo], Items(MAX_MODELS)]


class Prediction(Answer):
    """A direction prediction, and the probability of the class predicted."""

    model_id: Text
    symbol: Text
    prediction: Literal["up", "down"]
    probability: Probability
