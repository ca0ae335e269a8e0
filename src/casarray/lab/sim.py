"""A simulated Exchange server: on the wire, one Mailbox server's client-access front end (IIS).

What it imitates, and why (sources in shared research, exchange-load-balancing.md):
- every virtual directory of the service catalog, matched case-insensitively on the first path segment
  like IIS; `/` answers 302 to /owa/ (KB 3002351: that is why probing `/` marks servers down);
- `/<vdir>/healthcheck.htm` → 200 `200 OK<br/>MB1.<domain>`, no authentication, generated in memory
  while the protocol's component is Active; anything else (here 503) when the component or the whole
  server (ServerWideOffline) is set inactive;
- `X-FEServer: MB1` on every response (Exchange's front-end marker, seen in NGINX's captured example);
- NTLM/Negotiate authenticate the TCP connection, and IIS keeps it authenticated: later requests on the
  same connection need no Authorization header (HTTP Server API credential caching, IIS AuthPersistence).
  A proxy that shares upstream connections between clients therefore substitutes users (HAProxy 581,
  2985) — the sim reproduces exactly that so proxy tests can catch it;
- unknown methods (RPC_IN_DATA, RPC_OUT_DATA, PROPFIND…) are accepted: RFC 9110 §9.1 makes a method any
  token, and Outlook Anywhere relies on that;
- the client-access settings Exchange keeps per server (vdir URLs, Outlook Anywhere, the SCP;
  lab/settings.py), read and set through `/_sim/settings`, and Autodiscover (POX and v2;
  lab/autodiscover.py) answered from them; Basic next to NTLM where Exchange leaves it on.

Test knobs (query parameters on ordinary vdir requests) and the `/_sim/` controls are documented in
docs/lab.md. The controls answer only when the Host header names the server itself or an IP literal, so
they are never reachable through the balancer on the namespace.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import hashlib
import inspect
import ipaddress
import json
import logging
import os
import random
import re
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import spnego
import spnego.channel_bindings
import spnego.exceptions
from aiohttp import web
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from casarray.doctor import certs
from casarray.exchange import catalog
from casarray.lab import LabError, autodiscover
from casarray.lab.pki import DEFAULT_DOMAIN, server_fqdn
from casarray.lab.settings import ServerSettings, SettingsError
from casarray.lab.users import Credentials

log = logging.getLogger("casarray.sim")

CONTROL_PREFIX: Final = "/_sim/"
CONTROL_MAX_BODY: Final = 64 * 1024  # a settings request is a few hundred bytes
MAX_RECORDED: Final = 2000
_BLOCK: Final = b"x" * 65536
PENDING: Final = b"PENDING\r\n"  # MAPI/HTTP keep-alive chunk (MS-OXCMAPIHTTP 2.2.3.3.5)

# Remote PowerShell authenticates with Kerberos only (DESIGN §6); the sim cannot do Kerberos, so its
# vdir stays open. Every other vdir takes NTLM/Negotiate when the sim has users.
NTLM_SERVICES: Final = frozenset(name for name in catalog.SERVICE_NAMES if name != "powershell")
# Basic, with the same users, where Exchange leaves it on after setup: the Autodiscover vdir
# (BasicAuthentication $true; Outlook's log lists "Negotiate, NTLM, Basic" from its 401), ActiveSync
# (BasicAuthEnabled, what phones use) and Outlook Anywhere (IISAuthenticationMethods Basic, Ntlm,
# Negotiate). On and off with NTLM: both need the users file.
BASIC_SERVICES: Final = frozenset({"autodiscover", "eas", "rpc"})
# A Host header the v2 AutodiscoverV1 answer may repeat: a name or [IPv6] literal and an optional port.
_HOST_HEADER: Final = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

# What IIS on an Exchange server puts on every response besides X-FEServer.
_IIS_HEADERS: Final = {"Server": "Microsoft-IIS/10.0", "X-Powered-By": "ASP.NET"}

TargetKind = Literal["health", "vdir", "root", "control", "unknown"]


# ---------------------------------------------------------------------------------------------------
# Pure parts (no sockets): what a path is, what the knobs ask for, who may use the controls.


@dataclass(frozen=True, slots=True)
class Target:
    """What a request path addresses."""

    kind: TargetKind
    service: catalog.Service | None = None


def classify(path: str) -> Target:
    """Map a (decoded, query-less) request path to what the sim serves there."""
    if path == "/":
        return Target("root")
    if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
        return Target("control")
    service = catalog.for_path(path)
    if service is None:
        return Target("unknown")
    # IIS compares paths case-insensitively (HAProxy community configs use `path_beg -i`).
    if path.lower() == service.health_path.lower():
        return Target("health", service)
    return Target("vdir", service)


@dataclass(frozen=True, slots=True)
class Knobs:
    """Test behaviour asked for through `sim-*` query parameters."""

    status: int = 200
    delay: float = 0.0  # seconds before the response headers
    size: int | None = None  # respond with this many bytes (Content-Length, streamed)
    chunks: int = 0  # respond chunked: this many PENDING chunks ...
    interval: float = 0.0  # ... each sent after this many seconds
    echo_headers: bool = False  # body = the request headers exactly as received
    digest: bool = False  # the reply names the request body's SHA-256 (end-to-end upload checks)
    seed: int | None = None  # with `size`: pseudo-random bytes from this seed instead of "x" repeated


_MAX_SECONDS: Final = 24 * 3600.0
_MAX_SIZE: Final = 1 << 40


def parse_knobs(query: Mapping[str, str]) -> Knobs:
    """Read the `sim-*` parameters; ValueError names the bad one."""

    def number(key: str, kind: type[int] | type[float], low: float, high: float) -> Any:
        text = query[key]
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a number") from None
        if not low <= value <= high:
            raise ValueError(f"{key}={text!r}: expected {low:g}..{high:g}")
        return value

    return Knobs(
        status=number("sim-status", int, 200, 599) if "sim-status" in query else 200,
        delay=number("sim-delay", float, 0, _MAX_SECONDS) if "sim-delay" in query else 0.0,
        size=number("sim-size", int, 0, _MAX_SIZE) if "sim-size" in query else None,
        chunks=number("sim-chunks", int, 0, 1_000_000) if "sim-chunks" in query else 0,
        interval=number("sim-interval", float, 0, _MAX_SECONDS) if "sim-interval" in query else 0.0,
        echo_headers=_flag(query, "sim-echo-headers"),
        digest=_flag(query, "sim-digest"),
        seed=number("sim-seed", int, 0, 2**32 - 1) if "sim-seed" in query else None,
    )


def _flag(query: Mapping[str, str], key: str) -> bool:
    return query.get(key, "0").lower() in ("1", "true", "yes")


def seeded_blocks(seed: int, size: int) -> Iterator[bytes]:
    """The `sim-size=SIZE&sim-seed=SEED` body, in the blocks it is sent in: pseudo-random bytes from
    `random.Random(seed)`, 64 KiB at a time. A client recomputes the expected bytes with this very
    function; unlike a repeated byte, they show a block lost, repeated, reordered or taken from
    another response."""
    rng = random.Random(seed)  # not for security: a reproducible byte stream
    remaining = size
    while remaining:
        n = min(remaining, len(_BLOCK))
        yield rng.randbytes(n)
        remaining -= n


def split_host(host: str) -> str:
    """The host part of a Host header value (drops the port; keeps an IPv6 literal without brackets)."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def control_host_allowed(host: str | None, fqdn: str) -> bool:
    """Controls are for direct use only: Host must be the server's own FQDN or an IP literal, never the
    namespace a balancer serves."""
    if not host:
        return False
    name = split_host(host).rstrip(".").lower()
    if name == fqdn.lower():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def health_body(name: str, domain: str) -> str:
    """Exchange prints `200 OK<br/>` and the answering server's FQDN with the name in upper case."""
    return f"200 OK<br/>{name.upper()}.{domain}"


