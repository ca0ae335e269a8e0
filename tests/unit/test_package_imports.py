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


# DESIGN.md §7: protocol cores are sans-I/O — bytes and events in, no sockets, no event loop, no clock
# (they take `now`); the asyncio shells in engine/ import them, never the reverse.
CORES = [
    "http",
    "balance",
    "proxy",
    "config",
    "health/state.py",
    "health/verdict.py",
    "doctor/autodiscover.py",
    "doctor/discovery.py",
    "doctor/reply.py",
    "doctor/told.py",
    "lab/powershell",
    "health/node.py",
    "announce/bird.py",
]
IO_MODULES = {"asyncio", "socket", "selectors", "ssl", "time", "threading", "subprocess", "uvloop"}


def modules_imported(path: Path) -> set[str]:
    """What a module imports at run time (imports under `if TYPE_CHECKING:` are annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("core", CORES)
def test_protocol_cores_do_no_io_and_read_no_clock(core: str) -> None:
    target = ROOT / core
    paths = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert paths
    for path in paths:
        imported = modules_imported(path)
        assert not {m.split(".")[0] for m in imported} & IO_MODULES, path
        assert not any(m.startswith("casarray.engine") for m in imported), path


def test_an_upstream_connection_has_one_owner_for_life() -> None:
    """DESIGN.md §6, the NTLM rule in the types: the owner is Final, and no pool type exists."""
    source = (ROOT / "engine" / "l7.py").read_text(encoding="utf-8")
    assert "self.owner: Final = owner" in source
    for room in ("engine", "proxy"):
        for path in (ROOT / room).rglob("*.py"):
            classes = [
                n.name
                for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(n, ast.ClassDef)
            ]
            # "pool" is also the domain word for a service's members (PoolBuilder, MailPool): what
            # must not exist is a pool of upstream connections.
            shared = [
                n for n in classes if "pool" in n.lower() and ("conn" in n.lower() or "upstream" in n.lower())
            ]
            assert not shared, path
