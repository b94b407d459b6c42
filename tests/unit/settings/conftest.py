"""Settings tests start from a clean environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No APP_ or alias variables leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)
