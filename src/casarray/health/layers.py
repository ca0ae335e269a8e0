"""The first two layers of every check, shared by the HTTPS and the mail probes: a TCP connect (L4)
and, when asked, a TLS handshake (L6), both bounded by the check's deadline. A failure comes back as
the HAProxy result code and a reason, never as an exception."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

P = TypeVar("P", bound=asyncio.Protocol)


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    reason: str


async def open_layers(
    factory: Callable[[], P],
    address: str,
    port: int,
    deadline: float,
    tls: tuple[ssl.SSLContext, str] | None,
) -> tuple[asyncio.Transport, P] | Failed:
    """(transport, protocol) ready for the protocol dialogue, or why not. `tls`: context and SNI."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline):
            transport, protocol = await loop.create_connection(factory, address, port)
    except TimeoutError:
        return Failed("L4TOUT", "connect timeout")
    except ConnectionRefusedError:
        return Failed("L4CON", "connect refused")
    except OSError as exc:
        return Failed("L4CON", f"connect error: {exc.strerror or exc}")
    if tls is None:
        return transport, protocol
    context, server_name = tls
    try:
        async with asyncio.timeout_at(deadline):
            secured = await loop.start_tls(transport, protocol, context, server_hostname=server_name)
    except TimeoutError:
        failed = Failed("L6TOUT", "TLS handshake timeout")
    except ssl.SSLCertVerificationError as exc:
        failed = Failed("L6RSP", f"TLS certificate rejected: {exc.verify_message}")
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        failed = Failed("L6RSP", f"TLS error: {exc}")
    else:
        if secured is not None:
            return secured, protocol
        failed = Failed("L6RSP", "TLS error: connection closed during the handshake")
    transport.abort()
    return failed
