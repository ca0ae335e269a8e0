"""The forwarding rules: what of a request reaches a server and what of a response reaches a client.

Heads are forwarded as received (names' case and order kept: old Outlook and ActiveSync clients break
otherwise) minus the hop-by-hop fields, plus the proxy's own forwarding fields. No I/O: heads in, bytes out.
"""

from __future__ import annotations

from typing import Final

from casarray.http.h1 import RequestHead, ResponseHead, forward_block, serialize_head

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward. Transfer-Encoding is kept: the
# body is relayed with its framing unchanged, so the next hop needs it. Upgrade is dropped: Exchange
# client protocols do not switch protocols, and a tunnel would escape the per-request rules.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"trailer",
    }
)

# The forwarding fields: a client's own are dropped (X-Forwarded-For is then written by the proxy;
# a trusted proxy's X-Forwarded-For is extended), so a server never logs or trusts a forged address.
XFF: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
SKIP_REQUEST: Final = HOP_BY_HOP | XFF

# Requests sent again to another server when the first closed before a byte of answer (RFC 9110
# §9.2.2: idempotent; only these two, and only without a body, which is gone once sent).
IDEMPOTENT_RETRY: Final = frozenset({b"GET", b"HEAD"})


def forwarded_fields(peer: str) -> bytes:
    """The fields appended to every request of a client that is not a trusted proxy, with the blank
    line that ends the head (IIS can log X-Forwarded-For in a custom field)."""
    return b"X-Forwarded-For: " + peer.encode() + b"\r\nX-Forwarded-Proto: https\r\n\r\n"


def forward_request(
    head: RequestHead, target: bytes, host: bytes, peer: str, forwarded: bytes | None
) -> bytes:
    """The request head as a server gets it. `target` is the normalised target (the same object as
    `head.target` when normalising changed nothing), `host` the authority an absolute-form target
    named, `forwarded` the client's `forwarded_fields` (None for a trusted proxy)."""
    if target is head.target and forwarded is not None:
        return head.line + forward_block(head, SKIP_REQUEST) + forwarded
    return _forward_request_slowly(head, target, host, peer, forwarded is None)


def _forward_request_slowly(head: RequestHead, target: bytes, host: bytes, peer: str, trusted: bool) -> bytes:
    """The forwarded head when the fast path does not apply: a trusted proxy's X-Forwarded-For is
    appended to (otherwise it is replaced by the client address, which IIS can log), or an
    absolute-form target was normalised (Host becomes its authority). Hop-by-hop fields dropped."""
    out = [
        (n, v) for n, v in head.headers if n.lower() not in HOP_BY_HOP and n.lower() not in head.connection
    ]
    chain = [v for n, v in out if n.lower() == b"x-forwarded-for"] if trusted else []
    out = [(n, v) for n, v in out if n.lower() not in XFF]
    if target is not head.target:
        out = [(n, host if n.lower() == b"host" else v) for n, v in out]
    out.append((b"X-Forwarded-For", b", ".join([*chain, peer.encode()])))
    out.append((b"X-Forwarded-Proto", b"https"))
    return serialize_head(head.method + b" " + target + b" HTTP/" + head.version, out)


def forward_response(head: ResponseHead, *, close: bool, set_cookie: bytes | None) -> bytes:
    """The response head as the client gets it: hop-by-hop fields dropped, `Connection: close` when the
    connection ends after this response, the affinity cookie when one is to be set."""
    end = b"Connection: close\r\n\r\n" if close else b"\r\n"
    if set_cookie is not None:
        end = b"Set-Cookie: " + set_cookie + b"\r\n" + end
    return head.line + forward_block(head, HOP_BY_HOP) + end
