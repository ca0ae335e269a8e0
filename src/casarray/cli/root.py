"""The `casarray` command line (typer). Thin: parses arguments, calls the library, prints, exits.

Exit codes (DESIGN.md §4): 0 success, 1 failed check or bad input, 2 usage error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from casarray import __version__, compiled
from casarray.cli import announce, core, ctl, lab, namespace, tools

app = typer.Typer(
    name="casarray",
    help="Exchange client access behind one name: Layer-4/Layer-7 balancer and namespace toolkit.\n\n"
    "Verbs that read the balancer's config (run, check, doctor, export, announce, ctl) take -c FILE; without it "
    "they use ./casarray.yaml, else /etc/casarray/casarray.yaml.\n\n"
    "Example: casarray check -c casarray.yaml && casarray run -c casarray.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's layout): flags show no "<bool>" type, and text wraps to any terminal.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"casarray {__version__} ({compiled.current().describe()})")
        raise typer.Exit()


@app.callback()
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


core.register(app)
lab.register(app)
tools.register(app)
announce.register(app)
ctl.register(app)
app.add_typer(namespace.app, name="namespace", short_help="Plan, script and verify the Exchange URLs.")
