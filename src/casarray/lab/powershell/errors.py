"""How a script run fails.

`ScriptError` is what leaves the package: a script that does not parse, a runtime error that ended the
run (a `throw`, a cmdlet error under -ErrorAction Stop), or a construct the interpreter does not carry
out. Each names the script, the line and the statement. The others are the interpreter's own signals
while it walks the tree.
"""

from __future__ import annotations

from tree_sitter import Node

from casarray.errors import CasarrayError


class ScriptError(CasarrayError):
    """A script did not run to its end: what happened, and the script, line and statement where."""


class RuntimeFault(Exception):
    """A PowerShell runtime error (a terminating one): `catch` sees it, `finally` runs after it."""

    def __init__(self, message: str, node: Node | None = None, *, value: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.value = value  # what `throw` threw


class Unsupported(Exception):
    """A construct this interpreter does not carry out: never skipped, never caught by the script."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class CmdletError(Exception):
    """A cmdlet's error record; -ErrorAction (or $ErrorActionPreference) decides what it does."""

    def __init__(self, message: str, *, category: str = "InvalidOperation") -> None:
        super().__init__(message)
        self.message = message
        self.category = category
