"""TCP straight on the socket for the data plane: the accept loop of every data-plane listener, the
non-blocking connect every upstream connection starts with, and `TcpTransport`, an asyncio transport
over a non-blocking socket driven by the loop's reader/writer callbacks (both sides of a Layer 4
relay). engine/tlsfd.py builds TLS on the first two.

Why not the loop's own TCP transports (`create_server`, `create_connection`): measured per new Layer 4
connection (docs/benchmarks.md), uvloop's transports ask the kernel for both addresses of every socket
they start (`getsockname`, `getpeername`: four system calls per relayed connection, for addresses the
accept and the connect already know), and `create_connection` is a coroutine, run in a task with a
future and a timeout around it, for what is one `connect()` and one writable event. Here the accept
hands over the peer's address, the connect is a callback, and the socket stays registered with the
loop from the connect to the transport (uvloop makes a new poll handle, an ioctl and three epoll_ctl
calls, each time a descriptor's last reader or writer goes).

Semantics kept from asyncio transports: `connection_made` when started, `data_received`,
`eof_received` (returning True keeps the write side open: half-close), `connection_lost` exactly once,
`pause_writing`/`resume_writing` around the write-buffer limits, `pause_reading`/`resume_reading`,
`write_eof` once the buffer is out. One addition: after `close()`, a peer that reads nothing for
CLOSE_FLUSH_S is cut off (asyncio's transports would hold the buffer and the socket for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final

RECV_SIZE = 256 * 1024  # bytes asked of the kernel per read (what uvloop's streams read at most)
# After close(), buffered bytes still go out; a peer that reads nothing for this long is cut off.
CLOSE_FLUSH_S = 30.0
ACCEPT_BATCH = 64  # connections accepted per readiness event of the listening socket
ACCEPT_RETRY_S = 1.0  # pause after accept() fails for lack of descriptors or memory
# accept() failures that say the process or the kernel is out of a resource: the next accept() would
# fail the same way, so accepting pauses (asyncio's selector_events and trio do the same). Any other
# failure (ECONNABORTED: the client reset before accept; EPERM: a firewall rule; EPROTO ...) concerns
# that one connection only, and the next one in the backlog is accepted at once.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ProtocolFactory = Callable[[], asyncio.Protocol]
# What a transport points at once its protocol has had connection_lost: a connection's protocols
# point at its transports, and without this last edge cut their cycle would wait for the garbage
# collector (measured: 5 % of the CPU of a new Layer 4 connection) instead of being freed at once.
GONE: Final = asyncio.Protocol()
Connected = Callable[[socket.socket | None, BaseException | None], None]


def nodelay(sock: socket.socket) -> None:
    # Requests and responses are small and latency matters (DESIGN.md §6): no Nagle delay. Interactive
    # RPC/HTTP and MAPI's PENDING chunks must not wait for Nagle's algorithm.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Acceptor:
    """Accepts connections on a listening socket and hands each to `accepted(conn, address)`.
    Provides the parts of asyncio.Server a generation uses."""

    def __init__(self, sock: socket.socket, log: logging.Logger) -> None:
        self._sock = sock
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._serving = False
        self._closed = False
        sock.setblocking(False)

    def accepted(self, conn: socket.socket, address: Any) -> None:
        raise NotImplementedError

    async def start_serving(self) -> None:
        if not self._serving and not self._closed:
            self._serving = True
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting (connections already accepted go on)."""
        if self._closed:
            return
        self._closed = True
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        return None

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    self._log.debug("accept() failed for one connection: %s; accepting the next", exc)
                    continue
                # EMFILE and friends: the backlog keeps the rest. The listening socket stays
                # readable: stop watching it for a while instead of spinning on the same error.
                self._log.error("cannot accept a connection: %s; accepting again in %gs", exc, ACCEPT_RETRY_S)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume_accepting)
                return
            self.accepted(conn, address)

    def _resume_accepting(self) -> None:
        if self._serving and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)


class TcpServer(Acceptor):
    """Accepts plain TCP connections: each gets a protocol from `factory` on a started TcpTransport."""

    def __init__(self, factory: ProtocolFactory, sock: socket.socket, log: logging.Logger) -> None:
        super().__init__(sock, log)
        self._factory = factory

    def accepted(self, conn: socket.socket, address: Any) -> None:
        try:
            conn.setblocking(False)
            nodelay(conn)
        except OSError as exc:  # the client is already gone
            conn.close()
            self._log.debug("accepted connection from %s unusable: %s", address, exc)
            return
        TcpTransport(self._loop, conn, self._factory(), {"peername": address, "socket": conn}).start()


