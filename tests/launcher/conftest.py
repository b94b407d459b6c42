"""The launcher tests' shared fixture: an environment without the outer shell's settings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No settings, port or replica overrides from the outer shell; ``mkdtemp`` under ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith(("APP_", "AE_", "MLW_")) or name == "REPLICAS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("APP_ENV", "test")  # plan() sets it; this puts it back afterwards
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp
