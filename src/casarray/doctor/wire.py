"""The doctor's own network exchanges: a server's certificate, and one request through the VIP.

Health checks of the servers themselves go through the balancer's probe (casarray.health.checker); what
is here answers two other questions: which certificate does a server present (the bytes, to compare),
and which server answered a request sent through the VIP (the `X-FEServer` header Exchange puts on every
response; NGINX's Exchange guide shows it next to the healthcheck.htm body). Results carry HAProxy's
check codes like the probe's (L4CON, L4TOUT, L6RSP, L6TOUT, L7OK, L7STS, L7RSP, L7TOUT).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from casarray.health.verdict import judge

_HEAD_LIMIT = 64 * 1024
_BODY_KEEP = 256  # the healthcheck.htm body is "200 OK<br/>" and an FQDN


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The leaf a server presented. `der` is None when no handshake completed; `verified` says whether
    it passed the context's checks (chain and name); `error` says why not."""

    der: bytes | None
    verified: bool
    code: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One response received through the VIP, judged like a health check."""

    ok: bool
    code: str
    reason: str
    status: int | None
    fe_server: str | None  # X-FEServer: which Exchange server answered
    duration: float


def unverified_context() -> ssl.SSLContext:
    """Accepts any certificate: only to show what a server presents after verification failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch_certificate(
    address: str,
    port: int,
    server_name: str,
    context: ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109 - split between phases to report L4TOUT or L6TOUT
) -> PeerCertificate:
    """Handshake with `context` (SNI `server_name`) and keep the leaf. When verification fails, a second
    handshake without verification still fetches the leaf so the report can show what is presented."""
    first, rejected = await _handshake(address, port, server_name, context, timeout)
    if not rejected:
        return first
    second, _ = await _handshake(address, port, server_name, unverified_context(), timeout)
    return PeerCertificate(second.der, False, first.code, first.error)


async def _handshake(
    address: str,
    port: int,
    server_name: str,
    context: ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109 - split between phases to report L4TOUT or L6TOUT
) -> tuple[PeerCertificate, bool]:
    """(result, whether the certificate was rejected by verification)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    transport: asyncio.Transport | None = None
    try:
        try:
            async with asyncio.timeout_at(deadline):
                transport, protocol = await loop.create_connection(asyncio.Protocol, address, port)
        except TimeoutError:
            return PeerCertificate(None, False, "L4TOUT", "connect timeout"), False
        except OSError as exc:
            return PeerCertificate(None, False, "L4CON", f"connect error: {exc.strerror or exc}"), False
        try:
            async with asyncio.timeout_at(deadline):
                tls = await loop.start_tls(
                    transport,
                    protocol,
                    context,
                    server_hostname=server_name,
                    ssl_handshake_timeout=timeout,
                )
        except TimeoutError:
            return PeerCertificate(None, False, "L6TOUT", "TLS handshake timeout"), False
        except ssl.SSLCertVerificationError as exc:
            return PeerCertificate(None, False, "L6RSP", f"certificate rejected: {exc.verify_message}"), True
        except (ssl.SSLError, OSError) as exc:
            return PeerCertificate(None, False, "L6RSP", f"TLS error: {exc}"), False
        if tls is None:
            return PeerCertificate(None, False, "L6RSP", "connection closed during the TLS handshake"), False
        transport = tls
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            return PeerCertificate(None, False, "L6RSP", "the server presented no certificate"), False
        return PeerCertificate(der, context.verify_mode != ssl.CERT_NONE, "L6OK"), False
    finally:
        if transport is not None:
            transport.abort()


async def get_via(
    address: str,
    port: int,
    path: str,
    host: str,
    context: ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109 - split between phases to report L4TOUT, L6TOUT or L7TOUT
) -> Answer:
    """GET `path` on address:port over TLS with SNI and Host = `host`, as a client of the VIP would."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    writer: asyncio.StreamWriter | None = None

    def answer(ok: bool, code: str, reason: str, status: int | None = None, fe: str | None = None) -> Answer:
        return Answer(ok, code, reason, status, fe, loop.time() - start)

    try:
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await asyncio.open_connection(address, port, limit=_HEAD_LIMIT)
        except TimeoutError:
            return answer(False, "L4TOUT", "connect timeout")
        except OSError as exc:
            return answer(False, "L4CON", f"connect error: {exc.strerror or exc}")
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context, server_hostname=host, ssl_handshake_timeout=timeout)
        except TimeoutError:
            return answer(False, "L6TOUT", "TLS handshake timeout")
        except ssl.SSLCertVerificationError as exc:
            return answer(False, "L6RSP", f"certificate rejected: {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            return answer(False, "L6RSP", f"TLS error: {exc}")
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: casarray-doctor\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
        )
        try:
            async with asyncio.timeout_at(deadline):
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = parse_head(head)
                body = await _read_body(reader, headers)
        except TimeoutError:
            return answer(False, "L7TOUT", "no complete response before the timeout")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            return answer(False, "L7RSP", f"bad response: {exc}")
        except (ssl.SSLError, OSError) as exc:
            return answer(False, "L7RSP", f"connection error: {exc}")
        ok, code, reason = judge(status, body)
        return answer(ok, code, reason, status, headers.get("x-feserver"))
    finally:
        if writer is not None:
            writer.transport.abort()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased, last one wins) of an HTTP/1.x response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """Up to _BODY_KEEP bytes of the body, whatever its framing (RFC 9112 §6)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < _BODY_KEEP:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size)
            await reader.readexactly(2)
            body += chunk
        return body[:_BODY_KEEP]
    length = headers.get("content-length")
    if length is not None:
        return await reader.readexactly(min(int(length), _BODY_KEEP))
    body = b""
    while len(body) < _BODY_KEEP and (data := await reader.read(_BODY_KEEP - len(body))):
        body += data
    return body
