"""The doctor's own network exchanges: a server's certificate, one request through the VIP, and a
client's requests (with its log-on) through the VIP.

Health checks of the servers themselves go through the balancer's probe (casarray.health.checker); what
is here answers other questions: which certificate does a server present (the bytes, to compare), which
server answered a request sent through the VIP (the `X-FEServer` header Exchange puts on every
response; NGINX's Exchange guide shows it next to the healthcheck.htm body), and what a client is
answered when it asks as a client does (`fetch`: POST or GET, logging on with NTLM, Negotiate or Basic
when challenged). Results carry HAProxy's check codes like the probe's (L4CON, L4TOUT, L6RSP, L6TOUT,
L7OK, L7STS, L7RSP, L7TOUT). All go through the checks' own layers (health.layers) and read responses
with the proxy's framer.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import spnego
import spnego.channel_bindings
import spnego.exceptions

from casarray.doctor.certs import tls_server_end_point
from casarray.doctor.reply import Reply, challenge_token, offered_schemes
from casarray.health.checker import ResponseProtocol
from casarray.health.layers import DOCTOR_WORDING, Failed, open_layers
from casarray.health.verdict import judge
from casarray.http.decode import ResponseStart
from casarray.http.errors import ProtocolError

MAX_BODY: Final = 1024 * 1024  # an Autodiscover answer is a few KiB; Exchange caps requests at 1 MiB too
USER_AGENT: Final = "casarray-doctor"


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
    """GET `path` on address:port over TLS with SNI and Host = `host`, as a client of the VIP would
    (`fetch`), judged like the balancer's health check."""
    start = asyncio.get_running_loop().time()
    fetched = await fetch(address, port, host, "GET", path, context, timeout)
    duration = asyncio.get_running_loop().time() - start
    reply = fetched.reply
    if reply is None:
        return Answer(False, fetched.code, fetched.reason, None, None, duration)
    ok, code, reason = judge(reply.status, reply.body)
    return Answer(ok, code, reason, reply.status, reply.fe_server, duration)


