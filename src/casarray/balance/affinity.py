"""Affinity: what a client is balanced by, and the cookie that keeps a browser on one server.

Pure rules: no I/O, no asyncio, no clock. The Layer 4 relay and the Layer 7 proxy both ask here.

- `affinity: none` — the `balance:` algorithm chooses for every connection (l4) or request (l7).
  Microsoft's recommended design for Exchange 2013 and later (any server can serve any request).
- `affinity: source` — the client address is hashed (the `source` algorithm, a rendezvous hash), whatever
  `balance:` says, so a client keeps its server and every node of an HA pair makes the same choice.
- `affinity: cookie` (l7 only) — a request carrying our cookie for a server that is available goes to that
  server; otherwise the `balance:` algorithm chooses and the response sets the cookie (HAProxy's
  `cookie <name> insert`).

Every node makes the same choice: the source key is the client address in one canonical form, and a
cookie value is a MAC of the server's name under secrets every node shares (`affinity.secret_file`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Final

AFFINITIES: Final = ("none", "source", "cookie")

# Bytes of the MAC a cookie carries (shown as twice as many hex digits): 128 bits, so a client cannot
# find a valid value by trying.
_MAC_BYTES: Final = 16
# What the MAC covers besides the server: a label and version, so a value computed for anything else
# under the same secret (or by an older casarray) never passes as an affinity cookie.
_LABEL: Final = b"casarray affinity cookie v1\0"


def algorithm_name(balance: str, affinity: str) -> str:
    """The algorithm a pool uses: `affinity: source` overrides `balance:` with the source hash, as
    `balance: source` does; with `none` or `cookie` (for requests without a valid cookie) it is `balance:`."""
    return "source" if affinity == "source" else balance


def source_key(address: str) -> bytes:
    """The key `affinity: source` hashes: the client's IP address in one form on every node. A node
    listening on `::` sees an IPv4 client as ::ffff:192.0.2.7 (RFC 4291 §2.5.5.2), one listening on an
    IPv4 address as 192.0.2.7; a link-local IPv6 address carries the receiving interface's zone
    (fe80::1%eth0, RFC 4007 §11), which differs between nodes. Both are dropped, so the same client is
    the same key wherever it lands. Addresses come from the kernel (inet_ntop), already canonical."""
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    zone = address.find("%")
    if zone >= 0:
        address = address[:zone]
    return address.encode()


def cookie_secret(namespace: str) -> bytes:
    """The key cookie values are signed with when no `affinity.secret_file` is set: derived from the
    namespace, so every node, worker and generation agrees with no shared file — but anyone who knows
    the namespace can compute it (and so choose a server): `casarray check` warns about it."""
    return hashlib.sha256(b"casarray affinity " + namespace.encode()).digest()


def cookie_value(secret: bytes, server: str) -> bytes:
    """A server's cookie value under `secret`: HMAC-SHA256 (RFC 2104) of the server's name, first 16
    bytes in hex. Opaque: it shows neither the name nor an address. Renaming or removing the server, or
    retiring the secret, makes old values name nothing. The name alone, not its address: nodes whose
    configs spell an address differently (an IP here, a host name there) still agree."""
    return hmac.new(secret, _LABEL + server.encode(), "sha256").hexdigest()[: 2 * _MAC_BYTES].encode()


class AffinityCookie:
    """The affinity cookie of one listener: its name, and every value that names a server.

    `secrets`: the first signs (the value set in responses), every one verifies, so a secret is
    rotated without unpinning anyone — add the new one first, reload every node, later drop the old.
    Every value is computed here once; checking a request's cookie is one dictionary lookup, and a value
    that is not in the table (forged, another array's, a removed or renamed server, a retired secret)
    names nothing. The table only ever yields the name of a configured server: a client cannot name an
    address."""

    __slots__ = ("_by_server", "_by_value", "_prefix", "name")

    def __init__(self, name: str, secrets: Sequence[bytes], servers: Iterable[str]) -> None:
        if not secrets:
            raise ValueError("an affinity cookie needs at least one secret")
        self.name: Final = name.encode()
        self._prefix = self.name + b"="
        servers = list(servers)
        self._by_server: dict[str, bytes] = {s: cookie_value(secrets[0], s) for s in servers}
        self._by_value: dict[bytes, str] = {}
        for secret in reversed(secrets):  # the signing secret's values written last: they win any clash
            self._by_value.update({cookie_value(secret, s): s for s in servers})

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
        already does (under the signing secret: a value signed with an older one is replaced). Secure and
        HttpOnly: the cookie rides only on https and is no business of scripts; SameSite=None keeps it on
        Outlook's and OWA's cross-site requests (as HAProxy's `attr SameSite=None`)."""
        value = self._by_server[server]
        if presented == value:
            return None
        return self._prefix + value + b"; Path=/; Secure; HttpOnly; SameSite=None"
