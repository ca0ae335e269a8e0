"""Layer 4: TCP pass-through. The client's TLS goes through untouched to an Exchange server.

Hot path: two asyncio Protocols per connection writing straight into each other's transport (both
`TcpTransport`s on the sockets themselves, engine/sockets.py); no streams, no per-chunk allocation
beyond what a read returns, no task or coroutine per connection (the connect to a server is a
callback), no per-connection timer (one sweep per listener checks idleness from byte counters).
TCP_NODELAY is set on both sockets (interactive RPC/HTTP and MAPI PENDING chunks must not wait for
Nagle's algorithm); the integration tests check it on the relayed sockets. Backpressure: when one
side's write buffer passes the high-water mark, reading from the other side pauses
(pause_writing/resume_writing), so memory per connection stays bounded whatever the peers do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import cast

from casarray.balance.admission import Admission, Verdict
from casarray.balance.algorithm import Picker
from casarray.balance.queue import WaitQueue
from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.engine.accesslog import AccessLog
from casarray.engine.counters import Counters
from casarray.engine.refusals import RefusalLog
from casarray.engine.sockets import Connect, TcpTransport
from casarray.engine.sweep import Sweeper

log = logging.getLogger("casarray.l4")

HIGH_WATER = 256 * 1024  # bytes buffered towards one peer before reading from the other pauses
LOW_WATER = 64 * 1024
# What a client may send while its server is being connected is kept up to this much (plus at most
# one read), then reading pauses until the server is connected. A TLS ClientHello is at most 16 KiB.
# Reading is not paused from the start: pausing and resuming would make the loop drop and make again
# the socket's registration (uvloop: an ioctl and four epoll_ctl calls) on every connection, for a
# request that is usually already there. A client that waits in the queue is not read at all.
PENDING_LIMIT = 64 * 1024


class L4Upstream(asyncio.Protocol):
    """The server side of one relayed connection."""

    __slots__ = ("client", "transport")

    def __init__(self, client: L4Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.bytes_out += len(data)
        client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.server_eof()
        return True  # keep our write side open: the client may still be sending (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(exc)

    def pause_writing(self) -> None:  # our buffer towards the server is full: stop reading the client
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class L4Client(asyncio.Protocol):
    """The client side of one relayed connection; owns the connection's state."""

    __slots__ = (
        "_quiet_in",
        "_quiet_out",
        "_seen_in",
        "_seen_out",
        "bytes_in",
        "bytes_out",
        "closed",
        "connecting",
        "eof_client",
        "eof_server",
        "frontend",
        "pending",
        "pending_bytes",
        "server",
        "started",
        "term",
        "transport",
        "tried",
        "upstream",
    )

    def __init__(self, frontend: L4Frontend) -> None:
        self.frontend = frontend
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.upstream: asyncio.Transport | None = None
        self.server: ServerState | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.eof_client = False
        self.eof_server = False
        self.closed = False
        self.started = 0.0
        self.term = "--"  # HAProxy-style termination code for the access log
        self.connecting: Connect | None = None  # the connect under way, to tried[-1]
        self.tried: list[ServerState] = []  # the servers tried for this connection, in order
        self._seen_in = self._seen_out = 0
        self._quiet_in = self._quiet_out = 0.0

    @property
    def peer(self) -> str:
        peername = self.transport.get_extra_info("peername")
        return f"{peername[0]}:{peername[1]}" if peername else "?"

    # client transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        if self.frontend.access is not None:
            self.started = self.frontend.loop.time()
        self.frontend.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
        else:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes >= PENDING_LIMIT:
                self.transport.pause_reading()  # attach() resumes it

    def eof_received(self) -> bool:
        self.eof_client = True
        if self.upstream is None:
            return True
        if self.eof_server:
            self.close()
        elif self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:  # our buffer towards the client is full: stop reading the server
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # upstream events
    def attach(self, server: ServerState, upstream: asyncio.Transport) -> None:
        self.server = server
        self.upstream = upstream
        upstream.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        for chunk in self.pending:
            upstream.write(chunk)
        self.pending.clear()
        self.pending_bytes = 0
        if self.eof_client and upstream.can_write_eof():
            upstream.write_eof()
        else:
            self.transport.resume_reading()
        self._quiet_in = self._quiet_out = self.frontend.loop.time()

    def connected(self, sock: socket.socket | None, exc: BaseException | None) -> None:
        self.frontend.connected(self, sock, exc)

    def server_eof(self) -> None:
        self.eof_server = True
        if self.eof_client:
            self.close()
        elif self.transport.can_write_eof():
            self.transport.write_eof()

    def upstream_lost(self, exc: Exception | None) -> None:
        self.close()

    def sweep(self, now: float) -> None:
        """Called by the listener's sweep every tick (1/8 of the shortest idle timeout): byte
        counters that did not move mean silence, so the hot path pays nothing for idle tracking."""
        if self.upstream is None or self.closed:
            return
        if self.bytes_in != self._seen_in:
            self._seen_in, self._quiet_in = self.bytes_in, now
        if self.bytes_out != self._seen_out:
            self._seen_out, self._quiet_out = self.bytes_out, now
        fe = self.frontend
        if now - self._quiet_in >= fe.client_idle:
            self.term = "cD"
            log.info(
                "closing %s -> %s: client idle for %.1fs (timeouts.client_idle)",
                self.peer,
                self.server.name if self.server else "-",
                now - self._quiet_in,
            )
            self.close()
        elif now - self._quiet_out >= fe.server_idle:
            self.term = "sD"
            log.info(
                "closing %s -> %s: server idle for %.1fs (timeouts.server_idle)",
                self.peer,
                self.server.name if self.server else "-",
                now - self._quiet_out,
            )
            self.close()

    def close(self) -> None:
        """Close both sides (buffered data is flushed first) and release the slot. Idempotent."""
        if self.closed:
            return
        self.closed = True
        access = self.frontend.access
        if access is not None:
            access.l4(
                self.frontend.name,
                self.peer,
                self.server.name if self.server else "-",
                self.bytes_in,
                self.bytes_out,
                self.frontend.loop.time() - self.started,
                self.term,
            )
        self.transport.close()
        if self.upstream is not None:
            self.upstream.close()
        self.frontend.finished(self)

    def abort(self) -> None:
        self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()
        self.close()


