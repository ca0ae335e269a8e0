"""Layer 7: TLS termination, per-service routing, re-encryption to the servers (SSL bridging).

The rules it enforces (DESIGN.md §6, with the sources in shared research):
- NTLM/Negotiate authenticate a *connection* and IIS keeps it authenticated, so each client connection
  owns at most one upstream connection (`L7Client.upstream`) and an upstream connection belongs to
  exactly one client connection for its whole life (`L7Upstream.owner`, set once). There is no pool
  shared between clients: sharing would hand one user's authenticated connection to another (HAProxy
  issues 581 and 2985).
- Bodies stream both ways as they arrive (RPC_IN_DATA announces 1 GB and trickles for hours; MAPI/HTTP
  sends PENDING chunks every 30 s): never buffered whole, backpressure by pausing the other side.
- Header names keep their case and order (old Outlook and ActiveSync clients break otherwise).
- Extended Protection forbids offloading TLS to plain HTTP: every upstream connection is TLS again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import ssl
from collections.abc import Sequence
from typing import Final, cast

from casarray.balance.algorithm import Algorithm, make_algorithm
from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.engine.accesslog import AccessLog
from casarray.engine.counters import Counters
from casarray.engine.refusals import Answered, RefusalLog
from casarray.engine.sweep import Sweeper
from casarray.engine.tlsfd import open_tls_connection
from casarray.exchange import catalog
from casarray.http.errors import ProtocolError
from casarray.http.h1 import (
    END,
    NO_BODY,
    UNTIL_CLOSE,
    Body,
    End,
    Event,
    Headers,
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    forward_block,
    serialize_head,
)
from casarray.http.target import normalize_target

log = logging.getLogger("casarray.l7")

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
PIPELINE_LIMIT = 64 * 1024  # bytes of pipelined requests held while one is answered

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward. Transfer-Encoding is kept: the
# body is relayed with its framing unchanged, so the next hop needs it. Upgrade is dropped: Exchange
# client protocols do not switch protocols, and a tunnel would escape the per-request rules.
_HOP_BY_HOP = frozenset(
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
_IDEMPOTENT_RETRY = frozenset({b"GET", b"HEAD"})

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

# Router.route's answer for "/" and "/owa": redirect to "/owa/" (never a service name).
REDIRECT: Final = "/owa/"
_MISSING: Final = "\0"
_MEMO_SIZE = 256  # entries per routing memo; cleared when full (hosts and first segments repeat)
_NO_SERVERS: tuple[ServerState, ...] = ()

# Phases of a client connection (what the sweep's deadline means).
IDLE, HEAD, EXCHANGE, CLOSING = 0, 1, 2, 3


def error_response(
    status: int, detail: str, *, close: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
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


# The forwarding fields: a client's own are dropped (X-Forwarded-For is then written by the proxy;
# a trusted proxy's X-Forwarded-For is extended), so a server never logs or trusts a forged address.
_XFF = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})
_SKIP_REQUEST = _HOP_BY_HOP | _XFF


# RFC 9110 §7.2 / RFC 3986 §3.2.2: a reg-name or an IP-literal, then an optional port of digits.
_HOST = re.compile(rb"([a-z0-9._~!$&'()*+,;=-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")


class Router:
    """Maps a request to a service and a member; holds the per-service algorithms. No I/O."""

    def __init__(self, config: Config, servers: Sequence[ServerState]) -> None:
        self.config = config
        self.servers = list(servers)
        self.names = {name.encode() for name in config.names}
        self.services = frozenset(config.services)
        self.algorithms: dict[str, Algorithm] = {
            name: make_algorithm(config.balance, "none" if config.affinity == "cookie" else config.affinity)
            for name in config.services
        }
        secret = hashlib.sha256(b"casarray affinity " + config.namespace.encode()).digest()
        self.cookie_name = config.affinity_cookie.encode()
        self.cookie_of = {
            s.name: hmac.new(secret, s.name.encode(), "sha256").hexdigest()[:16].encode()
            for s in self.servers
        }
        self.server_of_cookie = {v: k for k, v in self.cookie_of.items()}
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies]
        https_port = config.listen.https_port
        # Ports a Host may name: the listener's, and 443 for a NAT in front (any, for a kernel-chosen port).
        self.ports = frozenset({443, https_port}) if https_port else None
        self._hosts: dict[bytes, bytes | None] = {}
        self._routes: dict[bytes, str | None] = {}

    def authority(self, host: bytes) -> bytes | None:
        """The authority a (lower-cased) Host names, rebuilt from the configured name and a checked
        port ("outlook.alwayshotcafe.com:8443"), or None when it is not served here; memoised.

        The name must be one of ours (a trailing dot aside) and the port, when given, must be a port:
        the listener's or 443 (a NAT in front may map 443 to it). Anything else — "name:x@evil.example",
        "name:99999" — is refused, and redirects are built from this value, never from client text."""
        try:
            return self._hosts[host]
        except KeyError:
            found = self._authority(host)
            if len(self._hosts) >= _MEMO_SIZE:
                self._hosts.clear()
            self._hosts[host] = found
            return found

    def _authority(self, host: bytes) -> bytes | None:
        match = _HOST.fullmatch(host)
        if match is None:
            return None
        name, port_text = match.groups()
        name = name.rstrip(b".")
        if name not in self.names:
            return None
        if port_text is None:
            return name
        port = int(port_text)
        if not 0 < port < 65536 or (self.ports is not None and port not in self.ports):
            return None
        return name if port == 443 else name + b":%d" % port

    def route(self, target: bytes) -> str | None:
        """The service for an origin-form target, REDIRECT for "/" and "/owa", None when it names no
        configured service. Memoised by the target's first segment with its slash ("/owa/")."""
        end = target.find(b"/", 1)
        if end <= 1:  # "/", "/owa", "/x?y", "//x": rare, not memoised
            return self._route(target)
        key = target[: end + 1]
        found = self._routes.get(key, _MISSING)
        if found is _MISSING:
            found = self._route(key)
            if len(self._routes) >= _MEMO_SIZE:
                self._routes.clear()
            self._routes[key] = found
        return found

    def _route(self, target: bytes) -> str | None:
        path_only = target.split(b"?", 1)[0]
        if path_only == b"/" or path_only.lower() == b"/owa":
            return REDIRECT
        return self.service_for(target)

    def service_for(self, path: bytes) -> str | None:
        """The configured service whose vdir the path names (the catalog matches like IIS)."""
        service = catalog.for_path(path.decode("latin-1"))
        return service.name if service is not None and service.name in self.services else None

    def candidates(self, service: str) -> list[ServerState]:
        return [s for s in self.servers if s.members[service].available]

    def pick(
        self, service: str, key: bytes, cookie: bytes | None, exclude: Sequence[ServerState] = ()
    ) -> ServerState | None:
        candidates = [s for s in self.candidates(service) if s not in exclude]
        if not candidates:
            return None
        if cookie is not None:
            name = self.server_of_cookie.get(cookie)
            for server in candidates:
                if server.name == name:
                    return server
        return self.algorithms[service].pick(candidates, key)

    def affinity_cookie(self, headers: Headers) -> bytes | None:
        prefix = self.cookie_name + b"="
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
        return None

    def trusted_peer(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # no peer address (the socket went away): not a proxy of ours
            return False
        return any(ip in net for net in self.trusted)


class L7Upstream(asyncio.Protocol):
    """One TLS connection to one Exchange server, owned by exactly one client connection."""

    __slots__ = ("bytes_in", "bytes_out", "closed", "owner", "reader", "server", "transport")

    def __init__(self, owner: L7Client, server: ServerState) -> None:
        self.owner = owner  # never reassigned: the NTLM rule lives here
        self.server = server
        self.reader = ResponseReader()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.closed = False
        self.bytes_in = 0  # client -> server
        self.bytes_out = 0  # server -> client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.owner.upstream_data(self, data)

    def eof_received(self) -> bool:
        self.owner.upstream_eof(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.server.closed(self.bytes_in, self.bytes_out)
            self.owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        self.owner.transport.pause_reading()

    def resume_writing(self) -> None:
        self.owner.resume_reading()

    def write(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.transport.close()


class L7Client(asyncio.Protocol):
    """One client connection: reads requests, routes each, relays the response."""

    __slots__ = (
        "_connect_task",
        "_last_in",
        "_last_out",
        "_out_mark",
        "_rate_from",
        "_rate_head",
        "_rate_since",
        "_seen_in",
        "_seen_out",
        "bytes_in",
        "bytes_out",
        "close_after",
        "closed",
        "deadline",
        "events",
        "forwarded",
        "frontend",
        "head",
        "in_start",
        "interim",
        "out_start",
        "paused",
        "peer",
        "phase",
        "reader",
        "request_done",
        "response_started",
        "retries_left",
        "retry_head",
        "service",
        "set_cookie",
        "status",
        "t_first",
        "t_start",
        "transport",
        "tried",
        "upstream",
        "upstream_keep",
    )

    def __init__(self, frontend: L7Frontend) -> None:
        self.frontend = frontend
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.reader = RequestReader(frontend.limits)
        self.upstream: L7Upstream | None = None
        self.events: list[Event] = []  # parsed but not yet handled (while connecting or paused)
        self.head: RequestHead | None = None  # request in flight
        self.service = ""
        self.retry_head: bytes | None = None  # the serialized head, kept to retry a bodiless GET/HEAD
        self.tried: Sequence[ServerState] = _NO_SERVERS
        self.set_cookie: bytes | None = None
        self.request_done = False
        self.response_started = False
        self.interim = False
        self.upstream_keep = True
        self.retries_left = 0
        self.status = 0
        self.t_start = self.t_first = 0.0
        self.in_start = self.out_start = 0
        self.close_after = False
        self.closed = False
        self.paused = False
        self.phase = IDLE
        self.deadline = 0.0
        self.peer = "?"
        # The fields appended to every forwarded request; None when the peer is a trusted proxy (its
        # X-Forwarded-For is extended instead, per request).
        self.forwarded: bytes | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self.bytes_in = self.bytes_out = 0
        self._seen_in = self._seen_out = 0
        self._last_in = self._last_out = 0.0
        # The upload-rate bound: the request whose body is measured, since when and from which count.
        self._rate_head: RequestHead | None = None
        self._rate_since = 0.0
        self._rate_from = 0
        self._out_mark = 0  # the upstream's byte count when the request in flight was sent

    # --- client transport events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else "?"
        if not self.frontend.router.trusted_peer(self.peer):
            self.forwarded = (
                b"X-Forwarded-For: " + self.peer.encode() + b"\r\nX-Forwarded-Proto: https\r\n\r\n"
            )
        self.frontend.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.phase == IDLE:
            self.phase = HEAD
            self.deadline = self.frontend.sweeper.now + self.frontend.request_header_timeout
        try:
            events = self.reader.feed(data)
        except ProtocolError as exc:
            if self.head is not None:  # in the middle of a body: nothing more goes to the server
                self.fail(exc.status, f"malformed request body: {exc.what}")
            else:
                self.refuse(exc.status, exc.what, log_level=logging.WARNING)
            return
        if self.events:
            self.events += events
        else:
            self.events = events
        if self.request_done and self.reader.buffered > PIPELINE_LIMIT:
            self.pause()  # a client pipelining a lot while its request is answered: stop reading
        self.process()

    def eof_received(self) -> bool:
        if self.head is None and not self.reader.buffered:
            self.close()
            return False
        if self.head is not None and (self.request_done or self.response_started or END in self.events):
            # The whole request arrived, then the client half-closed (RFC 9112 §9.6): answer it. Or
            # the server answered before the body was whole (401, 413) and the client stopped
            # sending: the answer still goes out, then the connection closes.
            self.close_after = True
            return True
        # The client has finished sending but its request is incomplete: it can never complete, so
        # holding the connection, its upstream and its maxconn slot until body_idle/client_idle only
        # locks other clients out. Abort it now, like HAProxy's client-abort ("CD"/"CR").
        self.client_gone("closed its side")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and (self.head is not None or self.reader.buffered):
            self.client_gone("reset the connection" if exc is not None else "closed the connection")
        else:
            self.close()

    def client_gone(self, how: str) -> None:
        """The client went away in the middle of a request: one log line, one access-log line, and both
        sides closed. A server that never answered gets nothing more; its connection goes with it."""
        head = self.head
        if head is None:
            log.info("%s: client %s in the middle of a request head", self.peer, how)
        else:
            log.info(
                "%s: client %s during %s %s (%s): request aborted",
                self.peer,
                how,
                head.method.decode("latin-1"),
                head.target[:80].decode("latin-1"),
                "response under way"
                if self.response_started
                else "before the response"
                if self.request_done
                else "in the middle of its body",
            )
            if self.t_start:
                upstream = self.upstream
                # HAProxy's codes: C client side; D data (body either way), H waiting for the response.
                term = "CH" if self.request_done and not self.response_started else "CD"
                self.access_line(upstream.server.name if upstream is not None else "-", term)
        self.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.closed:
            self.upstream.transport.resume_reading()

    def resume_reading(self) -> None:
        if not self.paused and not self.closed:
            self.transport.resume_reading()

    # --- request handling --------------------------------------------------------------------------
    def process(self) -> None:
        """Handle queued events until one needs to wait (connecting, or the response to come)."""
        while self.events and not self.closed:
            if self.request_done or (self.head is not None and self.upstream is None):
                # waiting: for the response (no pipelining upstream) or for the connection
                self.pause()
                return
            event = self.events.pop(0)
            if isinstance(event, RequestHead):
                self.request_head(event)
            elif isinstance(event, Body):
                if self.upstream is not None and self.head is not None:
                    self.upstream.write(event.data)
            elif isinstance(event, End):
                self.request_end()

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def unpause(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()

    def request_head(self, head: RequestHead) -> None:
        fe = self.frontend
        router = fe.router
        self.phase = EXCHANGE
        self.response_started = False
        self.request_done = False
        self.set_cookie = None
        self.tried = _NO_SERVERS
        self.retries_left = fe.config.retries
        method, target = head.method, head.target
        if fe.access is not None:
            self.t_start = asyncio.get_running_loop().time()
            self.t_first = 0.0
            self.in_start, self.out_start = self.bytes_in, self.bytes_out
            self.status = 0
        if method == b"CONNECT":
            self.refuse(405, "CONNECT is not served", log_level=logging.WARNING)
            return
        host = head.host
        if target[:1] != b"/":
            # absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host.
            scheme, sep, rest = target.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                self.refuse(400, f"request target {target[:60]!r} is not a path", log_level=logging.WARNING)
                return
            host, slash, path = rest.partition(b"/")
            host = host.lower()
            target = b"/" + path if slash else b"/"
        authority = None
        if fe.config.host_check:
            authority = router.authority(host)
            if authority is None:
                self.refuse(
                    421,
                    f"host {host[:80].decode('latin-1')!r} is not served here",
                    log_level=logging.WARNING,
                    keep=head,
                )
                return
        try:
            target = normalize_target(target)  # routed and forwarded as the server will read it
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING, keep=head)
            return
        service = router.route(target)
        if service is None:
            path_only = target.split(b"?", 1)[0]
            self.refuse(
                404,
                f"{path_only[:80].decode('latin-1')!r} is not an Exchange virtual directory",
                log_level=logging.INFO,
                keep=head,
            )
            return
        if service is REDIRECT:
            # To the configured name and checked port the client used, else to the namespace.
            self.redirect(head, b"/owa/", authority)
            return
        self.head = head
        self.service = service
        if target is head.target and self.forwarded is not None:
            out = head.line + forward_block(head, _SKIP_REQUEST) + self.forwarded
        else:
            out = self.forward_request_slowly(head, target, host)
        self.retry_head = out if (method in _IDEMPOTENT_RETRY and head.length == NO_BODY) else None
        upstream = self.upstream
        if upstream is not None and not upstream.closed and upstream.server.members[service].available:
            self.send_head(upstream, out)  # stay on the pinned connection (NTLM state lives there)
            return
        if upstream is not None:
            # The pinned server cannot serve this service: a new connection; the client re-authenticates.
            log.info(
                "%s: %s not available on %s for %s: new upstream connection",
                self.peer,
                service,
                upstream.server.name,
                target.split(b"?", 1)[0][:60].decode("latin-1"),
            )
            self.drop_upstream()
        self.connect(out)

    def forward_request_slowly(self, head: RequestHead, target: bytes, host: bytes) -> bytes:
        """The forwarded head when the fast path does not apply: a trusted proxy's X-Forwarded-For is
        appended to (otherwise it is replaced by the client address, which IIS can log), or an
        absolute-form target was normalised (Host becomes its authority). Hop-by-hop fields dropped."""
        peer = self.peer.encode()
        out = [
            (n, v)
            for n, v in head.headers
            if n.lower() not in _HOP_BY_HOP and n.lower() not in head.connection
        ]
        chain = [v for n, v in out if n.lower() == b"x-forwarded-for"] if self.forwarded is None else []
        out = [(n, v) for n, v in out if n.lower() not in _XFF]
        if target is not head.target:
            out = [(n, host if n.lower() == b"host" else v) for n, v in out]
        out.append((b"X-Forwarded-For", b", ".join([*chain, peer])))
        out.append((b"X-Forwarded-Proto", b"https"))
        return serialize_head(head.method + b" " + target + b" HTTP/" + head.version, out)

    def connect(self, head_bytes: bytes) -> None:
        fe = self.frontend
        assert self.head is not None
        cookie = fe.router.affinity_cookie(self.head.headers) if fe.config.affinity == "cookie" else None
        server = fe.router.pick(self.service, self.peer.encode(), cookie, self.tried)
        if server is None:
            if self.tried:
                self.fail(502, f"no server of {self.service} accepted a connection")
            else:
                self.refuse(
                    503,
                    f"no server is available for {catalog.get(self.service).title}",
                    log_level=logging.WARNING,
                    keep=self.head,
                    extra=[(b"Retry-After", b"10")],
                )
            return
        if fe.config.affinity == "cookie":
            value = fe.router.cookie_of[server.name]
            if cookie != value:
                self.set_cookie = (
                    fe.router.cookie_name + b"=" + value + b"; Path=/; Secure; HttpOnly; SameSite=None"
                )
        self.tried = [*self.tried, server]
        self.pause()
        task = asyncio.get_running_loop().create_task(self._connect(server, head_bytes))
        self._connect_task = task

    async def _connect(self, server: ServerState, head_bytes: bytes) -> None:
        fe = self.frontend
        server.opened()
        t = fe.config.timeouts
        try:
            # The TCP connect within timeouts.connect (the outer bound is their sum), the TLS handshake
            # within its own, shorter timeouts.upstream_handshake: a frozen server's kernel completes
            # the TCP handshake for it, and only the TLS bound lets the request move on quickly.
            async with asyncio.timeout(t.connect + t.upstream_handshake):
                transport, protocol = await open_tls_connection(
                    lambda: L7Upstream(self, server),
                    server.address,
                    server.port,
                    fe.upstream_ssl,
                    fe.server_name,
                    t.upstream_handshake,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            server.closed(0, 0)
            server.connect_errors += 1
            if isinstance(exc, TimeoutError):
                reason = (
                    "TLS handshake timed out (timeouts.upstream_handshake)"
                    if str(exc)
                    else "timed out (timeouts.connect)"
                )
            else:
                reason = str(exc)
            log.warning(
                "connect to %s (%s:%d) for %s failed: %s",
                server.name,
                server.address,
                server.port,
                self.peer,
                reason,
            )
            if not self.closed:
                if len(self.tried) <= fe.config.retries:
                    self.connect(head_bytes)
                else:
                    self.fail(502, f"no server of {self.service} accepted a connection")
            return
        except asyncio.CancelledError:
            server.closed(0, 0)
            raise
        if self.closed:
            transport.close()
            return
        upstream = cast(L7Upstream, protocol)
        self.upstream = upstream
        self.send_head(upstream, head_bytes)
        self.unpause()
        self.process()

    def send_head(self, upstream: L7Upstream, head_bytes: bytes) -> None:
        assert self.head is not None
        upstream.reader.expect(self.head.method)
        upstream.server.members[self.service].requests += 1
        self._out_mark = upstream.bytes_out
        upstream.write(head_bytes)

    def request_end(self) -> None:
        # No pause here: reading stays on (pausing and resuming a TLS transport per request costs more
        # than the request); bytes a client pipelines meanwhile wait in the reader, bounded below.
        self.request_done = True
        self.deadline = self.frontend.sweeper.now + self.frontend.server_timeout

    # --- response handling -------------------------------------------------------------------------
    def upstream_data(self, upstream: L7Upstream, data: bytes) -> None:
        if upstream is not self.upstream or self.closed:
            upstream.close()
            return
        if self.head is None:
            # Nothing was asked: bytes after a complete response (e.g. a body after a 204), or a server
            # talking out of turn. They would be read as the answer to the client's next request.
            log.warning(
                "%s: %s sent %d bytes with no request outstanding: upstream connection closed",
                self.peer,
                upstream.server.name,
                len(data),
            )
            self.drop_upstream()
            return
        try:
            events = upstream.reader.feed(data)
        except ProtocolError as exc:
            self.bad_response(upstream, exc)
            return
        self.response_events(upstream, events)

    def bad_response(self, upstream: L7Upstream, exc: ProtocolError) -> None:
        """A malformed or ambiguous response: the client gets a 502 (or, mid-body, a closed
        connection) and the upstream connection is closed, never reused."""
        self.fail(502, f"invalid response from {upstream.server.name}: {exc.what}")

    def response_events(self, upstream: L7Upstream, events: list[Event]) -> None:
        # Everything one read produced goes out in one write: the head and the first body bytes share a
        # TLS record and a send instead of costing one each. Interim (1xx) responses are iterated, not
        # recursed into: the reader bounds how many one request may get (h1.MAX_INTERIM).
        while True:
            parts: list[bytes] = []
            for event in events:
                if isinstance(event, Body):
                    self.bytes_out += len(event.data)
                    parts.append(event.data)
                elif isinstance(event, ResponseHead):
                    parts.append(self.response_head(upstream, event))
                else:  # End: always the last event, the reader holds what follows
                    self.send(parts)
                    if not self.interim:
                        self.response_end(upstream)
                        return
                    self.interim = False  # the end of a 1xx interim response: the final one follows
                    try:
                        events = upstream.reader.next_message()
                    except ProtocolError as exc:
                        self.bad_response(upstream, exc)
                        return
                    break
            else:
                self.send(parts)
                return

    def send(self, parts: list[bytes]) -> None:
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif parts:
            # Small pieces are joined (one TLS record); big bodies are handed over without a copy.
            if sum(map(len, parts)) <= 16384:
                self.transport.write(b"".join(parts))
            else:
                self.transport.writelines(parts)

    def response_head(self, upstream: L7Upstream, head: ResponseHead) -> bytes:
        block = forward_block(head, _HOP_BY_HOP)
        if head.status < 200:
            # 100 Continue and friends: relay and wait for the final response (RFC 9110 §15.2).
            self.interim = True
            return head.line + block + b"\r\n"
        self.response_started = True
        self.status = head.status
        self.frontend.count(self.service, head.status)
        if self.frontend.access is not None:
            self.t_first = asyncio.get_running_loop().time()
        request = self.head
        assert request is not None
        # Close after this response when the client or a close-delimited body asks for it, or when the
        # server answered before the whole request arrived (e.g. 401 or 413 to an upload): the rest of
        # that body could not be told apart from a next request.
        end = b"\r\n"
        # A draining frontend (reload) closes each connection after its next response: the client is
        # told so (`Connection: close`, HAProxy's idle-close-on-response) and cannot lose a request.
        if (
            not request.keep_alive
            or head.length == UNTIL_CLOSE
            or self.close_after
            or not self.request_done
            or self.frontend.draining
        ):
            self.close_after = True
            end = b"Connection: close\r\n\r\n"
        if self.set_cookie is not None:
            end = b"Set-Cookie: " + self.set_cookie + b"\r\n" + end
        self.upstream_keep = head.keep_alive
        return head.line + block + end

    def response_end(self, upstream: L7Upstream) -> None:
        if self.frontend.access is not None:
            self.access_line(upstream.server.name, "--")
        try:
            stray = upstream.reader.next_message() if self.upstream_keep else []
        except ProtocolError:
            stray = [END]
        if not self.upstream_keep or stray:  # bytes beyond the response: do not trust this connection
            self.drop_upstream()
        self.finish_exchange()

    def finish_exchange(self) -> None:
        self.head = None
        self.request_done = False
        self.retry_head = None
        if self.close_after:
            self.close()
            return
        self.phase = HEAD if self.reader.buffered else IDLE
        fe = self.frontend
        self.deadline = fe.sweeper.now + (
            fe.request_header_timeout if self.reader.buffered else fe.keepalive_timeout
        )
        try:
            self.events = self.reader.next_message() + self.events
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING)
            return
        self.unpause()
        self.process()

    def upstream_eof(self, upstream: L7Upstream) -> None:
        if upstream is not self.upstream:
            return
        try:
            events = upstream.reader.eof()
        except ProtocolError:
            events = []
        if events and self.head is not None:
            self.response_events(upstream, events)

    def upstream_lost(self, upstream: L7Upstream, exc: Exception | None) -> None:
        if upstream is not self.upstream:
            return
        self.upstream = None
        if self.closed or self.head is None:
            return  # between requests: the next request opens a new connection
        if self.response_started:
            log.warning(
                "%s: %s closed the connection in the middle of a response", self.peer, upstream.server.name
            )
            self.close()
            return
        if self.retry_head is not None and self.request_done and self.retries_left > 0:
            self.retries_left -= 1
            self.tried = (
                _NO_SERVERS  # the server may just have closed an idle connection: it may serve the retry
            )
            log.info(
                "%s: %s closed before answering %s; retrying on another server",
                self.peer,
                upstream.server.name,
                self.head.method.decode(),
            )
            self.connect(self.retry_head)
            return
        self.fail(502, f"{upstream.server.name} closed the connection before answering")

    def server_down(self, server: ServerState) -> None:
        """The checks marked down the server this connection's upstream goes to (HAProxy's
        `on-marked-down shutdown-sessions`, for what has no answer yet): a request still waiting is
        retried elsewhere when that is safe — GET/HEAD without a body, not a byte answered — and failed
        at once otherwise; it is never left to timeouts.server. A response under way is left to its
        idle timeout; an idle pinned connection is dropped (the next request goes elsewhere anyway)."""
        upstream = self.upstream
        if self.closed or upstream is None or upstream.server is not server or self.response_started:
            return
        head = self.head
        if head is None:
            self.drop_upstream()
            return
        retry = self.retry_head  # set only for GET/HEAD without a body
        answered = upstream.bytes_out != self._out_mark  # an interim response, or part of a head
        if retry is not None and self.request_done and not answered and self.retries_left > 0:
            self.retries_left -= 1
            log.warning(
                "%s: retrying %s %s on another server: %s was marked down before answering",
                self.peer,
                head.method.decode("latin-1"),
                head.target[:80].decode("latin-1"),
                server.name,
            )
            self.drop_upstream()  # its connection_lost finds it detached: no second retry
            self.tried = [server]
            self.connect(retry)
            return
        self.fail(503, f"{server.name} was marked down before answering", "DH")

    def drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()

    def access_line(self, server: str, termination: str) -> None:
        access = self.frontend.access
        head = self.head
        if access is None or head is None or self.t_start == 0.0:
            return
        now = asyncio.get_running_loop().time()
        access.l7(
            self.peer,
            head.method.decode("latin-1"),
            head.target[:200].decode("latin-1"),
            self.service,
            server,
            self.status,
            self.bytes_in - self.in_start,
            self.bytes_out - self.out_start,
            (self.t_first or now) - self.t_start,
            now - self.t_start,
            termination,
        )
        self.t_start = 0.0

    # --- answers from the balancer itself ----------------------------------------------------------
    def redirect(self, head: RequestHead, location: bytes, host: bytes | None = None) -> None:
        if host is None:
            host = self.frontend.config.namespace.encode()
        body_close = head.length != NO_BODY or not head.keep_alive or self.frontend.draining
        headers: Headers = [(b"Location", b"https://" + host + location), (b"Content-Length", b"0")]
        tls = self.frontend.config.tls
        if tls is not None and tls.hsts is not None:
            # tls.hsts: the browser goes to https itself next time (RFC 6797 §6.1). Only here, on
            # https (§7.2: never over plain http), and without includeSubDomains: other names under
            # the domain are not ours to vouch for.
            headers.append((b"Strict-Transport-Security", b"max-age=%d" % int(tls.hsts)))
        if body_close:
            headers.append((b"Connection", b"close"))
        self.transport.write(serialize_head(b"HTTP/1.1 302 Found", headers))
        self.after_local_answer(head, body_close)

    def refuse(
        self,
        status: int,
        detail: str,
        *,
        log_level: int,
        keep: RequestHead | None = None,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer from the balancer and log one line. The connection stays open only for a bodiless
        request on a keep-alive connection; after a protocol error it always closes."""
        close = keep is None or keep.length != NO_BODY or not keep.keep_alive or self.frontend.draining
        request = (
            f"{keep.method.decode('latin-1')} {keep.target[:80].decode('latin-1')}" if keep else "request"
        )
        log.log(log_level, "refused %s %s: %d %s", self.peer, request, status, detail)
        self.frontend.refused += 1
        self.frontend.count("balancer", status)
        if self.frontend.access is not None and keep is not None:
            self.head, self.status = keep, status
            self.t_start = self.t_start or asyncio.get_running_loop().time()
            self.access_line("-", "cR" if status == 408 else "PR")
        self.transport.write(error_response(status, detail, close=close, extra=extra))
        if keep is not None:
            self.after_local_answer(keep, close)
        else:
            self.close()

    def after_local_answer(self, head: RequestHead, close: bool) -> None:
        if close:
            self.close()
            return
        # Skip the (empty) rest of this request: its End is next in the queue.
        while self.events:
            event = self.events.pop(0)
            if isinstance(event, End):
                break
        self.head = None
        self.phase = IDLE
        self.deadline = self.frontend.sweeper.now + self.frontend.keepalive_timeout
        try:
            self.events = self.reader.next_message() + self.events
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING)

    def fail(self, status: int, detail: str, term: str | None = None) -> None:
        """The balancer could not get an answer from a server: an error page, then close."""
        log.warning(
            "%s %s %s: %d %s",
            self.peer,
            self.head.method.decode("latin-1") if self.head else "-",
            self.head.target[:80].decode("latin-1") if self.head else "-",
            status,
            detail,
        )
        self.frontend.refused += 1
        if not self.response_started:
            self.frontend.count(self.service or "balancer", status)
            self.status = status
            self.transport.write(error_response(status, detail, close=True))
        if self.frontend.access is not None:
            if term is None:
                term = {502: "SH", 503: "SC", 504: "sH", 408: "cD"}.get(status, "PH")
            self.access_line(self.upstream.server.name if self.upstream else "-", term)
        self.close()

    # --- timeouts (called by the listener's sweep) --------------------------------------------------
    def sweep(self, now: float) -> None:
        if self.closed:
            return
        if self.bytes_in != self._seen_in:
            self._seen_in, self._last_in = self.bytes_in, now
        upstream = self.upstream
        out = self.bytes_out + (upstream.bytes_out if upstream else 0)
        if out != self._seen_out:
            self._seen_out, self._last_out = out, now
        fe = self.frontend
        if self.phase == IDLE:
            if now >= self.deadline:
                self.close()
        elif self.phase == HEAD:
            if now >= self.deadline:
                self.refuse(
                    408,
                    "the request head did not arrive in time (timeouts.request_header)",
                    log_level=logging.WARNING,
                )
        elif self.phase == EXCHANGE:
            if self.request_done and not self.response_started:
                if now >= self.deadline:
                    self.fail(504, f"no response within {fe.server_timeout:g}s (timeouts.server)")
                return
            long_lived = catalog.get(self.service).long_lived if self.service else False
            limit_in = fe.config.timeouts.client_idle if long_lived else fe.body_idle
            limit_out = fe.config.timeouts.server_idle if long_lived else fe.body_idle
            if not self.request_done:
                if now - self._last_in >= limit_in:
                    self.fail(408, "the request body stalled")
                    return
                if self.head is not self._rate_head:  # a new body: start measuring
                    self._rate_head, self._rate_since, self._rate_from = self.head, now, self.bytes_in
                elif fe.min_upload_rate and not long_lived:
                    # Apache mod_reqtimeout's MinRate: body_idle to start, then one more second per
                    # min_upload_rate bytes received. A trickle that never falls silent for body_idle
                    # would otherwise hold its slot and its upstream for as long as the body is long.
                    # Long-lived services trickle by design (RPC_IN_DATA, MAPI, EAS Ping): exempt.
                    received = self.bytes_in - self._rate_from
                    if now - self._rate_since > fe.body_idle + received / fe.min_upload_rate:
                        self.fail(
                            408,
                            f"the request body arrives below limits.min_upload_rate "
                            f"({received / (now - self._rate_since):.0f} < {fe.min_upload_rate} bytes/s)",
                        )
                        return
            if self.response_started and now - self._last_out >= limit_out:
                log.warning(
                    "%s: closing: response from %s idle for %.0fs",
                    self.peer,
                    upstream.server.name if upstream else "-",
                    now - self._last_out,
                )
                self.close()

    def close(self) -> None:
        if self.closed:
            return
        if self.head is not None and self.t_start:
            self.access_line(
                self.upstream.server.name if self.upstream else "-", "CD" if self.response_started else "CH"
            )
        self.closed = True
        self.phase = CLOSING
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self.transport.close()
        self.drop_upstream()
        self.frontend.finished(self)


class L7Frontend:
    """The HTTPS listener of mode l7: accepts client connections and owns the shared routing state."""

    def __init__(self, config: Config, servers: Sequence[ServerState], upstream_ssl: ssl.SSLContext) -> None:
        self.config = config
        self.servers = list(servers)
        self.router = Router(config, servers)
        self.upstream_ssl = upstream_ssl
        self.server_name = config.check_server_name
        self.limits = Limits()
        t = config.timeouts
        self.request_header_timeout = t.request_header
        self.keepalive_timeout = t.keepalive
        self.server_timeout = t.server
        self.body_idle = t.body_idle
        self.min_upload_rate = config.limits.min_upload_rate
        tick = max(
            0.02, min(t.request_header, t.keepalive, t.body_idle, t.server, t.client_idle, t.server_idle) / 4
        )
        self.sweeper = Sweeper(min(tick, 1.0))
        self.clients: set[L7Client] = set()
        self.refused = 0
        self.maxconn_refusals = RefusalLog(
            log, logging.WARNING, f"limits.maxconn ({config.limits.maxconn}) reached"
        )
        self.busy_answer = error_response(
            503,
            "The balancer is at its connection limit. Try again in a few seconds.",
            close=True,
            extra=[(b"Retry-After", b"10")],
        )
        self.lingering = [0]  # refused connections still open (engine/refusals.py Answered)
        self.accepted_total = 0
        self.tls_failures = 0  # client handshakes that failed or timed out
        self.access: AccessLog | None = None
        self.draining = False  # the generation was replaced or is stopping: close after each response
        # service -> counts per status class (index 1..5 for 1xx..5xx); "balancer" for our own answers
        self.statuses: dict[str, list[int]] = {}
        self.empty = asyncio.Event()  # set while no client connection is open
        self.empty.set()

    def protocol_factory(self) -> L7Client:
        return L7Client(self)

    def handshake_failed(self, exc: Exception) -> None:
        self.tls_failures += 1
        log.debug("TLS handshake with a client failed: %s", exc)

    def start(self) -> None:
        self.sweeper.start(self.clients)

    def refresh(self) -> None:
        """Nothing to recompute: the Router reads availability per request (engine/pools.py logs it)."""

    def count(self, service: str, status: int) -> None:
        counts = self.statuses.get(service)
        if counts is None:
            counts = self.statuses[service] = [0] * 6
        counts[min(status // 100, 5)] += 1

    def status_counts(self) -> dict[str, dict[str, int]]:
        return {svc: {f"{i}xx": n for i, n in enumerate(c) if i and n} for svc, c in self.statuses.items()}

    def counters(self) -> Counters:
        """This listener's counters (its pool's servers are counted by the generation)."""
        return Counters(
            clients=len(self.clients),
            clients_total=self.accepted_total,
            refused=self.refused,
            tls_handshake_failures=self.tls_failures,
            requests=self.status_counts(),
        )

    def close_server(self, server: ServerState, service: str | None) -> None:
        """Maintenance: close now the connections pinned to `server` (for `service`, when given)."""
        for client in list(self.clients):
            upstream = client.upstream
            if (
                upstream is not None
                and upstream.server is server
                and (service is None or client.service == service)
            ):
                client.close()

    def member_down(self, server: ServerState, service: str) -> None:
        """The checks marked `server` down for `service`: what waits on it is retried or failed now."""
        for client in list(self.clients):
            upstream = client.upstream
            if upstream is not None and upstream.server is server and client.service == service:
                client.server_down(server)

    def accepted(self, client: L7Client) -> None:
        self.accepted_total += 1
        maxconn = self.config.limits.maxconn
        if len(self.clients) >= maxconn:
            # Over the limit the client still gets an answer it can act on, after the handshake: 503
            # with Retry-After (RFC 9110 §15.6.4) is what IIS sends past its request queue limit, and
            # ActiveSync clients wait the Retry-After and retry (MS-ASHTTP 3.1.5.2.3); a connection
            # refused before the handshake looks like a network or certificate fault instead, and
            # is retried at once. The price is one handshake per refused client; the connection then
            # lingers at most LINGER_S (engine/refusals.py) and never counts in `clients`.
            client.closed = True
            client.phase = CLOSING
            self.refused += 1
            self.count("balancer", 503)
            self.maxconn_refusals.refused(
                "refused %s: limits.maxconn (%d) reached: 503", client.peer, maxconn
            )
            Answered(client.transport, self.busy_answer, self.lingering)
            return
        self.clients.add(client)
        self.empty.clear()
        client.deadline = self.sweeper.now + self.request_header_timeout
        client.phase = IDLE

    def finished(self, client: L7Client) -> None:
        self.clients.discard(client)
        if not self.clients:
            self.empty.set()

    def close_all(self) -> int:
        """Close every connection now; returns how many there were."""
        clients = list(self.clients)
        for client in clients:
            client.transport.abort()
            client.close()
        return len(clients)

    def drain(self, close_idle: bool) -> None:
        """The listener stopped accepting: serve what is held, closing each connection after its next
        response. Idle keep-alive connections stay until then or their keep-alive timeout (the sweep
        keeps running): a client may have a request on the wire, and closing under it loses that
        request (HAProxy's idle-close-on-response). `close_idle` (a stop, whose bound is short): those
        that never started a request or sit idle between two go at once."""
        self.draining = True
        if close_idle:
            for client in list(self.clients):
                if client.phase == IDLE and not client.reader.buffered:
                    client.close()

    def stop(self) -> None:
        """The generation is gone: no more sweeps; refusals still counted are logged."""
        self.sweeper.stop()
        self.maxconn_refusals.flush()


class HttpRedirector(asyncio.Protocol):
    """The optional plain-HTTP listener: every request is redirected to https://<namespace><path>."""

    def __init__(self, namespace: bytes, https_port: int) -> None:
        self.namespace = namespace + (b":%d" % https_port if https_port != 443 else b"")
        self.reader = RequestReader()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.reader.feed(data)
        except ProtocolError as exc:
            self.transport.write(error_response(exc.status, exc.what, close=True))
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestHead):
                path = event.target if event.target.startswith(b"/") else b"/owa/"
                if path.split(b"?", 1)[0] in (b"/", b"/owa"):
                    path = b"/owa/"
                self.transport.write(
                    serialize_head(
                        b"HTTP/1.1 301 Moved Permanently",
                        [
                            (b"Location", b"https://" + self.namespace + path),
                            (b"Content-Length", b"0"),
                            (b"Connection", b"close"),
                        ],
                    )
                )
                self.transport.close()
                return
