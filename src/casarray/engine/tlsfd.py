"""TLS straight on the socket for the Layer-7 data plane: an asyncio transport over a non-blocking
`ssl.SSLSocket`, driven by the loop's reader/writer callbacks.

Why not the loop's own TLS transport: asyncio's and uvloop's TLS (`create_server(ssl=…)`) run OpenSSL
over memory BIOs, so every read copies ciphertext into a BIO and drains the plaintext with calls that
end in an SSLWantReadError, and every write copies the records out of a BIO before sending them. Here
OpenSSL reads and writes the socket itself: one `recv` (read syscall + decrypt) and one `send`
(encrypt + write syscall) per message, no BIOs. Measured on the benchmark machine (a TLS relay to
nginx, keep-alive): about 15 % less CPU per request, and about 9 KiB less memory per connection
(docs/benchmarks.md). The cost is this module: handshakes, flow control and shutdown are ours.

Semantics kept from asyncio transports: `connection_made` after the handshake, `data_received`,
`eof_received` (returning True keeps the write side open), `connection_lost` exactly once,
`pause_writing`/`resume_writing` around the write-buffer limits, `pause_reading`/`resume_reading`.
Writes go out at once when the socket takes them; OpenSSL writes a whole buffer or nothing (no partial
writes), so a write that would block is retried with the same bytes when the socket is writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from casarray.engine.sockets import (
    CLOSE_FLUSH_S,
    Acceptor,
    Connect,
    ProtocolFactory,
    SocketTransport,
    nodelay,
)

log = logging.getLogger("casarray.tls")

RECORD = 16 * 1024  # the largest TLS record's plaintext: OpenSSL returns at most one record per read
BATCH = 256 * 1024  # records read back to back are handed to the protocol together, up to this much
LINGER_BYTES = 64 * 1024  # what linger() reads and throws away at most before it closes


def _tls_object(sock: ssl.SSLSocket) -> Any:
    """The C object OpenSSL's connection lives in (`_ssl._SSLSocket`), under the `ssl.SSLSocket`.

    The transport reads, writes and asks for pending bytes four or more times per request; through
    `SSLSocket.recv`/`send`/`pending` each call runs two or three interpreted frames of ssl.py that
    add nothing here (argument checks for flags this module never passes, and a closed-check that is
    a no-op), so the hot path calls the object below them: `read(n)`, `write(data)`, `pending()`. The
    one behaviour those frames add, a ragged EOF (the peer closed without close_notify) read as the
    end instead of an SSLEOFError, is kept in `_read_ready`. The SSLSocket stays the owner of the
    descriptor and does the handshake and the shutdown."""
    tls = getattr(sock, "_sslobj", None)
    if tls is None:
        raise ValueError("the TLS socket has no connection (not wrapped, or already unwrapped)")
    return tls


class TlsTransport(SocketTransport):
    """One TLS connection whose records OpenSSL reads from and writes to the socket directly."""

    __slots__ = (
        "_buffered",
        "_discarded",
        "_first_read",
        "_linger",
        "_linger_timer",
        "_pending",
        "_queue",
        "_resumable",
        "_sock",
        "_tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        protocol: asyncio.Protocol,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(loop, sock.fileno(), protocol, extra)
        self._sock = sock
        self._tls = _tls_object(sock)
        self._pending: bytes | None = None  # the write OpenSSL must be given again (it would block)
        self._queue: list[bytes] = []  # writes behind the pending one
        self._buffered = 0
        self._linger: float | None = None  # linger(): how long to read after close_notify
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discarded = 0
        # Client side (an upstream connection): see _release_write_buffer.
        self._first_read = not sock.server_side
        # Client side, after a full handshake: where its session is kept for the next connections
        # to resume (UpstreamSessions), taken at the first read (a TLS 1.3 ticket comes after the
        # handshake).
        self._resumable: tuple[UpstreamSessions, tuple[str, int]] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """The handshake is done: start reading and hand the connection to the protocol (which may
        pause reading or close at once). The reader is registered first: it takes over the
        handshake's registration of the socket (`_Handshake` leaves it in place; add_reader only
        replaces the callback), where removing and registering it again would cost uvloop a new
        poll handle — an ioctl and three epoll_ctl calls per connection."""
        self._start_reading()
        self._protocol.connection_made(self)
        if self._closing or not self._reading:
            return
        if self._tls.pending():  # application data that arrived with the handshake's last flight
            self._loop.call_soon(self._read_ready)

    def close(self) -> None:
        """Send what is buffered, then close_notify, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._pending is None:
            self._loop.call_soon(self._shutdown, None)
        else:
            self._loop.call_later(CLOSE_FLUSH_S, self._flush_expired)

    def linger(self, timeout: float) -> None:
        """close() for a peer that may still be sending: what is buffered goes out, then close_notify
        and a FIN; what the peer still sends is read and thrown away (not decrypted) until it closes,
        `timeout` passes or LINGER_BYTES came, and then the socket closes. Closing with unread input
        makes the kernel send RST, and an RST can destroy the last answer in the peer's receive buffer
        before it is read (RFC 9112 §9.6); the FIN tells an HTTP client at once that no more comes."""
        if self._closing:
            return
        self._linger = timeout
        self.close()

    def _flush_expired(self) -> None:
        if not self._lost:
            self._fatal(TimeoutError(f"peer read nothing for {CLOSE_FLUSH_S:g}s after close"))

    def abort(self) -> None:
        self._fatal(None)

    def _fatal(self, exc: Exception | None) -> None:
        self._closing = True
        self._stop_reading()
        if self._pending is not None:
            self._pending = None
            self._queue.clear()
            self._buffered = 0
            self._loop.remove_writer(self._fd)
        self._finish(exc)

    def _shutdown(self, exc: Exception | None) -> None:
        if self._lost:
            return
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._sock.unwrap()  # sends close_notify; does not wait for the peer's
        if self._linger is not None and exc is None:
            self._discard_input()
            return
        self._finish(exc)

    def _discard_input(self) -> None:
        assert self._linger is not None
        try:
            self._sock.shutdown(socket.SHUT_WR)  # the FIN; the SSL object is done with
        except OSError:
            self._finish(None)
            return
        self._loop.add_reader(self._fd, self._discard)
        self._linger_timer = self._loop.call_later(self._linger, self._end_linger)

    def _discard(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._discarded += len(data)
        if not data or self._discarded > LINGER_BYTES:
            self._end_linger()

    def _end_linger(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self._loop.remove_reader(self._fd)
        self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        # The SSLSocket's close frees the connection's OpenSSL state at once, but only once nothing
        # else holds it: kept here until the transport itself goes, the freed memory came back
        # interleaved with new connections' and the heap stayed fragmented (+4 KiB of RSS for each
        # aborted connection, tests/reliability/test_aborted_connections.py).
        self._tls = None
        self._sock.close()
        self._loop.call_soon(self._connection_lost, exc)

    # --- reading -----------------------------------------------------------------------------------
    def resume_reading(self) -> None:
        # Decrypted bytes OpenSSL holds: the socket will not signal them.
        if self._start_reading() and self._tls.pending():
            self._loop.call_soon(self._read_ready)

    def _read_ready(self) -> None:
        tls = self._tls
        while self._reading:
            try:
                data = tls.read(RECORD)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLEOFError:
                data = b""  # the peer closed without close_notify: an end, as SSLSocket.recv says
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if not data:  # close_notify, or the peer closed the socket
                self._eof()
                return
            if self._first_read:
                self._release_write_buffer()
            if len(data) == RECORD:
                # A full record: a bulk transfer is likely under way. Read on (one protocol call per
                # batch instead of per 16 KiB) until the socket is drained or the batch is full.
                data = self._read_more(data)
            self._protocol.data_received(data)
            if not tls.pending():
                return  # the rest, if any, is still in the kernel: the loop calls again

    def _release_write_buffer(self) -> None:
        """After the first read of a client-side connection: give back the write buffer OpenSSL set
        up to read what the server sent after the handshake.

        A TLS 1.3 server sends its NewSessionTicket messages once the handshake is done (RFC 8446
        §4.6.1; nginx and OpenSSL send two), so they arrive before the first response and this read
        processed them. OpenSSL's handshake code allocates both record buffers to do that (16 KiB
        each and more), and with SSL_MODE_RELEASE_BUFFERS (which Python sets) it frees the write
        buffer only when a write completes. Nothing is written on an idle connection, so a pinned
        upstream connection would keep 16 KiB for its whole life; a write of nothing completes at
        once and frees it. Once per connection: later post-handshake messages (a KeyUpdate) are rare,
        and the next request's write frees what they take."""
        self._first_read = False
        resumable = self._resumable
        if resumable is not None:
            self._resumable = None
            sessions, key = resumable
            sessions.keep(key, self._tls.session, self._loop.time())
        if self._pending is None and not self._closing:
            with contextlib.suppress(ssl.SSLError, OSError):
                self._tls.write(b"")

    def _read_more(self, first: bytes) -> bytes:
        chunks = [first]
        size = len(first)
        while size < BATCH:
            try:
                data = self._tls.read(RECORD)
            except (ssl.SSLError, OSError):
                break  # would block, or an error the next read reports
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks)

    def _eof(self) -> None:
        self._stop_reading()
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    # --- writing -----------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._pending is not None:
            self._queue.append(bytes(data))
            self._buffered += len(data)
            self._check_high(self._buffered)
            return
        try:
            self._tls.write(data)
            return
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._pending = bytes(data)
            self._buffered += len(data)
            self._loop.add_writer(self._fd, self._write_ready)
            self._check_high(self._buffered)
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)

    def _write_ready(self) -> None:
        while self._pending is not None:
            try:
                self._tls.write(self._pending)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            self._buffered -= len(self._pending)
            if self._queue:
                self._pending = b"".join(self._queue)
                self._queue.clear()
            else:
                self._pending = None
        self._loop.remove_writer(self._fd)
        self._check_low(self._buffered)
        if self._closing:
            self._shutdown(None)

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close that clients honour

    def get_write_buffer_size(self) -> int:
        return self._buffered


