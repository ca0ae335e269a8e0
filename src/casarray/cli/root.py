"""The `casarray` command line (typer). Thin: parses arguments, calls the library, prints, exits.

Exit codes (DESIGN.md §4): 0 success, 1 failed check or bad input, 2 usage error.

Each verb lives in one module of this package. `casarray run` (and every worker it starts) should not
pay for importing the lab, the doctor's clients or tree-sitter, so `make_app(verb)` registers only the
module that holds `verb`; with no known verb (`casarray`, `--help`, a typo) it registers them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Annotated, Final

import typer

from casarray import __version__, compiled

# verb -> the module of casarray.cli that registers it (tests/unit/test_cli.py checks this is complete).
VERBS: Final = {
    "run": "core",
    "check": "core",
    "worker": "core",
    "lab": "lab",
    "sim-cas": "lab",
    "doctor": "tools",
    "init": "tools",
    "export": "tools",
    "announce": "announce",
    "ctl": "ctl",
    "namespace": "namespace",
}
MODULES: Final = ("core", "lab", "tools", "announce", "ctl", "namespace")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"casarray {__version__} ({compiled.current().describe()})")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version, and whether the data plane runs compiled or as pure Python, and exit.",
        ),
    ] = False,
) -> None:
    """Exchange client access behind one name: Layer-4/Layer-7 balancer and namespace toolkit."""


def make_app(verb: str | None = None) -> typer.Typer:
    """The typer app with every verb, or, when `verb` is one of VERBS, with that verb's module only."""
    app = typer.Typer(
        name="casarray",
        help="Exchange client access behind one name: Layer-4/Layer-7 balancer and namespace toolkit.\n\n"
        "Verbs that read the balancer's config (run, check, doctor, export, announce, ctl) take -c FILE; "
        "without it they use ./casarray.yaml, else /etc/casarray/casarray.yaml.\n\n"
        "Example: casarray check -c casarray.yaml && casarray run -c casarray.yaml",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain help (click's layout): flags show no "<bool>" type, and text wraps to any terminal.
        rich_markup_mode=None,
    )
    app.callback()(_root)
    modules: Iterable[str] = (VERBS[verb],) if verb in VERBS else MODULES
    for name in modules:
        importlib.import_module(f"casarray.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    # `casarray.cli.root.app`: the whole app, built on first use (tests, documentation tools).
    if name == "app":
        whole = make_app()
        globals()["app"] = whole
        return whole
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