def describe(
    server: str,
    service: str,
    method: str,
    path: str,
    body_bytes: int,
    user: str | None = None,
    body_sha256: str | None = None,
) -> str:
    """The default reply body: one `key=value` per line (see `parse_description`)."""
    lines = [
        f"server={server}",
        f"service={service}",
        f"method={method}",
        f"path={path}",
        f"body_bytes={body_bytes}",
    ]
    if body_sha256 is not None:
        lines.append(f"body_sha256={body_sha256}")
    if user:
        lines.append(f"user={user}")
    return "\n".join(lines) + "\n"


def parse_description(text: str) -> dict[str, str]:
    """The fields of a default reply body."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


AUTH_SCHEMES: Final = ("NTLM", "Negotiate")


def parse_authorization(value: str) -> tuple[str, bytes] | None:
    """`Authorization: NTLM|Negotiate <base64>` → (canonical scheme, token); None for anything else."""
    scheme, _, token = value.strip().partition(" ")
    canonical = next((s for s in AUTH_SCHEMES if s.lower() == scheme.lower()), None)
    if canonical is None or not token.strip():
        return None
    try:
        return canonical, base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_basic(value: str) -> tuple[str, str] | None:
    """`Authorization: Basic <base64 of user:password>` → (user, password); None for anything else.
    RFC 7617 §2: the user-id may not hold a colon, the password may; UTF-8 (§2.1), else Latin-1."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, colon, password = text.partition(":")
    return (user, password) if colon and user else None


