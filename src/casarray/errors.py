"""One shallow error family. Library code raises these; only cli.py prints and exits."""

from __future__ import annotations


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
