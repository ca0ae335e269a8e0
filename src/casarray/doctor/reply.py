"""A response as a client reads it, and the challenges in its WWW-Authenticate fields. Pure: no I/O.

RFC 9110 §11.6.1: a WWW-Authenticate field holds one or more challenges separated by commas, each a
scheme followed by a token (`NTLM TlRMTVNT…`) or auth-params (`Basic realm="a, b"`), which are
separated by commas too and may be quoted; a server may also send the field several times.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """The final response to a client's request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last field called `name` (any case), or None."""
        found = None
        for key, value in self.headers:
            if key.lower() == name.lower():
                found = value
        return found

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def fe_server(self) -> str | None:
        """X-FEServer: the Exchange server that answered."""
        return self.header("X-FEServer")


def offered_schemes(values: Sequence[str]) -> list[str]:
    """The scheme names of WWW-Authenticate values, in order, each once."""
    schemes: list[str] = []
    for value in values:
        for part in _split_outside_quotes(value):
            word = part.strip().split(" ", 1)[0]
            if word and "=" not in word and word not in schemes:
                schemes.append(word)
    return schemes


def challenge_token(reply: Reply, scheme: str) -> bytes | None:
    """The base64 token of a `scheme <token>` challenge (an NTLM CHALLENGE message), None when there
    is none."""
    for value in reply.all("WWW-Authenticate"):
        word, _, rest = value.strip().partition(" ")
        if word.lower() == scheme.lower() and rest.strip():
            try:
                return base64.b64decode(rest.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


def _split_outside_quotes(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
