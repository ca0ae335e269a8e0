"""Affinity: what a client is balanced by, and the cookie that keeps a browser on one server.

Pure rules: no I/O, no asyncio, no clock. The Layer 4 relay and the Layer 7 proxy both ask here.

- `affinity: none` — the `balance:` algorithm chooses for every connection (l4) or request (l7).
  Microsoft's recommended design for Exchange 2013 and later (any server can serve any request).
- `affinity: source` — the client address is hashed (the `source` algorithm, a rendezvous hash), whatever
  `balance:` says, so a client keeps its server and every node of an HA pair makes the same choice.
- `affinity: cookie` (l7 only) — a request carrying our cookie for a server that is available goes to that
  server; otherwise the `balance:` algorithm chooses and the response sets the cookie (HAProxy's
  `cookie <name> insert`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Final

AFFINITIES: Final = ("none", "source", "cookie")


def algorithm_name(balance: str, affinity: str) -> str:
    """The algorithm a pool uses: `affinity: source` overrides `balance:` with the source hash, as
    `balance: source` does; with `none` or `cookie` (for requests without a valid cookie) it is `balance:`."""
    return "source" if affinity == "source" else balance


def cookie_secret(namespace: str) -> bytes:
    """The key the cookie values are derived with: from the namespace, so every node of an HA pair (and
    every worker, and every generation after a reload) gives a server the same value with no shared state."""
    return hashlib.sha256(b"casarray affinity " + namespace.encode()).digest()


def cookie_value(secret: bytes, server: str) -> bytes:
    """A server's cookie value: HMAC-SHA256 of its name, first 16 hex digits. The cookie does not show the
    server's name to clients, and a client cannot name a server by forging one."""
    return hmac.new(secret, server.encode(), "sha256").hexdigest()[:16].encode()


class AffinityCookie:
    """The affinity cookie of one listener: its name and one value per server (`affinity: cookie`)."""

    __slots__ = ("_by_server", "_by_value", "_prefix", "name")

    def __init__(self, name: str, namespace: str, servers: Iterable[str]) -> None:
        self.name: Final = name.encode()
        self._prefix = self.name + b"="
        secret = cookie_secret(namespace)
        self._by_server: dict[str, bytes] = {server: cookie_value(secret, server) for server in servers}
        self._by_value: dict[bytes, str] = {value: server for server, value in self._by_server.items()}

    def value(self, server: str) -> bytes:
        """The cookie value that names `server` (one of those given at construction)."""
        return self._by_server[server]

    def server(self, value: bytes | None) -> str | None:
        """The server a presented cookie value names; None for no cookie, or a stale or forged one."""
        return None if value is None else self._by_value.get(value)

    def find(self, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
        """Our cookie's value in a request's Cookie header fields, or None. RFC 6265 §5.4: pairs are
        separated by "; " (whitespace tolerated); a client may send several Cookie fields; the first wins."""
        prefix = self._prefix
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
        return None

    def set_cookie(self, server: str, presented: bytes | None) -> bytes | None:
        """The Set-Cookie field value that pins the client to `server`, or None when the cookie it presented
        already does. Secure and HttpOnly: the cookie rides only on https and is no business of scripts;
        SameSite=None keeps it on Outlook's and OWA's cross-site requests (as HAProxy's `attr SameSite=None`)."""
        value = self._by_server[server]
        if presented == value:
            return None
        return self._prefix + value + b"; Path=/; Secure; HttpOnly; SameSite=None"
