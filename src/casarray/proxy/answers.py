"""The answers the balancer gives itself, without a server: error pages and redirects. Bytes out only.

Redirects are built from configured names and checked ports (proxy/router.py `Router.authority`), never
from client text (DESIGN.md §8)."""

from __future__ import annotations

from collections.abc import Sequence

from casarray.http.h1 import Headers, serialize_head

_REASONS = {
    301: "Moved Permanently",
    302: "Found",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def error_response(
    status: int, detail: str, *, close: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A small HTML error page with its status; `Connection: close` when the connection ends after it."""
    reason = _REASONS.get(status, "Error")
    body = (
        f"<!DOCTYPE html><html><head><title>{status} {reason}</title></head><body><h1>{status} "
        f"{reason}</h1><p>{detail}</p><hr><p>casarray</p></body></html>\n"
    ).encode()
    headers: Headers = [
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-store"),
    ]
    headers += list(extra)
    if close:
        headers.append((b"Connection", b"close"))
    return serialize_head(f"HTTP/1.1 {status} {reason}".encode(), headers) + body


def found(authority: bytes, location: bytes, *, hsts: float | None, close: bool) -> bytes:
    """302 to https://<authority><location> (the https listener's "/" and "/owa" → "/owa/")."""
    headers: Headers = [(b"Location", b"https://" + authority + location), (b"Content-Length", b"0")]
    if hsts is not None:
        # tls.hsts: the browser goes to https itself next time (RFC 6797 §6.1). Only here, on
        # https (§7.2: never over plain http), and without includeSubDomains: other names under
        # the domain are not ours to vouch for.
        headers.append((b"Strict-Transport-Security", b"max-age=%d" % int(hsts)))
    if close:
        headers.append((b"Connection", b"close"))
    return serialize_head(b"HTTP/1.1 302 Found", headers)


def https_redirect_target(target: bytes) -> bytes:
    """The path a plain-http request is sent to on https: its own path, "/owa/" for "/", "/owa" or a
    target that is not a path (never client text as an authority)."""
    path = target if target.startswith(b"/") else b"/owa/"
    if path.split(b"?", 1)[0] in (b"/", b"/owa"):
        path = b"/owa/"
    return path


def moved_permanently(authority: bytes, path: bytes) -> bytes:
    """301 to https://<authority><path>, then close (the plain-http listener's only answer)."""
    return serialize_head(
        b"HTTP/1.1 301 Moved Permanently",
        [
            (b"Location", b"https://" + authority + path),
            (b"Content-Length", b"0"),
            (b"Connection", b"close"),
        ],
    )
