"""Builds casarray with its data plane compiled by mypyc (as mypy and black ship themselves), or as
pure Python. pyproject.toml holds the project's metadata; this file adds only the compilation.

    pip install .                   the modules listed in src/casarray/compiled.py, compiled
    pip install -e .                the same, editable: each compiled module lands beside its .py in src/
    CASARRAY_PURE=1 pip install .   pure Python: nothing compiled, neither mypy nor a C compiler needed

Compiling needs mypy (mypyc is part of it), which pip installs into the build environment as a build
requirement, and a C compiler with the Python headers. When mypyc or the compiler fails, the build says
why on stderr (`pip install -v` shows it) and installs the pure Python package; `casarray --version`
and the first log line of `casarray run` then say so. Either way the build writes a record
(casarray/compiled.json) that casarray reads at run time to choose between the two (compiled.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError

MYPY = "mypy==2.4.1"  # mypyc is part of mypy; pinned so that every build compiles the same code
PACKAGE_DIR = os.path.join("src", "casarray")


def _load_compiled() -> ModuleType:
    # The package's own list of compiled modules and its record format, without importing the package.
    spec = importlib.util.spec_from_file_location(
        "_casarray_compiled", os.path.join(PACKAGE_DIR, "compiled.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


compiled = _load_compiled()
PURE = compiled.pure_requested(os.environ)


def _build_requirements() -> list[str]:
    """mypy, and pydantic for the mypy plugin named in pyproject.toml (the config models are typed
    through it). Asked for only when compiling: a pure build needs nothing but setuptools."""
    if PURE:
        return []
    with open("pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    return [
        MYPY,
        *(r for r in project["dependencies"] if r.split(">")[0].split("=")[0].strip() == "pydantic"),
    ]


def _say(message: str) -> None:
    print(f"casarray build: {message}", file=sys.stderr, flush=True)


class CompiledDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        # Extensions are made by build_ext itself (mypyc runs only when something is built, not when
        # pip asks for metadata); this tells setuptools there will be some, and tags the wheel for
        # this platform. A pure build runs no build_ext and makes a py3-none-any wheel.
        return not PURE


def _places(command: build_ext | build_py) -> list[str]:
    """Where a build's modules go: the build directory, and src/ for an editable install."""
    places = [command.build_lib]
    if getattr(command, "inplace", False) or command.editable_mode:
        places.append(os.path.dirname(PACKAGE_DIR))
    return places


class BuildPure(build_py):
    """build_py that, for a pure build, writes its record and removes compiled modules left by an
    earlier build (an editable install's are in src/, where they would shadow the .py files)."""

    def run(self) -> None:
        super().run()
        if PURE:
            _say(f"{compiled.PURE_ENV}=1: installing the pure Python package")
            _finish(_places(self), [], {"pure": f"{compiled.PURE_ENV}=1 at install"})


class BuildCompiled(build_ext):
    """build_ext that asks mypyc for the extensions, and falls back to the pure package when it fails."""

    def run(self) -> None:
        places = _places(self)
        try:
            # mypyc runs here, when something is built, not whenever setuptools finalizes build_ext
            # (pip's metadata step does too). Then setuptools prepares the extensions as any other:
            # finalize_options once more, with the one option it cannot finalize twice reset.
            self.distribution.ext_modules = self._mypycify()
            self.swig_opts = None
            self.finalize_options()
            super().run()
        except (Exception, SystemExit) as exc:  # mypyc exits on a type error; the compiler raises
            reason = f"compiling with mypyc failed at install: {_one_line(exc)}"
            _say(f"{reason}; installing the pure Python package")
            self.extensions = []
            _finish(places, [], {"pure": reason, "failed": True})
            return
        from mypy.version import __version__ as mypyc_version

        sources = {
            compiled.source_path(name): compiled.source_digest(
                os.path.join(PACKAGE_DIR, compiled.source_path(name))
            )
            for name in compiled.MODULES
        }
        built = [self.get_ext_filename(self.get_ext_fullname(ext.name)) for ext in self.extensions]
        _say(f"compiled with mypyc {mypyc_version}: {len(compiled.MODULES)} modules")
        _finish(places, built, {"mypyc": mypyc_version, "sources": sources})

    def _mypycify(self) -> list[Any]:
        from mypyc.build import mypycify

        _say(f"compiling {len(compiled.MODULES)} modules with mypyc")
        paths = [os.path.join(PACKAGE_DIR, compiled.source_path(name)) for name in compiled.MODULES]
        # The compiled modules are type-checked as in `make types` (pyproject.toml's [tool.mypy]). The
        # modules they import but do not compile are read for their types only, with errors silenced:
        # their own dependencies (YAML, HTTP clients ...) are not in the build environment.
        return mypycify([*paths, "--follow-imports=silent"], group_name="casarray", opt_level="3")


def _finish(places: list[str], built: list[str], record: dict[str, Any]) -> None:
    """Write the record, and remove every compiled module this build did not make (from an earlier
    build: it would shadow its .py file)."""
    keep = {os.path.normpath(path) for path in built}
    for root in places:
        found = [name for name in _listdir(root) if name.startswith(compiled.LIBRARY + ".")]
        for directory, _, files in os.walk(os.path.join(root, "casarray")):
            found += [os.path.relpath(os.path.join(directory, name), root) for name in files]
        for path in found:
            if path not in keep and any(path.endswith(suffix) for suffix in EXTENSION_SUFFIXES):
                os.remove(os.path.join(root, path))
        os.makedirs(os.path.join(root, "casarray"), exist_ok=True)
        with open(os.path.join(root, "casarray", compiled.RECORD), "w", encoding="utf-8") as file:
            json.dump(record, file, indent=1, sort_keys=True)
            file.write("\n")


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return "mypyc reported errors (pip install -v shows them)"
    text = " ".join(str(exc).split())
    if isinstance(exc, CCompilerError):  # its text is the whole command line
        status = re.search(
            r"(failed with exit (code|status)|non-zero exit status) -?\d+|No such file or directory", text
        )
        return f"the C compiler failed ({status.group(0) if status else type(exc).__name__}; pip install -v shows why)"
    return f"{type(exc).__name__}: {text}"[:300]


setup(
    distclass=CompiledDistribution,
    cmdclass={"build_ext": BuildCompiled, "build_py": BuildPure},
    setup_requires=_build_requirements(),
)
