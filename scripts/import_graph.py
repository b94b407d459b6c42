"""Prints the layer graph of app/ and settings/: which layer imports which (DESIGN §8)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.test_layers import LAYERS, _imports, _module_name, _project_files, _rank


def main() -> None:
    """One line per layer: the lower layers it imports."""
    edges: dict[str, set[str]] = {}
    for path in _project_files():
        module = _module_name(path)
        own = _rank(module)
        if own is None:
            continue
        for _, target in _imports(path, module):
            rank = _rank(target)
            if rank is not None and rank != own:
                edges.setdefault(LAYERS[own][0], set()).add(LAYERS[rank][0])
    for layer in sorted(edges, key=lambda name: _rank(name) or 0):
        print(f"{layer} -> {', '.join(sorted(edges[layer], key=lambda name: _rank(name) or 0))}")


if __name__ == "__main__":
    main()