def is_initial_token(token: bytes) -> bool:
    """A first handshake message: NTLM NEGOTIATE (type 1, MS-NLMP 2.2.1.1) or a SPNEGO NegTokenInit
    (RFC 4178 §4.2.1, application tag 0x60)."""
    if token.startswith(b"NTLMSSP\x00"):
        return token[8:12] == b"\x01\x00\x00\x00"
    return token[:1] == b"\x60"


def tls_server_end_point(certificate_pem: bytes) -> bytes:
    """Channel-binding data for Extended Protection of the first certificate of a PEM chain (RFC 5929
    §4.1; doctor/certs.py computes it, for the client side too)."""
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    return certs.tls_server_end_point(leaf.public_bytes(Encoding.DER))


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port); ValueError with what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.2:8443")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be 0..65535")
    return host, int(port_text)


# ---------------------------------------------------------------------------------------------------
# State the controls change and read.


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the sim received it."""

    seq: int
    time: float  # epoch seconds when the request line and headers had arrived
    method: str
    path: str  # raw request target, query included
    headers: tuple[tuple[str, str], ...]  # names in their original case and order
    body_bytes: int
    peer: str  # the connection's remote address, host:port
    kind: TargetKind
    service: str | None
    status: int
    user: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["headers"] = [list(pair) for pair in self.headers]
        return data


@dataclass(slots=True)
class SimState:
    """What the controls set (down/up, latency) and what the sim saw (requests, connections)."""

    max_recorded: int = MAX_RECORDED
    server_up: bool = True
    services_down: set[str] = field(default_factory=set)
    latency: float = 0.0  # seconds added before every response except the controls'
    requests: deque[RecordedRequest] = field(init=False)
    connections_open: int = 0
    connections_total: int = 0
    _seq: int = 0

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.max_recorded)

    def service_up(self, name: str) -> bool:
        return self.server_up and name not in self.services_down

    def set_service(self, name: str, up: bool) -> None:
        if up:
            self.services_down.discard(name)
        else:
            self.services_down.add(name)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def reset(self) -> None:
        self.server_up = True
        self.services_down.clear()
        self.latency = 0.0
        self.requests.clear()

    def select(
        self, kind: str | None = None, service: str | None = None, since: int = 0
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.seq > since
            and (kind is None or r.kind == kind)
            and (service is None or r.service == service)
        ]


# ---------------------------------------------------------------------------------------------------
# Per-connection state: IIS keeps NTLM state and the authenticated user on the TCP connection.


@dataclass(slots=True)
class ConnectionAuth:
    scheme: str | None = None
    context: spnego.ContextProxy | None = None  # a handshake in progress
    user: str | None = None  # DOMAIN\user once authenticated

    def reset(self) -> None:
        self.scheme, self.context, self.user = None, None, None


class _SimConnection(RequestHandler):
    """aiohttp's per-connection protocol, with two changes: the request parser accepts any token as a
    method (aiohttp's C parser, llhttp, rejects RPC_IN_DATA), and the connection carries its auth state.
    """

    def __init__(self, manager: _SimServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._parser = HttpRequestParserPy(self, loop, self._read_bufsize, **_parser_kwargs(self))
        self._sim_server = manager
        self.sim_state = manager.sim_state
        self.sim_auth = ConnectionAuth()
        self._sim_open = False
        self.sim_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sim_open = True
        self.sim_transport = transport  # aiohttp drops self.transport while a TLS close is pending
        self._sim_server.live.add(self)
        self.sim_state.connections_open += 1
        self.sim_state.connections_total += 1
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._sim_open:
            self._sim_open = False
            self._sim_server.live.discard(self)
            self.sim_state.connections_open -= 1
            self.sim_auth.reset()
        super().connection_lost(exc)


def _parser_kwargs(handler: RequestHandler) -> dict[str, Any]:
    """The settings aiohttp gives its own request parser, as far as this aiohttp version has them."""
    wanted = {
        "max_line_size": handler.max_line_size,
        "max_headers": handler.max_headers,
        "max_field_size": handler.max_field_size,
        "payload_exception": RequestPayloadError,
        "auto_decompress": False,  # count the bytes that were sent, not what they inflate to
        "max_msg_queue_size": getattr(handler, "_max_msg_queue_size", 0),
    }
    accepted = inspect.signature(HttpRequestParserPy.__init__).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


class _SimServer(web.Server):
    def __init__(self, handler: Any, sim_state: SimState, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sim_state = sim_state
        self.live: set[_SimConnection] = set()  # connections whose transport is not yet closed

    def __call__(self) -> RequestHandler:
        return _SimConnection(self, loop=self._loop, **self._kwargs)


@contextlib.contextmanager
def _ntlm_user_file(path: Path) -> Iterator[None]:
    """pyspnego's NTLM acceptor reads its users from $NTLM_USER_FILE; set it only around our calls so
    several sims with different users can share one process (asyncio: nothing runs in between)."""
    old = os.environ.get("NTLM_USER_FILE")
    os.environ["NTLM_USER_FILE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["NTLM_USER_FILE"]
        else:
            os.environ["NTLM_USER_FILE"] = old


def _write_ntlm_store(name: str, users: Credentials) -> Path:
    """The NTLM acceptor's store for these users (every name they may log on with, users.py), in a file
    only this process may read; removed when the server stops."""
    try:
        handle, path = tempfile.mkstemp(prefix=f"casarray-{name.lower()}-ntlm-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as store:
            store.write(users.ntlm_store())
    except OSError as exc:
        raise LabError(f"cannot write the NTLM store: {exc.strerror or exc}", f"sim-cas {name}") from exc
    return Path(path)


def server_ssl_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2 with ALPN http/1.1 (Exchange's IIS front end speaks HTTP/1.1 to balancers)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    for what, path in (("certificate", certificate), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LabError(f"cannot read the {what} {path}: {exc.strerror or exc}", "tls") from exc
    try:
        ctx.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        raise LabError(
            f"not a usable PEM certificate chain and matching key ({exc.reason or exc})",
            f"{certificate}, {key}",
        ) from exc
    return ctx


# ---------------------------------------------------------------------------------------------------
# The server.


class SimCas:
    """One simulated Exchange server. `await start()`, then `.port`; `await stop()` closes everything."""

    def __init__(
        self,
        name: str,
        *,
        certificate: Path,
        key: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        domain: str = DEFAULT_DOMAIN,
        ntlm_users: Path | None = None,
        extended_protection: bool = False,
        max_recorded: int = MAX_RECORDED,
        settings: ServerSettings | None = None,
    ) -> None:
        self.name = name.upper()
        self.domain = domain
        self.fqdn = server_fqdn(name, domain)
        # The vdir URLs, Outlook Anywhere and the SCP (lab/settings.py): as setup leaves them unless given.
        self.settings = settings or ServerSettings.installed(self.name, self.fqdn)
        # Who signs in and which mailboxes exist: the users file once started; without one, anyone.
        self.users = Credentials(domain=domain)
        self.host = host
        self.certificate = certificate
        self.key = key
        self.ntlm_users = ntlm_users
        self.extended_protection = extended_protection
        self.state = SimState(max_recorded=max_recorded)
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.ServerRunner | None = None
        self._server: _SimServer | None = None
        self._bindings: spnego.channel_bindings.GssChannelBindings | None = None
        self._ntlm_store: Path | None = None  # the acceptor's store, derived from the users file

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sim is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    async def start(self) -> None:
        ctx = server_ssl_context(self.certificate, self.key)
        if self.ntlm_users is not None:
            self.users = Credentials.from_file(self.ntlm_users, self.domain)
            self._ntlm_store = _write_ntlm_store(self.name, self.users)
        if self.extended_protection:
            self._bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=tls_server_end_point(self.certificate.read_bytes())
            )
        server = _SimServer(self._handle, self.state, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._remove_ntlm_store()
            reason = exc.strerror or str(exc)
            raise LabError(
                f"cannot listen on {self.host}:{self._requested_port}: {reason}", f"sim-cas {self.name}"
            ) from exc
        self._runner, self._server = runner, server
        self._port = int(runner.addresses[0][1])

    def _remove_ntlm_store(self) -> None:
        store, self._ntlm_store = self._ntlm_store, None
        if store is not None:
            store.unlink(missing_ok=True)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        server, self._server = self._server, None
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            # cleanup() only starts each TLS close and waits for the client's close_notify, which a
            # client that keeps its socket never sends: cut what is left so no socket is leaked.
            for conn in list(server.live):
                if isinstance(conn.sim_transport, asyncio.Transport):
                    conn.sim_transport.abort()
            for _ in range(100):
                if not server.live:
                    break
                await asyncio.sleep(0.01)
        self._remove_ntlm_store()

    async def __aenter__(self) -> SimCas:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- responses -------------------------------------------------------------------------------

    def _stamp(self, response: web.StreamResponse) -> web.StreamResponse:
        response.headers["X-FEServer"] = self.name
        for name, value in _IIS_HEADERS.items():
            response.headers[name] = value
        return response

    def _text(self, status: int, text: str, content_type: str = "text/plain") -> web.Response:
        body = b"" if status in (204, 304) else text.encode()
        response = web.Response(status=status, body=body, content_type=content_type)
        self._stamp(response)
        return response

    def _json(self, data: Any, status: int = 200) -> web.Response:
        response = web.json_response(data, status=status)
        self._stamp(response)
        return response

    # -- dispatch -------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target = classify(request.path)
        if target.kind == "control":
            return await self._control(request)
        arrived = time.time()
        pox = target.kind == "vdir" and request.path.lower() == autodiscover.POX_PATH
        body: bytes | None = None
        hasher: hashlib._Hash | None = None
        if pox and target.service is not None:
            body, body_bytes = await _read_body(request, target.service.max_body)
        else:
            # `sim-digest=1` is read before the body streams in: the hash is taken chunk by chunk, so a
            # 1 GiB upload is still never held (a bad knob value is answered 400 by _vdir_reply).
            if target.kind == "vdir" and _flag(request.query, "sim-digest"):
                hasher = hashlib.sha256()
            body_bytes = await _count_body(request, hasher)
        conn = cast(_SimConnection, request.protocol)
        user: str | None = None
        streamer: _Streamer | None = None
        response: web.StreamResponse
        v2 = (
            autodiscover.parse_v2_request(request.path, request.query)
            if target.service is not None and target.service.name == "autodiscover"
            else None
        )
        if target.kind == "root":
            response = self._text(302, "", "text/html")
            response.headers["Location"] = "/owa/"
        elif target.kind == "unknown" or target.service is None:
            response = self._text(404, "404 Not Found")
        elif not self.state.service_up(target.service.name):
            response = self._text(503, "503 Service Unavailable")
        elif target.kind == "health":
            response = self._text(200, health_body(self.name, self.domain), "text/html")
        elif v2 is not None:
            response = self._autodiscover_v2(request, v2)  # anonymous, as Exchange answers it
        else:
            challenge, user = self._authenticate(request, conn.sim_auth, target.service)
            if challenge is not None:
                response = challenge
            elif pox:
                response = self._autodiscover_pox(request, body, user)
            else:
                body_sha256 = hasher.hexdigest() if hasher is not None else None
                response, streamer = self._vdir_reply(request, target.service, body_bytes, user, body_sha256)
        self._record(request, arrived, body_bytes, target, response.status, user)
        if self.state.latency:
            await asyncio.sleep(self.state.latency)
        if streamer is not None:
            await streamer.delay()
            await streamer.send(request, response)
        return response

    def _record(
        self,
        request: web.BaseRequest,
        arrived: float,
        body_bytes: int,
        target: Target,
        status: int,
        user: str | None,
    ) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.state.requests.append(
            RecordedRequest(
                seq=self.state.next_seq(),
                time=arrived,
                method=request.method,
                path=request.raw_path,
                headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers),
                body_bytes=body_bytes,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
                kind=target.kind,
                service=target.service.name if target.service else None,
                status=status,
                user=user,
            )
        )

    def _vdir_reply(
        self,
        request: web.BaseRequest,
        service: catalog.Service,
        body_bytes: int,
        user: str | None,
        body_sha256: str | None = None,
    ) -> tuple[web.StreamResponse, _Streamer | None]:
        try:
            knobs = parse_knobs(request.query)
        except ValueError as exc:
            return self._text(400, f"400 Bad Request: {exc}\n"), None
        if knobs.echo_headers:
            text = "".join(
                f"{k.decode('latin-1')}: {v.decode('latin-1')}\r\n" for k, v in request.raw_headers
            )
            response: web.StreamResponse = self._text(knobs.status, text)
        elif (knobs.chunks or knobs.size is not None) and knobs.status not in (204, 304):
            response = self._stamp(web.StreamResponse(status=knobs.status))
        else:
            text = describe(
                self.name, service.name, request.method, request.raw_path, body_bytes, user, body_sha256
            )
            response = self._text(knobs.status, text)
        return response, _Streamer(knobs)

    # -- NTLM / Negotiate / Basic ---------------------------------------------------------------

    def _challenge(self, *tokens: str, basic_realm: str | None = None) -> web.Response:
        response = self._text(
            401, "401 - Unauthorized: Access is denied due to invalid credentials.", "text/html"
        )
        for value in tokens or AUTH_SCHEMES:
            response.headers.add("WWW-Authenticate", value)
        if basic_realm is not None and not tokens:
            response.headers.add("WWW-Authenticate", f'Basic realm="{basic_realm}"')
        return response

    def _authenticate(
        self, request: web.BaseRequest, auth: ConnectionAuth, service: catalog.Service
    ) -> tuple[web.Response | None, str | None]:
        """(401 response to send, None) while not authenticated; (None, user) once it is (user None when
        the sim has no users or the vdir takes no NTLM)."""
        if self.ntlm_users is None or service.name not in NTLM_SERVICES:
            return None, None
        # IIS's Basic realm defaults to the host name the client asked for.
        realm = split_host(self._asked_host(request)) if service.name in BASIC_SERVICES else None
        header = request.headers.get("Authorization")
        if header is None:
            # IIS keeps the identity on the connection: no header needed after the handshake.
            return (None, auth.user) if auth.user else (self._challenge(basic_realm=realm), None)
        basic = parse_basic(header) if realm is not None else None
        if basic is not None:
            # Basic authenticates this request only (RFC 7617): nothing is kept on the connection.
            user = self.users.logon(*basic)
            if user is None:
                log.info(
                    "%s: %s %s: Basic logon failed for %r", self.name, request.method, request.path, basic[0]
                )
                return self._challenge(basic_realm=realm), None
            return None, user
        parsed = parse_authorization(header)
        if parsed is None:
            auth.reset()
            return self._challenge(basic_realm=realm), None
        scheme, token = parsed
        if self._ntlm_store is None:  # not started, or stopped: nobody logs on
            return self._challenge(basic_realm=realm), None
        try:
            with _ntlm_user_file(self._ntlm_store):
                if (
                    auth.context is None
                    or auth.context.complete
                    or auth.scheme != scheme
                    or is_initial_token(token)
                ):
                    auth.reset()
                    auth.scheme = scheme
                    auth.context = spnego.server(
                        protocol="ntlm" if scheme == "NTLM" else "negotiate", channel_bindings=self._bindings
                    )
                out = auth.context.step(token)
        except spnego.exceptions.SpnegoError as exc:
            auth.reset()  # IIS 401.1: logon failed; the client starts over
            log.info("%s: %s %s: %s logon failed (%s)", self.name, request.method, request.path, scheme, exc)
            return self._challenge(basic_realm=realm), None
        if not auth.context.complete:
            if not out:
                auth.reset()
                return self._challenge(basic_realm=realm), None
            return self._challenge(f"{scheme} {base64.b64encode(out).decode()}"), None
        # A UPN log-on is accepted as the UPN: IIS names the account (DOMAIN\\user) whatever the name given.
        auth.user = self.users.account(auth.context.client_principal or "unknown")
        auth.context = None
        return None, auth.user

    # -- Autodiscover -----------------------------------------------------------------------------

    def _autodiscover_pox(
        self, request: web.BaseRequest, body: bytes | None, user: str | None
    ) -> web.Response:
        """POST /Autodiscover/Autodiscover.xml: the settings for the address asked, from this server's
        settings as they are now; Exchange answers a GET or a body that is not a request with 600."""
        address: str | None = None
        try:
            if request.method != "POST" or body is None:
                raise autodiscover.PoxError(autodiscover.INVALID_REQUEST)
            parsed = autodiscover.parse_pox_request(body)
            address = parsed.email
            hints = autodiscover.ClientHints.from_headers(request.headers)
            answer = autodiscover.pox_answer(parsed, self.settings, self.users.mailbox(parsed.email), hints)
        except autodiscover.PoxError as exc:
            log.info(
                "%s: Autodiscover %s for %s (user %s): %s %s",
                self.name, request.method, address or "no address", user, exc.code, exc,
            )  # fmt: skip
            answer = autodiscover.pox_error(exc, time_of_day=_time_of_day(), server=self.fqdn)
        response = web.Response(status=200, body=answer, content_type="text/xml", charset="utf-8")
        self._stamp(response)
        return response

    def _autodiscover_v2(self, request: web.BaseRequest, v2: autodiscover.V2Request) -> web.Response:
        """GET /autodiscover/autodiscover.json…: one protocol's URL as JSON. Exchange answers it without
        authentication (MSXFAQ, "Autodiscover V2": "V2 seems to always work anonymously")."""
        mailbox = self.users.mailbox(v2.email) if v2.email else None
        status, data = autodiscover.v2_answer(v2, self.settings, mailbox, self._asked_host(request))
        if status != 200:
            log.info("%s: Autodiscover v2 for %s: %s %s", self.name, v2.email, status, data["ErrorCode"])
        return self._json(data, status)

    def _asked_host(self, request: web.BaseRequest) -> str:
        """The Host header (name and port) when it is one, else this server's FQDN: what may be
        repeated in an answer."""
        host = request.headers.get("Host", "")
        return host if _HOST_HEADER.match(host) else self.fqdn

    # -- controls -------------------------------------------------------------------------------

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        body, _ = await _read_body(request, CONTROL_MAX_BODY)
        if not control_host_allowed(request.headers.get("Host"), self.fqdn):
            log.warning(
                "%s: refused %s %s: Host %r is neither %s nor an IP address",
                self.name, request.method, request.path, request.headers.get("Host"), self.fqdn,
            )  # fmt: skip
            return self._json({"error": f"controls answer only on {self.fqdn} or an IP address"}, 403)
        parts = [p for p in request.path[len(CONTROL_PREFIX) :].split("/") if p]
        method = request.method
        state = self.state
        match parts:
            case ["state"] if method == "GET":
                return self._json(self.snapshot())
            case ["settings"] if method == "GET":
                return self._json(self.settings.document())
            case ["settings"] if method == "POST":
                return self._change_settings(body)
            case ["requests"] if method == "GET":
                try:
                    since = int(request.query.get("since", "0"))
                except ValueError:
                    return self._json({"error": "since: expected an integer"}, 400)
                records = state.select(request.query.get("kind"), request.query.get("service"), since)
                return self._json({"requests": [r.as_json() for r in records]})
            case ["server", ("down" | "up") as word] if method == "POST":
                state.server_up = word == "up"
                return self._json(self.snapshot())
            case ["service", name, ("down" | "up") as word] if method == "POST":
                try:
                    service = catalog.get(name)
                except KeyError:
                    return self._json(
                        {"error": f"unknown service {name!r}", "services": list(catalog.SERVICE_NAMES)}, 404
                    )
                state.set_service(service.name, word == "up")
                return self._json(self.snapshot())
            case ["latency"] if method == "POST":
                try:
                    ms = float(request.query["ms"])
                    if not 0 <= ms <= _MAX_SECONDS * 1000:
                        raise ValueError
                except (KeyError, ValueError):
                    return self._json({"error": "latency: expected ?ms=N (milliseconds, N ≥ 0)"}, 400)
                state.latency = ms / 1000
                return self._json(self.snapshot())
            case ["reset"] if method == "POST":
                state.reset()
                return self._json(self.snapshot())
            case (
                ["state" | "requests" | "settings"]
                | ["server", "down" | "up"]
                | ["service", _, "down" | "up"]
                | ["latency" | "reset"]
            ):
                return self._json({"error": f"method {method} not allowed here"}, 405)
        return self._json({"error": f"no control at {request.path}"}, 404)

    def _change_settings(self, body: bytes | None) -> web.Response:
        """`POST /_sim/settings`: one Set- cmdlet's worth of change (lab/settings.py); 400 names what is
        wrong and changes nothing."""
        try:
            if body is None:
                raise SettingsError(f"the request body is larger than {CONTROL_MAX_BODY} bytes")
            try:
                request = json.loads(body.decode("utf-8-sig"))
            except UnicodeDecodeError:
                raise SettingsError("the request body is not UTF-8") from None
            except json.JSONDecodeError as exc:
                raise SettingsError(
                    f"the request body is not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
                ) from None
            settings, changes = self.settings.apply(request)
        except SettingsError as exc:
            log.warning("%s: settings change refused: %s", self.name, exc)
            return self._json({"error": str(exc)}, 400)
        self.settings = settings
        first = changes[0]
        log.info(
            "%s: %s %s: %s", self.name, first.cmdlet, first.identity, ", ".join(c.describe() for c in changes)
        )
        return self._json(settings.document())

    def snapshot(self) -> dict[str, Any]:
        """The sim's state as /_sim/state shows it."""
        state = self.state
        return {
            "name": self.name,
            "fqdn": self.fqdn,
            "server": "up" if state.server_up else "down",
            "services": {n: "up" if state.service_up(n) else "down" for n in catalog.SERVICE_NAMES},
            "latency_ms": round(state.latency * 1000, 3),
            "ntlm": self.ntlm_users is not None,
            "extended_protection": self.extended_protection,
            "connections": {"open": state.connections_open, "total": state.connections_total},
            "recorded": len(state.requests),
        }


@dataclass(frozen=True, slots=True)
class _Streamer:
    """Sends what the knobs ask for after the response is chosen (delay, streamed size, chunks)."""

    knobs: Knobs

    async def delay(self) -> None:
        if self.knobs.delay:
            await asyncio.sleep(self.knobs.delay)

    async def send(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        knobs = self.knobs
        if isinstance(response, web.Response) or response.status in (204, 304):
            return
        head = request.method == "HEAD"
        if knobs.chunks:
            # MAPI/HTTP: headers at once, then a chunk every interval (MS-OXCMAPIHTTP 2.2.3.3.5).
            response.content_type = "text/plain"
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(0 if head else knobs.chunks):
                if knobs.interval:
                    await asyncio.sleep(knobs.interval)
                await response.write(PENDING)
        else:
            size = knobs.size or 0
            response.content_type = "application/octet-stream"
            response.content_length = size
            await response.prepare(request)
            if head:
                pass
            elif knobs.seed is not None:
                for chunk in seeded_blocks(knobs.seed, size):
                    await response.write(chunk)
            else:
                remaining = size
                block = memoryview(_BLOCK)
                while remaining:
                    n = min(remaining, len(block))
                    await response.write(block[:n])
                    remaining -= n
        await response.write_eof()


def _time_of_day() -> str:
    """Now as the Error block's Time attribute writes it: hh:mm:ss.fffffff ([MS-ASCMD] 2.2.3.63)."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%H:%M:%S}.{now.microsecond:06d}0"


async def _continue(request: web.BaseRequest) -> None:
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        # What aiohttp's application router would do; curl waits a second for it otherwise.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _read_body(request: web.BaseRequest, limit: int) -> tuple[bytes | None, int]:
    """(the request body, its length); the body is None when it is longer than `limit` (the rest is
    read, counted and dropped)."""
    await _continue(request)
    kept = bytearray()
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if total <= limit:
            kept += chunk
    return (bytes(kept) if total <= limit else None), total


async def _count_body(request: web.BaseRequest, hasher: hashlib._Hash | None = None) -> int:
    """Read the request body as it streams in and count it (and feed `hasher`); never hold more than
    one chunk."""
    await _continue(request)
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return total
