"""One shallow error family. Library code raises these; only cli.py prints and exits."""

from __future__ import annotations

import os
import re


class CasarrayError(Exception):
    """An error an operator can act on: what went wrong, where, and a hint how to fix it."""

    def __init__(self, what: str, where: str = "", hint: str = "") -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(CasarrayError):
    """The configuration file is not valid."""


class InventoryError(CasarrayError):
    """An inventory file (namespace toolkit) is not valid."""


class StartupError(CasarrayError):
    """The balancer could not start (port in use, unreadable certificate, unresolvable server)."""


def reason_of(exc: BaseException) -> str:
    """An exception in words for one log or error line. A failure to connect says what the system said
    ("Connection refused"), found down the chain of causes (an HTTP client wraps it in "All connection
    attempts failed"); anything else, its first line without the "[Errno 111] " before the words."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    return re.sub(r"^\[Errno -?\d+\] ", "", text)
