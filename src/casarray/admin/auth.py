"""Who may read and who may change: one pure decision per request, no I/O, no clocks.

The rules (docs/operations.md, "Admin API access"):

- `admin.listen` on a loopback address (127.0.0.0/8, ::1, localhost): reads need no token; changes need
  the bearer token from `admin.token_file`. Without a token file, changes are allowed to local callers:
  the port is reachable only from this machine, like HAProxy's stats socket, and `casarray ctl` then works
  out of the box. Set a token file where other users share the machine.
- Any other address: every request needs the token (reads too: the snapshot names every server and its
  address). Without a token file everything is refused with 403 — the data plane keeps serving, the
  admin API stays locked until a token file is configured.
- A token presented with a read is checked even where reads need none, so a wrong token in `ctl` or a
  Prometheus job shows up at once instead of at the first change.

Token-less trust on loopback is what a browser can abuse: a page from anywhere may POST to
http://127.0.0.1:9090 (a "simple" cross-site request needs no CORS preflight), and DNS rebinding lets a
page whose name resolves to 127.0.0.1 read the API as same-origin. So a request that relies on loopback
trust must carry a loopback Host (an IP literal or localhost) and, when it changes something, an Origin
(if any) equal to that Host. A request with a valid token needs neither: a browser cannot add the
Authorization header cross-site without a preflight, which this API never answers.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from casarray.netaddr import is_loopback_host, join_host_port, split_host_port

__all__ = ["Access", "Policy", "Verdict", "admin_url", "decide", "is_loopback_host", "split_listen"]


class Access(enum.Enum):
    READ = "read"
    CHANGE = "change"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the admin server was configured with: where it listens and the token (None: no token file)."""

    loopback: bool
    token: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """None from `decide` means allowed; a Verdict is the refusal to send (401 or 403)."""

    status: int
    message: str


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9090', '[::1]:9090' or 'localhost:9090' -> (host, port). ValueError names the problem."""
    expected = f"expected address:port such as 127.0.0.1:9090, got {listen!r}"
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise ValueError(f"{expected}: {exc}") from None
    if port is None:
        raise ValueError(expected)
    return host, port


def admin_url(listen: str) -> str:
    """The URL this machine reaches an admin API listening on `listen` at: 'http://host:port', a wildcard
    address through loopback, an IPv6 address in brackets. ValueError as split_listen."""
    host, port = split_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{join_host_port(host, port)}"


def _host_of(header: str) -> str:
    """The host part of a Host header value ('127.0.0.1:9090', '[::1]:9090', 'localhost')."""
    try:
        return split_host_port(header)[0]
    except ValueError:  # not host[:port]: the whole value, which no loopback test accepts
        return header


def _origin_matches(origin: str, host_header: str) -> bool:
    """The browser's Origin names the same host:port the request was sent to (same-origin)."""
    parts = urlsplit(origin)
    return parts.scheme == "http" and parts.netloc.lower() == host_header.lower()


def token_matches(expected: str, presented: str) -> bool:
    # compare_digest: the time taken does not reveal how many leading characters were right.
    return hmac.compare_digest(expected.encode(), presented.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750 §2.1);
    "" for a header with another scheme or no token, None without a header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def decide(
    policy: Policy,
    access: Access,
    *,
    authorization: str | None = None,
    host: str | None = None,
    origin: str | None = None,
) -> Verdict | None:
    """Allow (None) or refuse (Verdict) one request, from its Authorization, Host and Origin headers."""
    presented = bearer(authorization)
    if presented is not None and policy.token is not None:
        if not presented:
            return Verdict(401, "expected an 'Authorization: Bearer <token>' header")
        if not token_matches(policy.token, presented):
            return Verdict(401, "wrong token (see admin.token_file)")
        return None  # a valid token allows everything, from anywhere
    if not policy.loopback:
        if policy.token is None:
            return Verdict(
                403,
                "the admin API listens beyond loopback and admin.token_file is not set: "
                "set a token file (or listen on 127.0.0.1) and restart",
            )
        return Verdict(401, "a bearer token is required (admin.listen is not a loopback address)")
    if access is Access.CHANGE and policy.token is not None:
        return Verdict(401, "a bearer token is required for changes (see admin.token_file)")
    # Allowed on loopback trust alone: make sure a browser is not being used against us.
    if host is None or not is_loopback_host(_host_of(host)):
        return Verdict(
            403,
            f"Host {host!r} is not a loopback address: use http://127.0.0.1:<port> "
            "(names other than localhost are refused without a token, against DNS rebinding)",
        )
    if access is Access.CHANGE and origin is not None and not _origin_matches(origin, host):
        return Verdict(403, f"cross-origin change refused (Origin {origin!r})")
    return None
