"""The `casarray` command line: the typer application is `casarray.cli.root.app`.

`main()` first offers the arguments to the fast path of `casarray ctl health` (cli/health.py), which
keepalived and BGP watchers run every second: it answers before typer, rich, httpx and the config
models are imported. Everything else, and `ctl health` in any other form, goes to the typer app.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from casarray.cli.root import app

__all__ = ["app", "main"]


def main() -> None:
    from casarray.cli.health import fast_main

    code = fast_main(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from casarray.cli.root import make_app

    # Only the module of the verb asked for is imported (cli/root.py); root options come first.
    verb = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    make_app(verb)()


def __getattr__(name: str) -> Any:
    # `from casarray.cli import app` (tests, tools): imported on first use, not with the package.
    if name == "app":
        from casarray.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