class _Handshake:
    """Drives a non-blocking handshake with the loop's reader/writer callbacks, under a deadline."""

    __slots__ = ("_done", "_fd", "_foreign", "_loop", "_sock", "_timer", "_tls", "_want")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        timeout: float,
        done: Callable[[ssl.SSLSocket, Exception | None], None],
        *,
        writing: bool = False,
    ) -> None:
        self._loop = loop
        self._sock = sock
        # Each step on the `_ssl` object itself: `SSLSocket.do_handshake` adds interpreted frames and a
        # settimeout() (an ioctl system call) per step, for a socket that is already non-blocking.
        self._tls = _tls_object(sock)
        self._fd = sock.fileno()
        self._done: Callable[[ssl.SSLSocket, Exception | None], None] | None = done
        # What is registered for the socket: 1 a reader, 2 a writer. `writing`: the caller's writer
        # (a connect's) is registered and is taken over, not removed and registered again.
        self._want = 2 if writing else 0
        self._foreign = writing  # the registered callback is the caller's, not _step
        self._timer = loop.call_later(timeout, self._expire)
        self._step()

    def _step(self) -> None:
        if self._done is None:
            return  # finished: readable again before the transport took the socket over
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(1)
            return
        except ssl.SSLWantWriteError:
            self._wait(2)
            return
        except (ssl.SSLError, OSError) as exc:
            self._end(exc)
            return
        self._end(None)

    def _wait(self, want: int) -> None:
        if want == self._want and not self._foreign:
            return
        # The new registration first, then the old one's removal: uvloop drops a descriptor's poll
        # handle the moment it has neither reader nor writer, and would make a new one.
        old, self._want, self._foreign = self._want, want, False
        if want == 1:
            self._loop.add_reader(self._fd, self._step)
            if old == 2:
                self._loop.remove_writer(self._fd)
        else:
            self._loop.add_writer(self._fd, self._step)
            if old == 1:
                self._loop.remove_reader(self._fd)

    def _unregister(self) -> None:
        if self._want == 1:
            self._loop.remove_reader(self._fd)
        elif self._want == 2:
            self._loop.remove_writer(self._fd)
        self._want = 0

    def _expire(self) -> None:
        self._end(TimeoutError("TLS handshake timed out"))

    def cancel(self) -> None:
        self._unregister()
        self._timer.cancel()
        self._done = None

    def _end(self, exc: Exception | None) -> None:
        done, self._done = self._done, None
        if exc is not None or self._want != 1:
            self._unregister()
        # Done and waiting to read: the reader stays registered for the transport to take over (see
        # TlsTransport.start); cancel() still removes it if no transport comes.
        self._timer.cancel()
        if done is not None:
            done(self._sock, exc)


