"""`casarray doctor`, `casarray init` and `casarray export` (registered by the tools that implement them)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
