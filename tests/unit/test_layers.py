"""The layers of DESIGN §8 form a one-way graph, and every package imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Each layer may import its own and lower layers only (DESIGN §8, lowest first). The
#: secret registry sits under the error tree, because an error scrubs what it carries.
LAYERS: list[tuple[str, ...]] = [
    ("app.redaction",),
    ("app.errors",),
    ("app.resilience",),
    ("app.observability",),
    ("app.discovery",),
    ("app.balancing",),
    ("app.state",),
    ("app.auth",),
    ("app.cache",),
    ("app.clients",),
    ("settings",),
    ("app.upstream_registry", "app.live_config"),
    ("app.containers",),
    ("app.factory", "app.serving"),
    ("app.api",),
    ("app.main",),
    ("app.__main__",),
]
#: Modules outside the graph that any layer may use: they import nothing of the project.
FREE = ("app.runtime",)
#: The package roots, and every package a user might import first.
PACKAGES = [
    "app",
    "app.redaction",
    "app.errors",
    "app.resilience",
    "app.observability",
    "app.discovery",
    "app.balancing",
    "app.state",
    "app.auth",
    "app.cache",
    "app.clients",
    "app.clients.testing",
    "settings",
    "app.upstream_registry",
    "app.live_config",
    "app.containers",
    "app.factory",
    "app.api",
    "app.api.routes",
    "app.main",
    "upstreams",
    "upstreams.analysis_engine",
    "upstreams.ml_workbench",
    "launcher",
]


def _rank(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (inside functions and TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from app import clients` imports app.clients, not only app.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
            found.append((node.lineno, base))
    return found


def _project_files() -> list[Path]:
    return sorted(p for top in ("app", "settings") for p in (ROOT / top).rglob("*.py"))


def upward_imports() -> list[str]:
    """Each import that points to a higher layer than the importing module's."""
    bad: list[str] = []
    for path in _project_files():
        module = _module_name(path)
        own = _rank(module)
        if own is None:
            continue
        for line, target in _imports(path, module):
            if not (target == "app" or target.startswith(("app.", "settings", "upstreams"))):
                continue
            if target.startswith("upstreams"):
                bad.append(
                    f"{path.relative_to(ROOT)}:{line} imports {target} (app/ never imports upstreams/)"
                )
                continue
            rank = _rank(target)
            if rank is not None and rank > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} (layer {rank} > {own})")
    return bad


def test_every_project_module_has_a_layer() -> None:
    """Each module under app/ and settings/ belongs to a layer of the graph (or is a declared free leaf)."""
    unplaced = [
        _module_name(p)
        for p in _project_files()
        if _rank(_module_name(p)) is None and _module_name(p) not in (*FREE, "app")
    ]
    assert unplaced == []


def test_no_import_runs_upward() -> None:
    """No module imports a higher layer: resilience and observability never import clients, clients never the container."""
    assert upward_imports() == []


def test_the_free_leaves_import_nothing_of_the_project() -> None:
    """app/__init__.py and the free modules import nothing of the project, so import order never matters."""
    for module in ("app", *FREE):
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        project = [t for _, t in _imports(path, module) if t == "app" or t.startswith(("app.", "settings"))]
        assert project == [], (module, project)


def test_upstreams_never_import_the_framework() -> None:
    """upstreams/ speaks HTTP only: it never imports app/ or settings/."""
    bad = [
        f"{p.relative_to(ROOT)} imports {t}"
        for p in sorted((ROOT / "upstreams").rglob("*.py"))
        for _, t in _imports(p, _module_name(p))
        if t == "app" or t.startswith(("app.", "settings"))
    ]
    assert bad == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch) -> None:
    """The layer check is not vacuous: a resilience module importing app.clients is reported."""
    fake = ROOT / "app" / "resilience" / "_layer_probe.py"
    fake.write_text('"""Probe."""\n\nfrom app.clients.base import BaseServiceClient  # noqa: F401\n')
    try:
        found = upward_imports()
    finally:
        fake.unlink()
    assert any("_layer_probe.py:3 imports app.clients.base" in line for line in found), found


def _import_alone(package: str) -> tuple[str, int, str]:
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed module name
        [sys.executable, "-W", "error", "-c", f"import {package}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return package, done.returncode, done.stderr[-2000:]


@pytest.mark.timeout(300)
def test_every_package_imports_alone_in_a_fresh_interpreter() -> None:
    """Each package imports first, alone, in a new interpreter: no hidden order, no cycle."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, PACKAGES))
    failed = [(name, err) for name, code, err in results if code != 0]
    assert failed == []