class TlsServer(Acceptor):
    """Accepts TLS connections on a listening socket: handshake first, then a protocol from `factory`
    with a TlsTransport. Provides the parts of asyncio.Server a generation uses."""

    def __init__(
        self,
        factory: ProtocolFactory,
        sock: socket.socket,
        context: ssl.SSLContext,
        handshake_timeout: float,
        on_failure: Callable[[Exception], None],
    ) -> None:
        super().__init__(sock, log)
        self._factory = factory
        self._context = context
        self._timeout = handshake_timeout
        self._on_failure = on_failure
        # Connections accepted whose handshake is under way: a draining generation waits for them too
        # (they were accepted before it stopped accepting, so they are its to serve).
        self.handshaking = 0
        self.handshakes_done = asyncio.Event()
        self.handshakes_done.set()

    def accepted(self, conn: socket.socket, address: Any) -> None:
        try:
            conn.setblocking(False)
            nodelay(conn)
            tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            conn.close()
            self._on_failure(exc)
            return
        self.handshaking += 1
        self.handshakes_done.clear()
        _Handshake(self._loop, tls, self._timeout, partial(self._handshaken, address))

    def _handshaken(self, address: Any, tls: ssl.SSLSocket, exc: Exception | None) -> None:
        self.handshaking -= 1
        if not self.handshaking:  # its waiters run later: by then the protocol below has its connection
            self.handshakes_done.set()
        if exc is not None:
            _discard_input(tls)
            tls.close()
            self._on_failure(exc)
            return
        protocol = self._factory()
        extra = {"peername": address, "socket": tls, "ssl_object": tls, "sslcontext": tls.context}
        TlsTransport(self._loop, tls, protocol, extra).start()


