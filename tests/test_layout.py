"""The tree shows the layers: the library never imports the experiments or the checkout's entry points."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "fedcompress"
OUTSIDE = ("simulations", "server", "client", "tests", "examples")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_imports_nothing_outside_it() -> None:
    offenders = {
        str(p.relative_to(LIBRARY)): sorted(n for n in _imports(p) if n.split(".")[0] in OUTSIDE)
        for p in LIBRARY.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_entry_points_are_thin() -> None:
    root = LIBRARY.parent
    for path in (root / "server" / "app.py", root / "client" / "app.py"):
        code = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"""'))]
        assert len(code) <= 3, (path, code)
        assert _imports(path) <= {"fedcompress.flower.serverapp", "fedcompress.flower.clientapp"}