# -- a client's requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who the client logs on as: `login` is DOMAIN\\user or a UPN (user@domain)."""

    login: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What came of one request: the reply, or why there is none (`code`, `reason`). `auth` names the
    scheme the client logged on with; `refused` is True when it did and the server still said 401 —
    the credentials were not accepted."""

    reply: Reply | None
    code: str
    reason: str
    auth: str | None = None
    refused: bool = False


# The schemes a client can log on with, in the order Outlook prefers them (Integrated Windows
# authentication before Basic). Negotiate is carried out with NTLM inside SPNEGO: there is no Kerberos
# ticket outside the domain (RFC 4559 §4; pyspnego falls back to NTLM).
_SCHEMES: Final = ("NTLM", "Negotiate", "Basic")


class KeptConnection(ResponseProtocol):
    """ResponseProtocol for several requests in a row on one connection (NTLM authenticates a
    connection, so its handshake must stay on one)."""

    def __init__(self) -> None:
        super().__init__()
        self.response = ResponseStart(keep=MAX_BODY)
        self.closed = False

    def next_response(self) -> None:
        self.response = ResponseStart(keep=MAX_BODY)
        self.finished = asyncio.get_running_loop().create_future()
        self.finished.add_done_callback(lambda f: f.cancelled() or f.exception())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        super().connection_lost(exc)


def request_bytes(
    method: str, target: str, host: str, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def fetch(
    address: str,
    port: int,
    host: str,
    method: str,
    target: str,
    context: ssl.SSLContext | None,
    timeout: float,  # noqa: ASYNC109 - the whole exchange, log-on included
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    credentials: Credentials | None = None,
) -> Fetched:
    """`method target` on address:port over TLS with SNI and Host = `host` (plain http without a
    `context`), as a client of the VIP.
    When the server answers 401 and `credentials` are given, log on on the same connection as a client
    does: NTLM or Negotiate (bound to the TLS channel for Extended Protection: the tls-server-end-point
    of the certificate this connection saw, RFC 5929 §4.1), else Basic. Never raises for what the
    network or the server does."""
    deadline = asyncio.get_running_loop().time() + timeout
    # Host carries the port when it is not the scheme's default (RFC 9110 §7.2); SNI is the name alone.
    default = 80 if context is None else 443
    authority = host if port == default else f"{host}:{port}"
    tls = None if context is None else (context, host)
    opened = await open_layers(KeptConnection, address, port, deadline, tls, DOCTOR_WORDING)
    if isinstance(opened, Failed):
        return Fetched(None, opened.code, opened.reason)
    transport, protocol = opened
    try:

        async def send(extra: Sequence[tuple[str, str]]) -> Reply | Fetched:
            if protocol.closed:
                return Fetched(None, "L7RSP", "the server closed the connection in the middle of the log-on")
            protocol.next_response()
            transport.write(request_bytes(method, target, authority, [*headers, *extra], body))
            return await _read(protocol, deadline)

        first = await send(())
        if isinstance(first, Fetched):
            return first
        if first.status != 401 or credentials is None:
            return Fetched(first, "L7OK", f"HTTP {first.status}")
        offered = {s.lower() for s in offered_schemes(first.all("WWW-Authenticate"))}
        scheme = next((s for s in _SCHEMES if s.lower() in offered), None)
        if scheme is None:
            return Fetched(first, "L7OK", "HTTP 401 with no scheme this client can log on with")
        if scheme == "Basic":
            secret = base64.b64encode(f"{credentials.login}:{credentials.password}".encode()).decode()
            last = await send((("Authorization", f"Basic {secret}"),))
            if isinstance(last, Fetched):
                return last
            return Fetched(last, "L7OK", f"HTTP {last.status}", "Basic", last.status == 401)
        return await _windows_logon(send, transport, scheme, host, credentials)
    finally:
        transport.abort()


async def _windows_logon(
    send: Callable[[Sequence[tuple[str, str]]], Awaitable[Reply | Fetched]],
    transport: asyncio.Transport,
    scheme: str,
    host: str,
    credentials: Credentials,
) -> Fetched:
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    bindings = (
        spnego.channel_bindings.GssChannelBindings(application_data=tls_server_end_point(der))
        if der
        else None
    )
    try:
        context = spnego.client(
            credentials.login,
            credentials.password,
            hostname=host,
            service="HTTP",
            channel_bindings=bindings,
            protocol="ntlm" if scheme == "NTLM" else "negotiate",
        )
        token = context.step()
    except spnego.exceptions.SpnegoError as exc:
        return Fetched(None, "L7RSP", f"cannot start {scheme}: {exc}", scheme)
    # NEGOTIATE → CHALLENGE → AUTHENTICATE (MS-NLMP 1.3.1.1): at most a few legs.
    for _ in range(4):
        if token is None:
            break
        reply = await send((("Authorization", f"{scheme} {base64.b64encode(token).decode()}"),))
        if isinstance(reply, Fetched):
            return Fetched(reply.reply, reply.code, reply.reason, scheme)
        if reply.status != 401:
            return Fetched(reply, "L7OK", f"HTTP {reply.status}", scheme)
        challenge = challenge_token(reply, scheme)
        if challenge is None or context.complete:
            return Fetched(reply, "L7OK", "HTTP 401", scheme, refused=True)
        try:
            token = context.step(challenge)
        except spnego.exceptions.SpnegoError as exc:
            return Fetched(reply, "L7RSP", f"{scheme} handshake failed: {exc}", scheme, refused=True)
    return Fetched(None, "L7RSP", f"the {scheme} handshake did not end", scheme, refused=True)


async def _read(protocol: KeptConnection, deadline: float) -> Reply | Fetched:
    try:
        async with asyncio.timeout_at(deadline):
            await protocol.finished
    except TimeoutError:
        return Fetched(None, "L7TOUT", "no complete response before the timeout")
    except ProtocolError as exc:
        return Fetched(None, "L7RSP", f"bad response: {exc}")
    except (ssl.SSLError, OSError) as exc:
        return Fetched(None, "L7RSP", f"connection error: {exc}")
    response = protocol.response
    assert response.head is not None
    if response.cut_short:
        return Fetched(None, "L7RSP", "bad response: connection closed in the middle of the body")
    if len(response.body) >= MAX_BODY:
        return Fetched(None, "L7RSP", f"the response is larger than {MAX_BODY // 1024} KiB")
    head = response.head
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    return Reply(head.status, head.reason.decode("latin-1"), headers, response.body)
