"""The one parser of "host:port" text: listen addresses, DNS servers, Host header values.

RFC 3986 §3.2.2-3.2.3: host is an IP-literal in brackets ("[::1]"), an IPv4 address or a reg-name; the
port is digits. An IPv6 address names a port only in brackets ("[2001:db8::1]:443"): unbracketed, its
last group cannot be told from a port, so several colons without brackets are read as a bare IPv6
address or refused. Pure: no I/O, no resolution (a name stays a name).
"""

from __future__ import annotations

import ipaddress
import re

# reg-name without percent-encoding (RFC 3986 §3.2.2: unreserved / sub-delims): "x@evil", "a/b" and
# spaces are not names. re.ASCII: only ASCII letters and digits count.
_NAME = re.compile(r"[a-z0-9._~!$&'()*+,;=-]+", re.IGNORECASE | re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)  # RFC 3986 §3.2.3 port = *DIGIT; 5 bound it to 16 bits' size


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """'10.0.0.1:443', '[2001:db8::1]:443', 'name:443', 'name', '2001:db8::1' -> (host, port).

    The host comes back without brackets; the port is `default_port` when the text names none. A port is
    0-65535 (callers that need 1-65535 check it). ValueError says what is wrong."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("the IPv6 address has no closing bracket")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise ValueError(f"{inside!r} in brackets is not an IPv6 address") from None
        if not rest:
            return inside, default_port
        if not rest.startswith(":"):
            raise ValueError("only ':port' may follow the bracketed address")
        return inside, _port(rest[1:])
    colons = text.count(":")
    if colons > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(
                "too many colons (an IPv6 address with a port is written [address]:port)"
            ) from None
        return text, default_port
    host, colon, port_text = text.partition(":")
    if not host:
        raise ValueError("the host is missing")
    if _NAME.fullmatch(host) is None:
        raise ValueError(f"{host!r} is not a host name or address")
    return host, _port(port_text) if colon else default_port


def join_host_port(host: str, port: int) -> str:
    """(host, port) -> 'host:port', an IPv6 address in brackets (RFC 3986 §3.2.2): the inverse of
    split_host_port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str) -> int:
    if _PORT.fullmatch(text) is None:
        raise ValueError(f"the port {text!r} is not a number" if text else "the port is missing")
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


def is_loopback_host(host: str) -> bool:
    """True for loopback IP literals (any of 127.0.0.0/8, ::1) and the name localhost.

    Other names count as not loopback: what they resolve to can change after start-up."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