class L4Frontend:
    """Accepts client connections on the listener and gives each one a server (or a queue slot)."""

    def __init__(
        self,
        config: Config,
        servers: Sequence[ServerState],
        picker: Picker,
        required: tuple[str, ...] | None = None,
        name: str = "l4",
    ) -> None:
        # Made in the running loop (a generation's start). Kept: on Python 3.11 every
        # asyncio.get_running_loop() is a getpid() system call, and a connection would make seven.
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.name = name  # "l4", or "imap:993" for a mail listener (in log lines)
        self.servers = list(servers)
        self.required = required if required is not None else config.required_services
        self.picker = picker
        # Slots, the wait queue and the eligible servers: the decisions, without I/O (balance/admission.py).
        self.admission: Admission[L4Client] = Admission(
            config.limits.maxconn, config.limits.queue, config.timeouts.queue, config.retries
        )
        self.clients: set[L4Client] = set()
        self.accepted_total = 0
        self.access: AccessLog | None = None
        self.refused = 0  # connections closed by the balancer (no server, queue full or timed out)
        # At maxconn clients wait in the FIFO queue; what it cannot hold, or holds too long, is refused:
        # each refusal is logged, at most one line a second per reason (engine/refusals.py).
        self.queue_full = RefusalLog(
            log, logging.WARNING, f"limits.maxconn ({config.limits.maxconn}) reached and the queue is full"
        )
        self.queue_expired = RefusalLog(
            log, logging.WARNING, f"waited timeouts.queue ({config.timeouts.queue:g}s) in the queue"
        )
        self.client_idle = config.timeouts.client_idle
        self.server_idle = config.timeouts.server_idle
        self.sweeper = Sweeper(max(0.05, min(self.client_idle, self.server_idle) / 8))
        self._queue_timer: asyncio.TimerHandle | None = None
        self.empty = asyncio.Event()  # set while no client connection is open
        self.empty.set()
        self.refresh()

    def protocol_factory(self) -> L4Client:
        return L4Client(self)

    def start(self) -> None:
        """Start the idle sweep (call once the loop runs)."""
        self.sweeper.start(self.clients)

    @property
    def eligible(self) -> list[ServerState]:
        return self.admission.eligible

    @property
    def queue(self) -> WaitQueue[L4Client]:
        return self.admission.queue

    def refresh(self) -> None:
        """Recompute which servers take connections (engine/pools.py logs who joins or leaves)."""
        self.admission.eligible = [s for s in self.servers if s.serves_all(self.required)]
        self._serve_queue()

    # connection lifecycle
    def accepted(self, client: L4Client) -> None:
        self.accepted_total += 1
        self.clients.add(client)
        self.empty.clear()
        verdict = self.admission.admit(client, self.loop.time())
        if verdict is Verdict.SERVE:
            self._dispatch(client)
        elif verdict is Verdict.QUEUE:
            # Nothing is read from a waiting client (attach() resumes): the queue holds up to
            # limits.queue clients for up to timeouts.queue, and none of them may cost a buffer.
            client.transport.pause_reading()
            if self._queue_timer is None:
                self._arm_queue_timer()
        elif verdict is Verdict.NO_SERVER:
            log.warning("refused %s: no server is up", client.peer)
            self.refused += 1
            client.term = "SC"
            client.close()
        else:
            self.queue_full.refused(
                "refused %s: maxconn reached and the queue is full (%d waiting)", client.peer, len(self.queue)
            )
            client.term = "PQ"
            self.refused += 1
            client.close()

    def finished(self, client: L4Client) -> None:
        self.clients.discard(client)
        if client.server is not None:
            client.server.closed(client.bytes_in, client.bytes_out)
            client.server = None
            self.admission.release()
        elif client.connecting is not None:  # gone while its server was being connected
            self._give_up(client)
            self.admission.release()
        else:
            self.admission.forget(client)
        if not self.clients:
            self.empty.set()
        self._serve_queue()

    def _dispatch(self, client: L4Client) -> None:
        """A client that holds a slot: connect it to the next server (`connected` tries the one after
        on refusal, timeout or reset, within `retries`); refused, and its slot released, when none is
        left."""
        # The picker keys by the address only when its algorithm hashes one (balance/algorithm.py).
        peername = client.transport.get_extra_info("peername")
        address = str(peername[0]) if peername else ""
        server = self.admission.next_server(self.picker, address, client.tried)
        if server is None:
            log.warning(
                "refused %s: no server accepted the connection (tried %s)",
                client.peer,
                ", ".join(s.name for s in client.tried) or "none: every server is full or down",
            )
            client.term = "SC"
            self.refused += 1
            self.admission.release()  # its slot, before close() tells the listener it went
            client.close()
            return
        client.tried.append(server)
        server.opened()
        client.connecting = Connect(
            self.loop, server.address, server.port, self.config.timeouts.connect, client.connected
        )

    def connected(self, client: L4Client, sock: socket.socket | None, exc: BaseException | None) -> None:
        """The connect to `client.tried[-1]` ended: relay, or try the next server."""
        client.connecting = None
        server = client.tried[-1]
        if sock is None:
            server.closed(0, 0)
            server.connect_errors += 1
            reason = (
                "timeout"
                if isinstance(exc, TimeoutError)
                else (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
            )
            log.warning(
                "connect to %s (%s:%d) for %s failed: %s",
                server.name,
                server.address,
                server.port,
                client.peer,
                reason,
            )
            self._dispatch(client)
            return
        upstream = L4Upstream(client)
        # Its peer is the address connected to: no getpeername() system call.
        transport = TcpTransport(
            self.loop, sock, upstream, {"peername": (server.address, server.port), "socket": sock}
        )
        transport.start(writer_registered=True)
        client.attach(server, transport)

    def _give_up(self, client: L4Client) -> None:
        """Stop connecting `client` (it went, or the generation stopped)."""
        connecting = client.connecting
        if connecting is not None:
            client.connecting = None
            connecting.cancel()
            client.tried[-1].closed(0, 0)

    def _arm_queue_timer(self) -> None:
        deadline = self.admission.next_deadline()
        self._queue_timer = None
        if deadline is not None:
            self._queue_timer = self.loop.call_at(deadline, self._queue_expired)

    def _queue_expired(self) -> None:
        for client in self.admission.expired(self.loop.time()):
            self._refuse_expired(client)
        self._arm_queue_timer()

    def _refuse_expired(self, client: L4Client) -> None:
        self.queue_expired.refused(
            "refused %s: waited %.0fs in the queue (timeouts.queue)", client.peer, self.config.timeouts.queue
        )
        client.term = "sQ"
        self.refused += 1
        client.close()

    def _serve_queue(self) -> None:
        if not self.queue:
            return
        now = self.loop.time()
        for client in self.admission.expired(now):  # due, its timer not run yet: refused all the same
            self._refuse_expired(client)
        while (waiting := self.admission.next_waiting()) is not None:
            if waiting.closed:
                self.admission.release()
            else:
                self._dispatch(waiting)

    def counters(self) -> Counters:
        """This listener's counters (its pool's servers are counted by the generation)."""
        return Counters(len(self.clients), self.accepted_total, self.refused, len(self.queue))

    def close_all(self) -> int:
        """Close every connection now; returns how many there were."""
        clients = list(self.clients)
        for client in clients:
            client.abort()
        return len(clients)

    def close_server(self, server: ServerState, service: str | None) -> None:
        """Maintenance: close the open connections to `server` now (l4 cannot single out a service)."""
        for client in list(self.clients):
            if client.server is server:
                client.abort()

    def member_down(self, server: ServerState, service: str) -> None:
        """The checks marked `server` down for a service this listener needs: its connections that never
        got a byte back are closed now (HAProxy's `on-marked-down shutdown-sessions`), so a client
        stuck on a frozen server reconnects to another instead of waiting for its own timeout. Those
        that got an answer are left to their idle timeouts: they may be working."""
        if service not in self.required:
            return
        for client in list(self.clients):
            if client.server is server and client.upstream is not None and not client.bytes_out:
                log.warning(
                    "closing %s -> %s: server %s was marked down before it answered",
                    client.peer,
                    server.name,
                    server.name,
                )
                client.term = "DD"
                client.abort()

    def drain(self, close_idle: bool) -> None:
        """The listener stopped accepting: the connections held (and those still waiting for a server)
        go on until they end. A byte relay cannot tell an idle connection from one with a request on
        the wire, so none is closed here, whatever `close_idle` says; the idle timeouts still apply
        (the sweep keeps running) and the generation's bound closes what is left."""

    def stop(self) -> None:
        """The generation is gone: no more sweeps, no connection attempt left; refusals still counted
        are logged."""
        self.sweeper.stop()
        self.queue_full.flush()
        self.queue_expired.flush()
        for client in list(self.clients):
            if client.connecting is not None:
                self._give_up(client)
                self.admission.release()
