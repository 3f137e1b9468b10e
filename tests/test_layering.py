"""The layering the README states: each layer imports only those below it (api →
service → dispatcher/staging/backends → runner/runtimes → store → domain), counting
imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "jobgate"

# Layer → the packages it must not import (those above it).
FORBIDDEN = {
    # Metrics and traces: a leaf every layer records into.
    "observability": {
        "api",
        "auth",
        "service",
        "dispatcher",
        "backends",
        "staging",
        "runner",
        "runtimes",
        "store",
        "domain",
        "cli",
        "client",
    },
    "dispatcher": {"api", "service", "cli", "client"},
    "backends": {"api", "service", "dispatcher", "cli", "client"},
    "staging": {"api", "service", "dispatcher", "backends", "cli", "client"},
    "runner": {"api", "service", "dispatcher", "backends", "staging", "cli", "client"},
    "runtimes": {"api", "service", "dispatcher", "backends", "staging", "runner", "cli", "client"},
    "store": {"api", "service", "dispatcher", "backends", "staging", "runner", "runtimes", "auth"},
    "domain": {
        "api",
        "service",
        "dispatcher",
        "backends",
        "staging",
        "runner",
        "runtimes",
        "store",
        "auth",
    },
}


def imported_layers(path: Path) -> set[tuple[str, int]]:
    """(top-level jobgate package, line) of every jobgate import in ``path``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "jobgate" and len(parts) > 1:
                out.add((parts[1], node.lineno))
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    offending = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for imported, line in sorted(imported_layers(path)):
            if imported in FORBIDDEN[layer]:
                offending.append(f"{path.relative_to(PACKAGE)}:{line} imports jobgate.{imported}")
    assert offending == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from jobgate.service.logs import JobLogs\n")
    assert imported_layers(module) == {("service", 2)}
