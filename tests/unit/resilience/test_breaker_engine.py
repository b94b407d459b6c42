"""The aiobreaker adapter is the only place that touches aiobreaker or needs a type: ignore for it."""

from __future__ import annotations

import ast
from pathlib import Path

import app

APP = Path(app.__file__).parent
ENGINE = APP / "resilience" / "breaker_engine.py"


def _imports_aiobreaker(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "aiobreaker" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiobreaker":
            return True
    return False


def test_only_the_adapter_imports_aiobreaker() -> None:
    """Every import of aiobreaker under app/ is in app/resilience/breaker_engine.py."""
    importers = [p.relative_to(APP).as_posix() for p in sorted(APP.rglob("*.py")) if _imports_aiobreaker(p)]
    assert importers == ["resilience/breaker_engine.py"]


def test_the_breaker_type_ignores_are_in_the_adapter() -> None:
    """The policy and the trip rules are fully typed; the adapter holds the breaker's type: ignores."""
    for name in ("breaker.py", "trip_rules.py", "window.py"):
        assert "type: ignore" not in (APP / "resilience" / name).read_text(), name
    assert "type: ignore" in ENGINE.read_text()
