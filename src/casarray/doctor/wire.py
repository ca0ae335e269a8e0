"""The doctor's own network exchanges: a server's certificate, and one request through the VIP.

Health checks of the servers themselves go through the balancer's probe (casarray.health.checker); what
is here answers two other questions: which certificate does a server present (the bytes, to compare),
and which server answered a request sent through the VIP (the `X-FEServer` header Exchange puts on every
response; NGINX's Exchange guide shows it next to the healthcheck.htm body). Results carry HAProxy's
check codes like the probe's (L4CON, L4TOUT, L6RSP, L6TOUT, L7OK, L7STS, L7RSP, L7TOUT). Both go
through the checks' own layers (health.layers) and read responses with the proxy's framer.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from casarray.health.checker import ResponseProtocol, get_request
from casarray.health.layers import DOCTOR_WORDING, Failed, open_layers
from casarray.health.verdict import judge
from casarray.http.decode import ResponseStart
from casarray.http.errors import ProtocolError


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
    deadline = asyncio.get_running_loop().time() + timeout
    opened = await open_layers(
        asyncio.Protocol, address, port, deadline, (context, server_name), DOCTOR_WORDING
    )
    if isinstance(opened, Failed):
        return PeerCertificate(None, False, opened.code, opened.reason), opened.rejected
    transport, _ = opened
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            return PeerCertificate(None, False, "L6RSP", "the server presented no certificate"), False
        return PeerCertificate(der, context.verify_mode != ssl.CERT_NONE, "L6OK"), False
    finally:
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

    def answer(ok: bool, code: str, reason: str, status: int | None = None, fe: str | None = None) -> Answer:
        return Answer(ok, code, reason, status, fe, loop.time() - start)

    opened = await open_layers(ResponseProtocol, address, port, deadline, (context, host), DOCTOR_WORDING)
    if isinstance(opened, Failed):
        return answer(False, opened.code, opened.reason)
    transport, protocol = opened
    try:
        transport.write(get_request(path, host, "casarray-doctor"))
        try:
            async with asyncio.timeout_at(deadline):
                await protocol.finished
        except TimeoutError:
            return answer(False, "L7TOUT", "no complete response before the timeout")
        except ProtocolError as exc:
            return answer(False, "L7RSP", f"bad response: {exc}")
        except (ssl.SSLError, OSError) as exc:
            return answer(False, "L7RSP", f"connection error: {exc}")
        response = protocol.response
        assert response.head is not None
        if response.cut_short:
            return answer(False, "L7RSP", "bad response: connection closed in the middle of the body")
        ok, code, reason = judge(response.head.status, response.body)
        return answer(ok, code, reason, response.head.status, fe_server(response))
    finally:
        transport.abort()


def fe_server(response: ResponseStart) -> str | None:
    """The X-FEServer header: the Exchange server that answered (the last one, if repeated)."""
    value = response.header(b"x-feserver")
    return None if value is None else value.decode("latin-1")
