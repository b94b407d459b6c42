"""The model registry, loaded from models.json, and deterministic inference."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Model", "load_registry"]

MODELS_PATH = Path(__file__).with_name("models.json")


@dataclass(frozen=True)
class Model:
    """A fitted model as stored in the registry."""

    spec: dict[str, Any]

    @property
    def id(self) -> str:
        """The model id."""
        return str(self.spec["id"])

    @property
    def features(self) -> list[str]:
        """The features a prediction needs."""
        return list(self.spec["features"])

    def describe(self) -> dict[str, Any]:
        """The public description (DESIGN §6)."""
        keys = ("id", "name", "version", "features", "classes")
        return {k: self.spec[k] for k in keys} | {"training": self.spec.get("training", {})}

    def p_up(self, features: dict[str, float]) -> float:
        """The probability of the ``up`` class."""
        if self.spec["kind"] == "prior":
            return float(self.spec["p_up"])
        z = float(self.spec["intercept"])
        for name in self.features:
            z += (
                self.spec["coefficients"][name]
                * (features[name] - self.spec["mean"][name])
                / self.spec["std"][name]
            )
        return 1.0 / (1.0 + math.exp(-z))


def load_registry(path: Path = MODELS_PATH) -> dict[str, Model]:
    """Every model in ``path``, by id."""
    return {m["id"]: Model(m) for m in json.loads(path.read_text())}
