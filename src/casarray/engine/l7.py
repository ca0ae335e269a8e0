"""Layer 7: TLS termination, per-service routing, re-encryption to the servers (SSL bridging).

This module is the asyncio side: the listener (`L7Frontend`), and the two Protocols of one proxied
connection, thin shells around the sans-I/O session core (proxy/session.py `L7Session`). `L7Client`
forwards the client transport's callbacks with the loop time and opens upstream connections when the
session asks; `L7Upstream` forwards an upstream connection's callbacks to the session that owns it.
The rules themselves live in proxy/: routing (router.py), local answers (answers.py), forwarding
(forwarding.py), the session (session.py).

The rules the shells keep (DESIGN.md §6, with the sources in shared research):
- NTLM/Negotiate authenticate a *connection* and IIS keeps it authenticated, so each client connection
  owns at most one upstream connection (`L7Session.upstream`) and an upstream connection belongs to
  exactly one client connection for its whole life (`L7Upstream.owner`, `Final`). There is no pool
  shared between clients: sharing would hand one user's authenticated connection to another (HAProxy
  issues 581 and 2985).
- Bodies stream both ways as they arrive (RPC_IN_DATA announces 1 GB and trickles for hours; MAPI/HTTP
  sends PENDING chunks every 30 s): never buffered whole, backpressure by pausing the other side.
- Extended Protection forbids offloading TLS to plain HTTP: every upstream connection is TLS again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Final, cast

from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.engine.counters import Counters
from casarray.engine.refusals import Answered, RefusalLog
from casarray.engine.sweep import Sweeper
from casarray.engine.tlsfd import TlsTransport, UpstreamOpen, UpstreamSessions
from casarray.http.errors import ProtocolError
from casarray.http.h1 import RequestHead, RequestReader
from casarray.proxy.answers import error_response, https_redirect_target, moved_permanently
from casarray.proxy.forwarding import HOP_BY_HOP, SKIP_REQUEST
from casarray.proxy.router import REDIRECT, Router
from casarray.proxy.session import CLOSING, IDLE, L7Session, SiteSettings, UpstreamSide

__all__ = [
    "CLOSING",
    "IDLE",
    "REDIRECT",
    "HttpRedirector",
    "L7Client",
    "L7Frontend",
    "L7Upstream",
    "Router",
    "error_response",
]

log = logging.getLogger("casarray.l7")

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# Re-exported: the h1 fuzz tests check the fast path against these rules.
_HOP_BY_HOP = HOP_BY_HOP
_SKIP_REQUEST = SKIP_REQUEST


class L7Upstream(asyncio.Protocol):
    """One TLS connection to one Exchange server, owned by exactly one client connection: the asyncio
    shell of the session's `UpstreamSide` (`side`, a compiled class the session reads and writes
    through directly). `owner` is set here once and never reassigned: the NTLM rule."""

    __slots__ = ("owner", "side")

    def __init__(self, owner: L7Client, server: ServerState) -> None:
        self.owner: Final = owner
        self.side: Final = UpstreamSide(server)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = cast(asyncio.Transport, transport)
        connection.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.side.connection = connection

    def data_received(self, data: bytes) -> None:
        side = self.side
        side.bytes_out += len(data)
        owner = self.owner
        owner.session.upstream_data(side, data, owner.clock())

    def eof_received(self) -> bool:
        self.owner.session.upstream_eof(self.side, self.owner.clock())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        side = self.side
        if not side.closed:
            side.closed = True
            side.server.closed(side.bytes_in, side.bytes_out)
            self.owner.session.upstream_lost(side, self.owner.clock())

    def pause_writing(self) -> None:
        self.owner.session.upstream_paused_writing()

    def resume_writing(self) -> None:
        self.owner.session.upstream_resumed_writing()


class L7Client(asyncio.Protocol):
    """One client connection: the asyncio shell of an `L7Session` (proxy/session.py). It forwards the
    transport's callbacks with the loop time, opens upstream connections when the session asks, and
    tells the listener when the session ends. The listener reads the session's state through it."""

    __slots__ = (
        "_opening",
        "_opening_head",
        "_opening_server",
        "clock",
        "frontend",
        "loop",
        "session",
        "transport",
    )

    def __init__(self, frontend: L7Frontend) -> None:
        self.frontend = frontend
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.session = L7Session(frontend, self)
        # The upstream connection being opened (one at a time), for which server and request head.
        self._opening: UpstreamOpen | None = None
        self._opening_server: ServerState | None = None
        self._opening_head = b""

    # --- the session's state, as the listener (and the hot-path bench) reads it ---------------------
    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def closed(self) -> bool:
        return self.session.closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self.session.closed = value

    @property
    def phase(self) -> int:
        return self.session.phase

    @phase.setter
    def phase(self, value: int) -> None:
        self.session.phase = value

    @property
    def deadline(self) -> float:
        return self.session.deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self.session.deadline = value

    @property
    def upstream(self) -> UpstreamSide | None:
        return self.session.upstream

    @upstream.setter
    def upstream(self, value: UpstreamSide | None) -> None:
        self.session.upstream = value

    @property
    def service(self) -> str:
        return self.session.service

    @property
    def reader(self) -> RequestReader:
        return self.session.reader

    @property
    def head(self) -> RequestHead | None:
        return self.session.head

    # --- client transport events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peername = transport.get_extra_info("peername")
        self.session.connected(self.transport, str(peername[0]) if peername else "?")
        self.frontend.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.session.client_data(data, self.clock())

    def eof_received(self) -> bool:
        return self.session.client_eof(self.clock())

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.client_lost(exc is not None, self.clock())

    def pause_writing(self) -> None:
        self.session.client_paused_writing()

    def resume_writing(self) -> None:
        self.session.client_resumed_writing()

    # --- what the listener asks ----------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        self.session.sweep(now)

    def server_down(self, server: ServerState) -> None:
        self.session.server_down(server, self.clock())

    def close(self) -> None:
        self.session.close(self.clock())

    # --- the session's Shell -------------------------------------------------------------------------
    def open_upstream(self, server: ServerState, head: bytes) -> None:
        fe = self.frontend
        server.opened()
        t = fe.config.timeouts
        self._opening_server = server
        self._opening_head = head
        # The TCP connect within timeouts.connect, the TLS handshake within its own, shorter
        # timeouts.upstream_handshake: a frozen server's kernel completes the TCP handshake for it,
        # and only the TLS bound lets the request move on quickly.
        self._opening = UpstreamOpen(
            self.loop,
            lambda: L7Upstream(self, server),
            server.address,
            server.port,
            fe.upstream_ssl,
            fe.server_name,
            t.connect,
            t.upstream_handshake,
            fe.upstream_sessions,
            self._opened,
        )

    def cancel_open(self) -> None:
        opening = self._opening
        if opening is not None:
            self._opening = None
            opening.cancel()
            server = self._opening_server
            self._opening_server = None
            self._opening_head = b""
            if server is not None:
                server.closed(0, 0)

    def finished(self) -> None:
        self.frontend.finished(self)

    def _opened(self, transport: TlsTransport | None, exc: BaseException | None) -> None:
        server, head = self._opening_server, self._opening_head
        self._opening = None  # done: nothing of the attempt is kept
        self._opening_server = None
        self._opening_head = b""
        assert server is not None
        if transport is None:
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
            self.session.upstream_failed(server, head, reason, self.clock())
            return
        upstream = cast(L7Upstream, transport.get_protocol())
        self.session.upstream_connected(upstream.side, head, self.clock())


