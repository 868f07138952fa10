"""The floor plan holds: no module imports another that imports it back (no
import circle), and no package imports one above it. From the bottom up:
the shared modules at the top of the package (settings, errors, problems,
responses, shapes, metrics, client), db, identity and web, api, relay,
server, cli."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "src" / "citelink"
LAYERS = {"db": 1, "identity": 2, "web": 2, "api": 3, "relay": 4, "server": 5, "cli": 6}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """Each module's imports of other citelink modules."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("citelink"):
                assert node.level == 0, f"{name}: relative import"
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("citelink")}
        graph[name] = {t for t in targets if t != name and t in known}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 2 or parts[-1] in LAYERS else 0


def test_no_import_runs_up_the_layers():
    upward = [
        (source, target)
        for source, targets in imports().items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert upward == []


def test_no_import_circle():
    graph = imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(
                f"import circle: {' -> '.join([*path[path.index(module) :], module])}"
            )
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert len(done) == len(graph) > 60
