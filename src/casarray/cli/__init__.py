"""The `casarray` command line. Thin: parses arguments, calls the library, prints, exits.

Exit codes (DESIGN.md §4): 0 success, 1 failed check or bad input, 2 usage error.
"""

from __future__ import annotations

import typer

from casarray.cli import core, ctl, lab, namespace, tools

app = typer.Typer(
    name="casarray",
    help="Exchange client access behind one name: Layer-4/Layer-7 balancer and namespace toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

core.register(app)
lab.register(app)
tools.register(app)
ctl.register(app)
app.add_typer(namespace.app, name="namespace")


def main() -> None:
    app()
