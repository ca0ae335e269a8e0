"""The installed build: its compiled data plane runs and says so; CASARRAY_PURE=1 runs the .py files
instead; a copy whose compiled modules cannot load, or whose source was edited since, runs the pure
modules and `casarray run` says why in one warning at start.

These need a compiled build (`make test` installs one and checks that it is); on a pure build they are
skipped, saying which build runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from casarray import compiled
from tests.support import Proc, casarray, free_port

PACKAGE = Path(compiled.__file__).parent
BUILD = compiled.current()

pytestmark = pytest.mark.skipif(
    not BUILD.compiled, reason=f"the installed build is not compiled ({BUILD.describe()})"
)

# Prints where each compiled module was imported from, then the build.
WHERE = (
    "import importlib\n"
    "from casarray import compiled\n"
    "for name in compiled.MODULES: print(importlib.import_module(name).__file__)\n"
    "print(compiled.current().describe())\n"
)


def _run(code: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    return done.stdout.splitlines()


def _is_extension(path: str) -> bool:
    return any(path.endswith(suffix) for suffix in EXTENSION_SUFFIXES)


def _copy(tmp_path: Path) -> Path:
    """A copy of the installed package and its shared library, importable with PYTHONPATH=<returned>."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "casarray", ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.find_spec(compiled.LIBRARY)
    assert spec is not None
    assert spec.origin is not None
    shutil.copy(spec.origin, site)
    return site


def test_the_compiled_modules_run_and_say_so() -> None:
    *files, described = _run(WHERE, CASARRAY_PURE="")
    assert len(files) == len(compiled.MODULES)
    assert all(_is_extension(path) for path in files), files
    assert described == f"compiled: mypyc {BUILD.mypyc}"
    version = subprocess.run(
        casarray("--version"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert version.stdout.endswith(f"(compiled: mypyc {BUILD.mypyc})\n")


def test_the_switch_runs_the_python_files_of_the_same_modules() -> None:
    *files, described = _run(WHERE, CASARRAY_PURE="1")
    assert [Path(path) for path in files] == [
        PACKAGE / compiled.source_path(name) for name in compiled.MODULES
    ]
    assert described == "pure Python: CASARRAY_PURE=1"


def _start(site: Path, tmp_path: Path) -> Proc:
    port = free_port()
    config = tmp_path / "casarray.yaml"
    config.write_text(
        "namespace: outlook.alwayshotcafe.com\nmode: l4\n"
        f"listen: {{address: 127.0.0.1, https_port: {port}}}\n"
        f"servers: [{{name: MB1, address: 127.0.0.2, port: {free_port('127.0.0.2')}}}]\n"
        "health: {enabled: false}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "CASARRAY_PURE": ""}
    proc = Proc(casarray("run", "-c", str(config)), tmp_path / "run.log", env)
    proc.wait_log("listening on")
    return proc


def test_compiled_modules_that_do_not_load_give_way_to_the_pure_ones_with_one_warning(tmp_path: Path) -> None:
    site = _copy(tmp_path)
    library = next(site.glob(f"{compiled.LIBRARY}.*"))
    library.write_bytes(b"built for another machine")  # dlopen refuses it, as it would a foreign ABI
    *files, described = _run(WHERE, PYTHONPATH=str(site), CASARRAY_PURE="")
    assert [Path(path) for path in files] == [
        site / "casarray" / compiled.source_path(name) for name in compiled.MODULES
    ]
    assert described.startswith("pure Python: the compiled modules do not load (")
    proc = _start(site, tmp_path)
    try:
        starts = [line for line in proc.log.splitlines() if " starting on " in line]
        assert len(starts) == 1, proc.log
        assert " WARNING casarray: casarray " in starts[0]
        assert "(pure Python: the compiled modules do not load (" in starts[0]
        assert proc.log.count("pure Python") == 1, proc.log
    finally:
        proc.stop()


def test_a_source_edited_since_it_was_compiled_runs_as_python_until_rebuilt(tmp_path: Path) -> None:
    site = _copy(tmp_path)
    with (site / "casarray" / "http" / "h1.py").open("a") as source:
        source.write("# edited after the build\n")
    *files, described = _run(WHERE, PYTHONPATH=str(site), CASARRAY_PURE="")
    assert not any(_is_extension(path) for path in files), files
    assert (
        described == "pure Python: http/h1.py changed since it was compiled (reinstall to compile it again)"
    )


def test_the_start_line_names_the_compiled_build_at_info(tmp_path: Path) -> None:
    proc = _start(_copy(tmp_path), tmp_path)
    try:
        starts = [line for line in proc.log.splitlines() if " starting on " in line]
        assert len(starts) == 1, proc.log
        assert f" INFO casarray: casarray 0.1.0 (compiled: mypyc {BUILD.mypyc}) starting on " in starts[0]
    finally:
        proc.stop()
