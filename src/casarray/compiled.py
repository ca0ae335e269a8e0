"""Which build of the data plane runs: the modules compiled by mypyc, or the same modules as Python.

setup.py compiles `MODULES` with mypyc (as mypy and black ship themselves): one shared library,
`casarray__mypyc`, holds their code, and each module gets a small extension module beside its .py file.
Python's import system tries an extension module before a .py file of the same name, so the compiled
modules run wherever they were built. setup.py also writes `RECORD` next to this file: the mypyc
version, and a digest of each compiled source.

The .py files stay installed, and they run instead when:
- `CASARRAY_PURE=1` is set. At install time nothing is compiled (no mypy, no C compiler needed); at run
  time the .py files are imported although the compiled modules exist (debugging, and the unit tests
  against the pure build);
- the compiled modules do not load (built for another Python or machine, a missing shared library);
- a compiled module's source changed since it was compiled (an editable install, edited since).

`SourceFirst`, installed on `sys.meta_path` by the package's `__init__`, imports the .py file of each
compiled module then. It is all or nothing: compiled modules call each other's C functions directly, so
a compiled module beside the pure copy of its neighbour would see other classes than the rest of the
program does. The choice is made once per process, at the first import of a compiled module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Final

PURE_ENV: Final = "CASARRAY_PURE"
LIBRARY: Final = "casarray__mypyc"  # mypyc's shared library for the group named "casarray"
RECORD: Final = "compiled.json"
ROOT: Final = os.path.dirname(os.path.abspath(__file__))

# The data plane, compiled: what runs for every request and every byte relayed. Every other module
# (config, health checks, admin, the command line, the lab) runs as Python.
MODULES: Final = (
    "casarray.http.decode",
    "casarray.http.errors",
    "casarray.http.h1",
    "casarray.http.target",
    "casarray.proxy.answers",
    "casarray.proxy.forwarding",
    "casarray.proxy.router",
    "casarray.proxy.session",
    "casarray.balance.admission",
    "casarray.balance.affinity",
    "casarray.balance.algorithm",
    "casarray.balance.leastconn",
    "casarray.balance.queue",
    "casarray.balance.rendezvous",
    "casarray.balance.roundrobin",
    "casarray.balance.state",
    "casarray.engine.l4",
    "casarray.engine.l7",
    "casarray.engine.sockets",
    "casarray.engine.sweep",
    "casarray.engine.tlsfd",
)
_COMPILED: Final = frozenset(MODULES)


def source_path(module: str) -> str:
    """`casarray.http.h1` -> `http/h1.py`, relative to the package (the record's keys)."""
    return "/".join(module.split(".")[1:]) + ".py"


def source_digest(path: str) -> str:
    import hashlib

    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def pure_requested(environ: Mapping[str, str]) -> bool:
    """`CASARRAY_PURE=1` (any value but empty or 0): the pure Python modules, at install and at run time."""
    return environ.get(PURE_ENV, "").strip() not in ("", "0")


@dataclass(frozen=True, slots=True)
class Build:
    compiled: bool
    mypyc: str = ""  # the mypyc version that compiled the installed modules, if any
    reason: str = ""  # why the pure modules run, when the build says why
    fallback: bool = False  # compiled modules were wanted and cannot run: worth a warning

    def describe(self) -> str:
        if self.compiled:
            return f"compiled: mypyc {self.mypyc}"
        return f"pure Python: {self.reason}" if self.reason else "pure Python"


def choose(root: str, environ: Mapping[str, str], library: str = LIBRARY) -> Build:
    """Decide which build runs from the package directory `root`: its record, its sources, `environ`."""
    try:
        with open(os.path.join(root, RECORD), encoding="utf-8") as file:
            record = json.load(file)
        if "pure" in record:  # built pure: on request, or because compiling failed
            return Build(compiled=False, reason=str(record["pure"]), fallback=bool(record.get("failed")))
        mypyc = str(record["mypyc"])
        digests = {str(name): str(digest) for name, digest in record["sources"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Build(compiled=False)  # a source tree that was never built
    if pure_requested(environ):
        return Build(compiled=False, mypyc=mypyc, reason=f"{PURE_ENV}=1")
    for name, digest in digests.items():
        try:
            changed = source_digest(os.path.join(root, name)) != digest
        except OSError:
            changed = True
        if changed:
            reason = f"{name} changed since it was compiled (reinstall to compile it again)"
            return Build(compiled=False, mypyc=mypyc, reason=reason, fallback=True)
    try:
        importlib.import_module(library)
    except ImportError as exc:
        reason = f"the compiled modules do not load ({exc})"
        return Build(compiled=False, mypyc=mypyc, reason=reason, fallback=True)
    return Build(compiled=True, mypyc=mypyc)


_current: Build | None = None


def current() -> Build:
    """The build this process runs, decided once."""
    global _current
    if _current is None:
        _current = choose(ROOT, os.environ)
    return _current


class SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the .py file of a compiled module when the pure build runs; otherwise stays out of the way."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _COMPILED or current().compiled:
            return None
        stem = fullname.rpartition(".")[2]
        for entry in path or ():
            location = os.path.join(entry, stem + ".py")
            if os.path.isfile(location):
                return importlib.util.spec_from_file_location(fullname, location)
        return None


def install() -> None:
    """Put `SourceFirst` ahead of the import system's own finders (once)."""
    if not any(isinstance(finder, SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst())