def _discard_input(sock: socket.socket) -> None:
    """Read away what a failed peer sent (say, plain HTTP to the TLS port), so that closing ends the
    connection with a FIN, not the reset the kernel sends when unread data is thrown away."""
    for _ in range(4):
        try:
            if not os.read(sock.fileno(), 65536):
                return
        except OSError:  # nothing more for now (or the peer is gone)
            return


class UpstreamSessions:
    """The TLS sessions the upstream connections to each server resume, as HAProxy does by default: a
    resumed handshake skips the certificate (TLS 1.2: all public-key work), and the server its
    signature. Measured with nginx (TLS 1.3): 12 % less CPU per new connection here, 15 % less in
    the server (docs/benchmarks.md).

    One per listener generation, like its SSLContext: a reload that changes `upstream_tls` starts
    without sessions. A session is taken only from a full handshake, which verified the certificate,
    and offered for `max_age` seconds after it; then the next connection makes a full handshake again,
    so a server's certificate is checked at least that often. A session the server refuses, or a
    connection that fails after offering it, is dropped. Taking one costs ~0.2 ms (CPython copies it
    by serialising and parsing it, certificates included), so it is taken once per full handshake,
    not after every connection; the connections that resume it share it, and an idle connection
    holds no more memory than after a full handshake."""

    __slots__ = ("_kept", "context", "max_age")

    def __init__(self, context: ssl.SSLContext, max_age: float = 60.0) -> None:
        self._kept: dict[tuple[str, int], tuple[ssl.SSLSession, float]] = {}
        self.context = context  # the only context its sessions resume in (UpstreamOpen checks)
        self.max_age = max_age

    def offer(self, key: tuple[str, int], now: float) -> ssl.SSLSession | None:
        """The session to resume with the server at `key` (address, port), if one is young enough."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        if now - kept[1] >= self.max_age:
            del self._kept[key]
            return None
        return kept[0]

    def refused(self, key: tuple[str, int], session: ssl.SSLSession) -> None:
        """`session` was refused (the server made a full handshake instead) or a connection that offered
        it failed: not offered again."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] is session:
            del self._kept[key]

    def wanted(self, key: tuple[str, int]) -> bool:
        return key not in self._kept

    def keep(self, key: tuple[str, int], session: ssl.SSLSession | None, now: float) -> None:
        """A full handshake's session (None when the server gave none: no tickets, no session id)."""
        if session is not None and (session.has_ticket or session.id):
            self._kept.setdefault(key, (session, now))


