"""Rooms that must not import each other both ways (a folder cycle hides which one is the lower layer).

balance/ holds members with a health state (health/state.py), so health/ reads members through a Protocol;
exchange/'s namespace toolkit writes configs, so config/ does not import the service catalog.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import casarray

ROOT = Path(casarray.__file__).parent


def imported_rooms(room: str) -> set[str]:
    """The casarray packages or modules that any module under `room` imports (absolute imports)."""
    found: set[str] = set()
    for path in (ROOT / room).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "casarray" and len(parts) > 1 and parts[1] != room:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize(("lower", "upper"), [("health", "balance"), ("config", "exchange")])
def test_the_lower_room_does_not_import_the_upper(lower: str, upper: str) -> None:
    assert lower in imported_rooms(upper)  # the upper one does use the lower
    assert upper not in imported_rooms(lower)
