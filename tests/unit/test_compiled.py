"""Which build runs (casarray/compiled.py), decided from a package directory's build record, its
sources and the environment. The installed build itself is tested in
tests/integration/test_compiled_build.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casarray import compiled
from casarray.compiled import Build, choose, pure_requested, source_digest, source_path

PACKAGE = Path(compiled.__file__).parent


def _package(root: Path, record: dict[str, object] | None) -> Path:
    """A package directory with two compiled modules' sources and, if given, a build record."""
    for name in ("http/h1.py", "proxy/session.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\n")
    if record is not None:
        (root / compiled.RECORD).write_text(json.dumps(record))
    return root


def _compiled_record(root: Path) -> dict[str, object]:
    names = ("http/h1.py", "proxy/session.py")
    _package(root, None)
    return {"mypyc": "2.4.1", "sources": {name: source_digest(str(root / name)) for name in names}}


def test_a_source_tree_never_built_runs_pure(tmp_path: Path) -> None:
    build = choose(str(_package(tmp_path, None)), {})
    assert build == Build(compiled=False)
    assert build.describe() == "pure Python"


def test_an_unreadable_record_counts_as_no_build(tmp_path: Path) -> None:
    _package(tmp_path, None)
    (tmp_path / compiled.RECORD).write_text("{not json")
    assert choose(str(tmp_path), {}) == Build(compiled=False)


def test_a_build_made_pure_on_request_says_so_without_a_warning(tmp_path: Path) -> None:
    build = choose(str(_package(tmp_path, {"pure": "CASARRAY_PURE=1 at install"})), {})
    assert (build.compiled, build.fallback) == (False, False)
    assert build.describe() == "pure Python: CASARRAY_PURE=1 at install"


def test_a_build_whose_compilation_failed_is_a_fallback(tmp_path: Path) -> None:
    record = {"pure": "compiling with mypyc failed at install: CompileError: gcc failed", "failed": True}
    build = choose(str(_package(tmp_path, record)), {})
    assert (build.compiled, build.fallback) == (False, True)
    assert build.describe() == "pure Python: compiling with mypyc failed at install: CompileError: gcc failed"


def test_compiled_modules_that_load_run(tmp_path: Path) -> None:
    record = _compiled_record(tmp_path)
    _package(tmp_path, record)
    # Any module that imports stands for the shared library here: `json` does.
    build = choose(str(tmp_path), {}, library="json")
    assert build == Build(compiled=True, mypyc="2.4.1")
    assert build.describe() == "compiled: mypyc 2.4.1"


def test_the_switch_forces_pure_modules_although_compiled_ones_load(tmp_path: Path) -> None:
    _package(tmp_path, _compiled_record(tmp_path))
    build = choose(str(tmp_path), {"CASARRAY_PURE": "1"}, library="json")
    assert build == Build(compiled=False, mypyc="2.4.1", reason="CASARRAY_PURE=1")
    assert build.describe() == "pure Python: CASARRAY_PURE=1"


def test_compiled_modules_that_do_not_load_fall_back_with_the_reason(tmp_path: Path) -> None:
    _package(tmp_path, _compiled_record(tmp_path))
    build = choose(str(tmp_path), {}, library="casarray_absent__mypyc")
    assert (build.compiled, build.fallback) == (False, True)
    assert build.reason.startswith(
        "the compiled modules do not load (No module named 'casarray_absent__mypyc'"
    )


def test_a_source_changed_since_it_was_compiled_falls_back(tmp_path: Path) -> None:
    _package(tmp_path, _compiled_record(tmp_path))
    with (tmp_path / "proxy/session.py").open("a") as source:
        source.write("# edited\n")
    build = choose(str(tmp_path), {}, library="json")
    assert (build.compiled, build.fallback) == (False, True)
    assert build.reason.startswith("proxy/session.py changed since it was compiled")


def test_a_compiled_source_that_is_gone_falls_back(tmp_path: Path) -> None:
    _package(tmp_path, _compiled_record(tmp_path))
    (tmp_path / "http/h1.py").unlink()
    build = choose(str(tmp_path), {}, library="json")
    assert (build.compiled, build.reason.split(" ")[0]) == (False, "http/h1.py")


@pytest.mark.parametrize(
    ("value", "pure"), [("1", True), ("yes", True), ("", False), ("0", False), (" ", False)]
)
def test_the_switch_reads_any_value_but_empty_or_0_as_on(value: str, pure: bool) -> None:
    assert pure_requested({"CASARRAY_PURE": value}) is pure
    assert pure_requested({}) is False


def test_every_compiled_module_is_a_source_file_of_the_package() -> None:
    for name in compiled.MODULES:
        assert name.startswith("casarray.")
        assert (PACKAGE / source_path(name)).is_file(), name
    assert len(set(compiled.MODULES)) == len(compiled.MODULES)