class Connect:
    """A non-blocking TCP connect under a bound, with the loop's callbacks (no task or coroutine).

    `done(sock, None)` is called from the loop's writer callback of the socket once it is connected
    (TCP_NODELAY set), with that writer still registered: the caller takes the registration over in
    the same call (TcpTransport.start, or a TLS handshake), which keeps uvloop's poll handle. Or
    `done(None, error)`: refused, reset, unreachable, or `TimeoutError()` after `timeout`; the socket
    is then closed. Never called from the constructor, nor after `cancel()`. `host` is an IP address
    (the balancer resolves server names when a generation starts)."""

    __slots__ = ("_done", "_fd", "_loop", "_registered", "_sock", "_timer", "address")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float, done: Connected
    ) -> None:
        self._loop = loop
        self.address = (host, port)
        self._done: Connected | None = done
        self._registered = False
        self._timer: asyncio.TimerHandle | None = None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock = sock
        self._fd = sock.fileno()
        try:
            sock.setblocking(False)
            error = sock.connect_ex(self.address)
        except OSError as exc:
            loop.call_soon(self._fail, exc)
            return
        if error not in (0, errno.EINPROGRESS):
            loop.call_soon(self._fail, self._error(error))
            return
        self._registered = True
        loop.add_writer(self._fd, self._connected)
        self._timer = loop.call_later(timeout, self._expired)

    def _error(self, code: int) -> OSError:
        host, port = self.address
        return OSError(code, f"connect to {host}:{port} failed: {os.strerror(code)}")

    def _connected(self) -> None:
        if self._done is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self._sock
        try:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise self._error(error)
            nodelay(sock)
        except OSError as exc:
            self._fail(exc)
            return
        done, self._done = self._done, None
        self._registered = False  # the caller's now
        done(sock, None)

    def _expired(self) -> None:
        self._timer = None
        self._fail(TimeoutError())

    def _fail(self, exc: BaseException) -> None:
        done, self._done = self._done, None
        self._release()
        if done is not None:
            done(None, exc)

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._registered:
            self._registered = False
            self._loop.remove_writer(self._fd)
        self._sock.close()

    def cancel(self) -> None:
        """Give up (the client went, the generation stopped): nothing is called back, the socket closes."""
        if self._done is None:
            return
        self._done = None
        self._release()


class SocketTransport(asyncio.Transport):
    """What the transports on a socket share (TcpTransport here, TlsTransport in engine/tlsfd.py):
    the protocol and its reading and writing state as the asyncio contract keeps them, and the
    registration of the descriptor with the loop."""

    __slots__ = (
        "_closing",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_protocol",
        "_reading",
        "_write_paused",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, protocol: asyncio.Protocol, extra: dict[str, Any]
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._closing = False  # close() or abort() called (or a fatal error)
        self._lost = False  # connection_lost scheduled
        self._reading = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._write_paused = False

    def _read_ready(self) -> None:
        raise NotImplementedError

    def _connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        self._protocol = GONE
        protocol.connection_lost(exc)

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _start_reading(self) -> bool:
        """Register the reader; False when already reading or closing."""
        if self._reading or self._closing:
            return False
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)
        return True

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _check_high(self, size: int) -> None:
        if not self._write_paused and size > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _check_low(self, size: int) -> None:
        if self._write_paused and size <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


class TcpTransport(SocketTransport):
    """One TCP connection read and written with the loop's reader/writer callbacks."""

    __slots__ = ("_buffer", "_eof_wanted", "_flush_timer", "_sock")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.Protocol,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(loop, sock.fileno(), protocol, extra)
        self._sock = sock
        self._buffer: bytearray | None = None  # what the socket did not take yet (None: nothing)
        self._eof_wanted = False  # write_eof() called: the FIN goes once the buffer is out
        self._flush_timer: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, *, writer_registered: bool = False) -> None:
        """Start reading and hand the connection to the protocol (which may pause reading or close at
        once). `writer_registered`: a connect's writer is still registered for the socket; the reader
        is added before it is removed, so the loop keeps the socket's registration."""
        self._start_reading()
        if writer_registered:
            self._loop.remove_writer(self._fd)
        self._protocol.connection_made(self)

    def close(self) -> None:
        """Send what is buffered, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._buffer is None:
            self._finish(None)
        else:
            self._flush_timer = self._loop.call_later(CLOSE_FLUSH_S, self._flush_expired)

    def _flush_expired(self) -> None:
        self._flush_timer = None
        self._finish(TimeoutError(f"peer read nothing for {CLOSE_FLUSH_S:g}s after close"))

    def abort(self) -> None:
        self._closing = True
        self._stop_reading()
        self._finish(None)

    def _fatal(self, exc: Exception) -> None:
        self._closing = True
        self._stop_reading()
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._buffer is not None:
            self._buffer = None
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._loop.call_soon(self._connection_lost, exc)

    # --- reading -----------------------------------------------------------------------------------
    def resume_reading(self) -> None:
        self._start_reading()

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._stop_reading()
        if not self._protocol.eof_received():
            self.close()

    # --- writing -----------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._eof_wanted:
            raise RuntimeError("write() after write_eof()")
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            self._check_high(len(buffer))
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fatal(exc)
            return
        if sent == len(data):
            return
        buffer = bytearray(memoryview(data)[sent:])
        self._buffer = buffer
        self._loop.add_writer(self._fd, self._write_ready)
        self._check_high(len(buffer))

    def _write_ready(self) -> None:
        buffer = self._buffer
        if buffer is None:
            return
        try:
            sent = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        del buffer[:sent]
        self._check_low(len(buffer))
        if buffer:
            return
        self._buffer = None
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._finish(None)
        elif self._eof_wanted:
            self._shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: the FIN goes once what is buffered is out; reading goes on."""
        if self._eof_wanted or self._closing:
            return
        self._eof_wanted = True
        if self._buffer is None:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        with contextlib.suppress(OSError):  # the peer is gone: reading or the next write says so
            self._sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_size(self) -> int:
        return 0 if self._buffer is None else len(self._buffer)
