"""The protocol error the parsers raise; it carries the HTTP status the peer should get."""

from __future__ import annotations

from casarray.errors import CasarrayError


class ProtocolError(CasarrayError):
    def __init__(self, what: str, status: int = 400) -> None:
        super().__init__(what)
        self.status = status