class L7Frontend(SiteSettings):
    """The HTTPS listener of mode l7: accepts client connections and owns the shared routing state."""

    def __init__(
        self,
        config: Config,
        servers: Sequence[ServerState],
        upstream_ssl: ssl.SSLContext,
        cookie_secrets: Sequence[bytes] = (),
    ) -> None:
        super().__init__(config)
        self.servers = list(servers)
        self.router = Router(config, servers, cookie_secrets)
        self.upstream_ssl = upstream_ssl
        # Sessions resumed by the upstream connections; with the context, per generation (engine/tlsfd.py).
        self.upstream_sessions = UpstreamSessions(upstream_ssl)
        self.server_name = config.check_server_name
        t = config.timeouts
        bounds = [t.request_header, t.keepalive, t.body_idle, t.server, t.client_idle, t.server_idle]
        if t.upstream_release:
            bounds.append(t.upstream_release)
        tick = max(0.02, min(bounds) / 4)
        self.sweeper = Sweeper(min(tick, 1.0))
        self.clients: set[L7Client] = set()
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

    def status_counts(self) -> dict[str, dict[str, int]]:
        return {svc: {f"{i}xx": n for i, n in enumerate(c) if i and n} for svc, c in self.statuses.items()}

    def counters(self) -> Counters:
        """This listener's counters (its pool's servers are counted by the generation)."""
        return Counters(
            clients=len(self.clients),
            clients_total=self.accepted_total,
            refused=self.refused,
            tls_handshake_failures=self.tls_failures,
            upstream_releases=self.upstream_releases,
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
                self.transport.write(moved_permanently(self.namespace, https_redirect_target(event.target)))
                self.transport.close()
                return