Opened = Callable[["TlsTransport | None", BaseException | None], None]


class UpstreamOpen:
    """Opens one upstream TLS connection with the loop's callbacks, no task or coroutine: a
    non-blocking connect (engine/sockets.py Connect), the handshake on the connect's registration of
    the socket, then `factory()`'s protocol on a started TlsTransport. `done(transport, None)` or
    `done(None, error)` is called once, never from the constructor, unless `cancel()` came first.

    The connect is bounded by `connect_timeout` (its error: `TimeoutError()`), the handshake by
    `handshake_timeout` (`TimeoutError("TLS handshake timed out")`)."""

    __slots__ = (
        "_connect",
        "_context",
        "_done",
        "_factory",
        "_handshake",
        "_handshake_timeout",
        "_key",
        "_loop",
        "_offered",
        "_server_hostname",
        "_sessions",
        "_tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: ProtocolFactory,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_hostname: str | None,
        connect_timeout: float,
        handshake_timeout: float,
        sessions: UpstreamSessions | None,
        done: Opened,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._context = context
        self._server_hostname = server_hostname
        self._handshake_timeout = handshake_timeout
        if sessions is not None and sessions.context is not context:
            sessions = None  # its sessions cannot resume in this context (CPython refuses them)
        self._sessions = sessions
        self._key = (host, port)
        self._offered: ssl.SSLSession | None = None
        self._done: Opened | None = done
        self._handshake: _Handshake | None = None
        self._tls: ssl.SSLSocket | None = None
        self._connect: Connect | None = Connect(loop, host, port, connect_timeout, self._connected)

    def _connected(self, sock: socket.socket | None, exc: BaseException | None) -> None:
        self._connect = None
        if sock is None:
            assert exc is not None
            self._fail(exc)
            return
        sessions = self._sessions
        offered = sessions.offer(self._key, self._loop.time()) if sessions is not None else None
        self._offered = offered
        fd = sock.fileno()  # a failed wrap may have detached (and closed) it already
        try:
            self._tls = self._context.wrap_socket(
                sock, server_hostname=self._server_hostname, do_handshake_on_connect=False, session=offered
            )
        except (OSError, ValueError) as error:
            self._loop.remove_writer(fd)
            sock.close()
            self._fail(error)
            return
        # The handshake takes over the writer the connect left registered (the same descriptor).
        handshake = _Handshake(self._loop, self._tls, self._handshake_timeout, self._handshaken, writing=True)
        if self._done is not None:  # not already over (an error at the first step)
            self._handshake = handshake

    def _handshaken(self, tls: ssl.SSLSocket, exc: Exception | None) -> None:
        self._handshake = (
            None  # a finished handshake unregistered itself, or left its reader for the transport
        )
        if exc is not None:
            self._fail(exc)
            return
        protocol = self._factory()
        # The peer's address is the one connected to (a getpeername() would ask the kernel again).
        extra = {"peername": self._key, "socket": tls, "ssl_object": tls, "sslcontext": self._context}
        transport = TlsTransport(self._loop, tls, protocol, extra)
        sessions = self._sessions
        if sessions is not None and not tls.session_reused:
            if self._offered is not None:
                sessions.refused(self._key, self._offered)
            if sessions.wanted(self._key):
                transport._resumable = (sessions, self._key)
        done, self._done = self._done, None
        transport.start()
        if done is not None:
            done(transport, None)

    def _fail(self, exc: BaseException) -> None:
        self._release()
        done, self._done = self._done, None
        if done is not None:
            done(None, exc)

    def _release(self) -> None:
        """Close the TLS socket if there is one (the connect closes its own) and, whatever failed,
        drop the session offered: the next connection makes a full handshake, so a server that breaks
        on resumption costs one failed connect, not every one."""
        if self._tls is not None:
            self._tls.close()
        if self._offered is not None and self._sessions is not None:
            self._sessions.refused(self._key, self._offered)
            self._offered = None

    def cancel(self) -> None:
        """Give up (the client went, the generation stopped): nothing is called back, the socket closes."""
        if self._done is None:
            return
        self._done = None
        if self._connect is not None:
            self._connect.cancel()
            self._connect = None
        if self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None
        self._release()
