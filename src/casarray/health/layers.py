"""The first two layers of every check, shared by the HTTPS and mail probes and by `doctor`: a TCP
connect (L4) and, when asked, a TLS handshake (L6), both bounded by the caller's deadline. A failure
comes back as the HAProxy result code and a reason, never as an exception."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

P = TypeVar("P", bound=asyncio.Protocol)


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    reason: str
    rejected: bool = False  # the server's certificate failed verification (doctor then looks at it)


@dataclass(frozen=True, slots=True)
class Wording:
    """How a few failures are phrased. The checks' reasons (logs, status API, metrics labels) and
    doctor's rows have said these differently from the start; each keeps its own words."""

    refused: str | None  # None: "connect error: <strerror>", like any other connect error
    rejected: str  # before the verification error of a refused certificate
    closed: str  # the peer closed during the handshake


CHECK_WORDING: Final = Wording(
    "connect refused", "TLS certificate rejected", "TLS error: connection closed during the handshake"
)
DOCTOR_WORDING: Final = Wording(None, "certificate rejected", "connection closed during the TLS handshake")


async def open_layers(
    factory: Callable[[], P],
    address: str,
    port: int,
    deadline: float,
    tls: tuple[ssl.SSLContext, str] | None,
    wording: Wording = CHECK_WORDING,
) -> tuple[asyncio.Transport, P] | Failed:
    """(transport, protocol) ready for the protocol dialogue, or why not. `tls`: context and SNI."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline):
            transport, protocol = await loop.create_connection(factory, address, port)
    except TimeoutError:
        return Failed("L4TOUT", "connect timeout")
    except ConnectionRefusedError as exc:
        return Failed("L4CON", wording.refused or f"connect error: {exc.strerror or exc}")
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
        failed = Failed("L6RSP", f"{wording.rejected}: {exc.verify_message}", rejected=True)
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        failed = Failed("L6RSP", f"TLS error: {exc}")
    else:
        if secured is not None:
            return secured, protocol
        failed = Failed("L6RSP", wording.closed)
    transport.abort()
    return failed
