"""The build (setup.py) without the compiled data plane: on request (CASARRAY_PURE=1) it makes a pure
Python wheel without asking for mypy; when compiling fails (here: a C compiler that always fails) it
makes a wheel of the pure modules whose record says why. Real `pip wheel` runs on a copy of the tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _wheel(tmp_path: Path, **env: str) -> tuple[str, list[str], dict[str, object], str]:
    """Build a wheel from a copy of the project; its name, its files, its build record, pip's log."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, tree)
    shutil.copytree(
        ROOT / "src",
        tree / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "compiled.json", "*.egg-info"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = json.loads(archive.read("casarray/compiled.json"))
    return wheel.name, names, record, done.stdout + done.stderr


def _compiled_modules(names: list[str]) -> list[str]:
    return [name for name in names if any(name.endswith(suffix) for suffix in EXTENSION_SUFFIXES)]


def test_casarray_pure_builds_a_pure_wheel_without_mypy(tmp_path: Path) -> None:
    name, names, record, log = _wheel(tmp_path, CASARRAY_PURE="1")
    assert name.endswith("-py3-none-any.whl")
    assert _compiled_modules(names) == []
    assert "casarray/http/h1.py" in names
    assert record == {"pure": "CASARRAY_PURE=1 at install"}
    assert "casarray build: CASARRAY_PURE=1: installing the pure Python package" in log
    assert "Collecting mypy" not in log  # nothing to compile with: not even asked for


def test_a_failing_compiler_gives_the_pure_modules_and_says_why(tmp_path: Path) -> None:
    name, names, record, log = _wheel(tmp_path, CASARRAY_PURE="", CC="/bin/false")
    assert _compiled_modules(names) == []
    assert "casarray/proxy/session.py" in names
    assert record["failed"] is True
    assert str(record["pure"]).startswith("compiling with mypyc failed at install: the C compiler failed (")
    assert "casarray build: compiling with mypyc failed at install: the C compiler failed" in log
    assert name.startswith("casarray-")
