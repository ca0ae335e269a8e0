"""The socket-level TLS transport (engine/tlsfd.py) on loopback with the lab CA: the asyncio transport
contract it promises (data both ways, flow control, pause/resume, half-close, close_notify, exactly one
connection_lost) and its handshake failures (timeout, garbage, an unverified server)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import os
import select
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from casarray.engine import sockets, tlsfd
from casarray.engine.sockets import ProtocolFactory
from casarray.engine.tlsfd import TlsServer, TlsTransport, UpstreamOpen, UpstreamSessions
from casarray.lab.pki import CertFiles
from tests.support import Recorder, open_fds, tls_context, unanswered_port, until

NAME = "outlook.alwayshotcafe.com"


def server_context(pki: CertFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.certificate, pki.key)
    return context


@dataclass
class Served:
    port: int
    failures: list[Exception]  # what TlsServer reported as failed handshakes
    recorders: list[Recorder]  # one per connection that completed its handshake, in order

    async def greeted(
        self, pki: CertFiles, greeting: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Recorder]:
        """A client connection that has sent `greeting`, once the server side received it."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=tls_context(pki.ca), server_hostname=NAME
        )
        writer.write(greeting)
        await until(lambda: bool(self.recorders) and bool(self.recorders[-1].data), self.recorders)
        server = self.recorders[-1]
        assert server.transport is not None
        return reader, writer, server


@asynccontextmanager
async def serving(
    pki: CertFiles, make: Callable[[], Recorder] = Recorder, handshake_timeout: float = 5.0, port: int = 0
) -> AsyncIterator[Served]:
    served = Served(0, [], [])

    def factory() -> Recorder:
        served.recorders.append(make())
        return served.recorders[-1]

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    served.port = listener.getsockname()[1]
    server = TlsServer(factory, listener, server_context(pki), handshake_timeout, served.failures.append)
    await server.start_serving()
    try:
        yield served
    finally:
        server.close()


def run(coro: object) -> None:
    uvloop.run(coro)  # type: ignore[arg-type]


async def open_tls_connection(
    factory: ProtocolFactory,
    host: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    handshake_timeout: float,
    sessions: UpstreamSessions | None = None,
    connect_timeout: float = 30.0,
) -> tuple[TlsTransport, asyncio.Protocol]:
    """UpstreamOpen as a coroutine, for these tests: the transport and the protocol, or the error raised."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[TlsTransport] = loop.create_future()

    def done(transport: TlsTransport | None, exc: BaseException | None) -> None:
        if opened.done():
            return
        if exc is not None:
            opened.set_exception(exc)
        else:
            assert transport is not None
            opened.set_result(transport)

    opener = UpstreamOpen(
        loop,
        factory,
        host,
        port,
        context,
        server_hostname,
        connect_timeout,
        handshake_timeout,
        sessions,
        done,
    )
    try:
        transport = await opened
    except asyncio.CancelledError:
        opener.cancel()
        raise
    return transport, transport._protocol


def test_data_both_ways_and_close_notify_on_close(pki: CertFiles) -> None:
    async def main() -> None:
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            reader, writer, server = await served.greeted(pki, b"ping 1\n")
            assert await reader.readline() == b"pong 1\n"
            assert server.transport is not None
            assert server.transport.get_extra_info("peername")[0] == "127.0.0.1"
            assert isinstance(server.transport.get_extra_info("ssl_object"), ssl.SSLSocket)
            server.transport.close()
            assert await reader.read() == b""  # a clean end: close_notify arrived (no ragged EOF)
            assert await asyncio.wait_for(server.lost, 5) is None
            assert server.events == ["made", "lost"]
            writer.close()
            assert served.failures == []

    run(main())


def test_a_big_write_pauses_and_resumes_the_writer_and_arrives_whole(pki: CertFiles) -> None:
    payload = bytes(range(256)) * 32 * 1024  # 8 MiB

    async def main() -> None:
        async with serving(pki) as served:
            reader, writer, server = await served.greeted(pki, b"go")
            assert server.transport is not None
            server.transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
            server.transport.write(payload)  # the client has not read yet: this cannot all go out
            assert "pause_writing" in server.events
            received = await reader.readexactly(len(payload))
            assert received == payload
            await until(lambda: "resume_writing" in server.events, served.recorders)
            assert server.events.count("pause_writing") == server.events.count("resume_writing") == 1
            assert server.transport.get_write_buffer_size() == 0
            writer.close()
            assert await asyncio.wait_for(server.lost, 5) is None

    run(main())


def test_close_gives_up_on_a_peer_that_reads_nothing(pki: CertFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tlsfd, "CLOSE_FLUSH_S", 0.3)

    async def main() -> None:
        async with serving(pki) as served:
            raw = socket.create_connection(("127.0.0.1", served.port))
            client = await asyncio.to_thread(tls_context(pki.ca).wrap_socket, raw, server_hostname=NAME)
            client.sendall(b"go")
            await until(lambda: bool(served.recorders) and bool(served.recorders[0].data), served.recorders)
            server = served.recorders[0]
            assert server.transport is not None
            server.transport.write(b"x" * 8 * 1024 * 1024)  # more than the socket buffers take
            assert server.transport.get_write_buffer_size() > 0
            server.transport.close()
            lost = await asyncio.wait_for(server.lost, 5)  # the client never reads
            assert isinstance(lost, TimeoutError)
            client.close()

    run(main())


def test_linger_answers_then_drains_the_client_instead_of_resetting_it(pki: CertFiles) -> None:
    async def main() -> None:
        async with serving(pki) as served:
            raw = socket.create_connection(("127.0.0.1", served.port))
            client = await asyncio.to_thread(tls_context(pki.ca).wrap_socket, raw, server_hostname=NAME)
            client.sendall(b"request")
            await until(lambda: bool(served.recorders) and bool(served.recorders[0].data), served.recorders)
            server = served.recorders[0]
            assert server.transport is not None
            client.sendall(b"more the server never reads" * 1000)  # unread: a plain close would reset
            server.transport.write(b"answer")
            server.transport.linger(5.0)
            client.settimeout(5)
            assert await asyncio.to_thread(client.recv, 100) == b"answer"
            assert await asyncio.to_thread(client.recv, 100) == b""  # close_notify, then the FIN
            assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # no reset
            started = asyncio.get_running_loop().time()
            client.close()  # the client is done: the server closes now, not after the 5 s
            assert await asyncio.wait_for(server.lost, 5) is None
            assert asyncio.get_running_loop().time() - started < 2

            raw = socket.create_connection(("127.0.0.1", served.port))
            silent = await asyncio.to_thread(tls_context(pki.ca).wrap_socket, raw, server_hostname=NAME)
            silent.sendall(b"x")
            await until(
                lambda: len(served.recorders) == 2 and bool(served.recorders[1].data), served.recorders
            )
            other = served.recorders[1]
            assert other.transport is not None
            other.transport.linger(0.3)  # a client that never closes is cut off after the bound
            assert await asyncio.wait_for(other.lost, 5) is None
            silent.close()

    run(main())


def test_paused_reading_holds_data_until_resumed(pki: CertFiles) -> None:
    async def main() -> None:
        async with serving(pki) as served:
            _, writer, server = await served.greeted(pki, b"first")
            assert server.transport is not None
            server.transport.pause_reading()
            assert not server.transport.is_reading()
            writer.write(b"second" * 5000)  # several records
            await writer.drain()
            await asyncio.sleep(0.2)
            assert bytes(server.data) == b"first"
            server.transport.resume_reading()
            await until(lambda: len(server.data) >= 5 + 6 * 5000, served.recorders)
            assert bytes(server.data) == b"first" + b"second" * 5000
            writer.close()
            await asyncio.wait_for(server.lost, 5)

    run(main())


def test_eof_kept_open_lets_the_server_answer_after_the_client_finished(pki: CertFiles) -> None:
    async def main() -> None:
        async with serving(pki, lambda: Recorder(keep_open_on_eof=True)) as served:
            servers = served.recorders
            raw = socket.create_connection(("127.0.0.1", served.port))
            # The handshake blocks: in a thread, so that the server on this loop can answer.
            client = await asyncio.to_thread(tls_context(pki.ca).wrap_socket, raw, server_hostname=NAME)
            client.sendall(b"request")
            await until(lambda: bool(servers) and servers[0].data == b"request", servers)
            client.setblocking(False)
            with pytest.raises(ssl.SSLWantReadError):
                client.unwrap()  # close_notify sent; the answer to it has not come yet
            server = servers[0]
            await until(lambda: "eof" in server.events, servers)
            assert server.transport is not None
            assert not server.transport.is_closing()
            server.transport.write(b"late answer")
            server.transport.close()
            assert await asyncio.wait_for(server.lost, 5) is None
            readable, _, _ = await asyncio.to_thread(select.select, [client], [], [], 5)
            assert readable
            # The records of the answer and the server's close_notify reached the client's socket.
            assert len(os.read(client.fileno(), 65536)) > len(b"late answer")
            client.close()

    run(main())


def test_a_peer_closing_without_close_notify_is_an_end_not_an_error(pki: CertFiles) -> None:
    """A ragged EOF (the TCP connection closed with no close_notify, as many HTTP clients do) reaches
    the protocol as eof_received, then connection_lost(None): the same as SSLSocket.recv reports it."""

    async def main() -> None:
        async with serving(pki) as served:
            servers = served.recorders
            raw = socket.create_connection(("127.0.0.1", served.port))
            client = await asyncio.to_thread(tls_context(pki.ca).wrap_socket, raw, server_hostname=NAME)
            client.sendall(b"request")
            await until(lambda: bool(servers) and servers[0].data == b"request", servers)
            raw_fd = client.detach()  # the TCP socket, without the TLS layer that would send close_notify
            os.close(raw_fd)
            server = servers[0]
            assert await asyncio.wait_for(server.lost, 5) is None
            assert server.events == ["made", "eof", "lost"]

    run(main())


def test_handshake_timeout_and_garbage_count_as_failures(pki: CertFiles) -> None:
    async def main() -> None:
        async with serving(pki, handshake_timeout=0.3) as served:
            failures = served.failures
            silent = socket.create_connection(("127.0.0.1", served.port))
            garbage = socket.create_connection(("127.0.0.1", served.port))
            garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: len(failures) == 2, [])
            assert len(failures) == 2
            assert any(isinstance(f, TimeoutError) for f in failures)
            assert any(isinstance(f, ssl.SSLError) for f in failures)
            assert served.recorders == []  # no protocol for a connection that never completed its handshake
            silent.settimeout(5)
            assert silent.recv(1) == b""  # closed by the balancer
            silent.close()
            garbage.close()

    run(main())


def test_open_tls_connection_verifies_the_server(pki: CertFiles, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            port = served.port
            transport, protocol = await open_tls_connection(
                lambda: Recorder(), "127.0.0.1", port, tls_context(pki.ca), NAME, 5.0
            )
            assert isinstance(protocol, Recorder)
            transport.write(b"ping")
            await asyncio.wait_for(protocol.got.wait(), 5)
            assert bytes(protocol.data) == b"pong"
            transport.close()
            assert await asyncio.wait_for(protocol.lost, 5) is None

            with pytest.raises(ssl.SSLCertVerificationError):
                await open_tls_connection(
                    lambda: Recorder(), "127.0.0.1", port, ssl.create_default_context(), NAME, 5.0
                )
            with pytest.raises(ssl.SSLCertVerificationError):
                await open_tls_connection(
                    lambda: Recorder(), "127.0.0.1", port, tls_context(pki.ca), "other.example", 5.0
                )

    run(main())


class FlakyListener(socket.socket):
    """A listening socket whose first accept() calls fail with `errors` (errno values), in order."""

    errors: list[int]

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


async def ping_through(listener: FlakyListener, pki: CertFiles, errors: list[int], within: float) -> None:
    """Serve on `listener` (whose accept fails with `errors` first): one client must get its pong
    within `within` seconds."""
    listener.errors = errors

    def factory() -> Recorder:
        return Recorder(echo=True)

    server = TlsServer(factory, listener, server_context(pki), 5.0, lambda exc: None)
    await server.start_serving()
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener.getsockname()[1], ssl=tls_context(pki.ca), server_hostname=NAME
            )
            writer.write(b"ping\n")
            assert await reader.readline() == b"pong\n"
        writer.close()
    finally:
        server.close()


def listening() -> FlakyListener:
    listener = FlakyListener()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_accept_pauses_after_running_out_of_resources_then_goes_on(
    pki: CertFiles, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    monkeypatch.setattr(sockets, "ACCEPT_RETRY_S", 0.2)
    with caplog.at_level(logging.ERROR, logger="casarray.tls"):
        run(ping_through(listening(), pki, [code], within=5))
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot accept a connection: [Errno {code}] {os.strerror(code)}; accepting again in 0.2s"
    ]


def test_a_failed_accept_of_one_connection_does_not_stall_the_others(
    pki: CertFiles, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The client reset before accept() (ECONNABORTED), a firewall hook refused it (EPERM), a protocol
    # error (EPROTO): that connection is gone, the next one is accepted at once, not a pause later.
    monkeypatch.setattr(sockets, "ACCEPT_RETRY_S", 30.0)
    failures = [errno.ECONNABORTED, errno.EPERM, errno.EPROTO]
    with caplog.at_level(logging.DEBUG, logger="casarray.tls"):
        run(ping_through(listening(), pki, list(failures), within=3))
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "accepting again" in m]
    assert [m for m in messages if "accept() failed for one connection" in m] == [
        f"accept() failed for one connection: [Errno {code}] {os.strerror(code)}; accepting the next"
        for code in failures
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "accept()" in r.getMessage())


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_in_use() -> int:
    """Bytes of the C heap in use (glibc's mallinfo2): what OpenSSL allocates lands here."""
    libc = ctypes.CDLL(None)
    try:
        mallinfo2 = libc.mallinfo2
    except AttributeError:
        pytest.skip("no mallinfo2 (not glibc 2.33+)")
    mallinfo2.restype = _MallInfo2
    gc.collect()
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_an_idle_upstream_connection_keeps_no_write_buffer_after_the_session_tickets(pki: CertFiles) -> None:
    """A TLS 1.3 server sends its session tickets after the handshake (Python's ssl, like nginx, sends
    two); reading them makes OpenSSL allocate a 16 KiB write buffer it frees only after a write. The
    client transport frees it after its first read: an empty write on an idle connection then frees
    nothing more (without it, it freed 16 KiB per connection)."""
    count = 50

    async def main() -> None:
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            clients: list[Recorder] = []
            for _ in range(count):
                _transport, protocol = await open_tls_connection(
                    Recorder, "127.0.0.1", served.port, tls_context(pki.ca), NAME, 5.0
                )
                assert isinstance(protocol, Recorder)
                assert protocol.transport is not None
                protocol.transport.write(b"ping\n")
                await asyncio.wait_for(protocol.got.wait(), 5)
                assert bytes(protocol.data) == b"pong\n"
                clients.append(protocol)
            sockets = [c.transport.get_extra_info("ssl_object") for c in clients if c.transport]
            assert all(s.version() == "TLSv1.3" for s in sockets)
            before = _heap_in_use()
            for sock in sockets:
                sock.send(b"")
            freed = before - _heap_in_use()
            assert freed < count * 2048, f"an empty write freed {freed / count:.0f} bytes per connection"
            for client in clients:
                assert client.transport is not None
                client.transport.close()

    run(main())


async def _exchange(port: int, context: ssl.SSLContext, sessions: UpstreamSessions | None) -> bool:
    """One upstream connection: a ping answered, then closed; whether its handshake resumed a session."""
    transport, protocol = await open_tls_connection(Recorder, "127.0.0.1", port, context, NAME, 5.0, sessions)
    assert isinstance(protocol, Recorder)
    transport.write(b"ping\n")
    await asyncio.wait_for(protocol.got.wait(), 5)
    assert bytes(protocol.data) == b"pong\n"
    resumed = bool(transport.get_extra_info("ssl_object").session_reused)
    transport.close()
    assert await asyncio.wait_for(protocol.lost, 5) is None
    return resumed


def test_upstream_connections_resume_the_session_of_a_full_handshake(pki: CertFiles) -> None:
    """The first connection to a server makes a full handshake and its session is kept; the next ones
    resume it. Another server (another port) is not offered it, nor a connection in another context;
    without UpstreamSessions, nothing is resumed."""

    async def main() -> None:
        context = tls_context(pki.ca)
        sessions = UpstreamSessions(context)
        async with (
            serving(pki, lambda: Recorder(echo=True)) as one,
            serving(pki, lambda: Recorder(echo=True)) as two,
        ):
            assert not await _exchange(one.port, context, sessions)
            assert [await _exchange(one.port, context, sessions) for _ in range(3)] == [True, True, True]
            assert not await _exchange(two.port, context, sessions)
            assert await _exchange(two.port, context, sessions)
            assert not await _exchange(one.port, tls_context(pki.ca), None)
            # Another context (a reload's) is never offered a session from this one.
            assert not await _exchange(one.port, tls_context(pki.ca), sessions)
            assert await _exchange(one.port, context, sessions)

    run(main())


def test_a_session_is_resumed_for_max_age_then_the_certificate_is_checked_again(pki: CertFiles) -> None:
    """A session is offered for `max_age` seconds after the full handshake that verified the server's
    certificate, however often it is resumed meanwhile; then a full handshake verifies it again."""

    async def main() -> None:
        context = tls_context(pki.ca)
        sessions = UpstreamSessions(context, max_age=0.5)
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            assert not await _exchange(served.port, context, sessions)
            assert await _exchange(served.port, context, sessions)
            await asyncio.sleep(0.6)
            assert not await _exchange(served.port, context, sessions)
            assert await _exchange(served.port, context, sessions)

    run(main())


def test_a_session_the_server_no_longer_knows_is_dropped(pki: CertFiles) -> None:
    """A server restarted (new ticket keys) refuses the kept session: that connection makes a full
    handshake, its session replaces the refused one, and the next connection resumes again."""

    async def main() -> None:
        context = tls_context(pki.ca)
        sessions = UpstreamSessions(context)
        async with serving(pki, lambda: Recorder(echo=True)) as before:
            port = before.port
            assert not await _exchange(port, context, sessions)
            assert await _exchange(port, context, sessions)
        async with serving(pki, lambda: Recorder(echo=True), port=port):
            assert not await _exchange(port, context, sessions)
            assert await _exchange(port, context, sessions)
            assert await _exchange(port, context, sessions)

    run(main())


def test_a_connection_that_fails_after_offering_a_session_drops_it(pki: CertFiles) -> None:
    """A server that breaks the handshake when offered a session (here: one that closes every
    connection at once) costs one failed connect: the session is not offered again."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = tls_context(pki.ca)
        sessions = UpstreamSessions(context)
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            port = served.port
            assert not await _exchange(port, context, sessions)
        assert sessions.offer(("127.0.0.1", port), loop.time()) is not None
        slammer = socket.socket()
        slammer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        slammer.bind(("127.0.0.1", port))
        slammer.listen(4)
        slammer.setblocking(False)

        def slam() -> None:
            with contextlib.suppress(BlockingIOError):
                slammer.accept()[0].close()

        loop.add_reader(slammer.fileno(), slam)
        try:
            with pytest.raises((ssl.SSLError, OSError)):
                await open_tls_connection(Recorder, "127.0.0.1", port, context, NAME, 5.0, sessions)
        finally:
            loop.remove_reader(slammer.fileno())
            slammer.close()
        assert sessions.offer(("127.0.0.1", port), loop.time()) is None

    run(main())


def test_upstream_open_reports_a_refused_connect_later_never_from_the_constructor(pki: CertFiles) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = open_fds()
        with socket.socket() as closed_port:  # bound, not listening: connects are refused
            closed_port.bind(("127.0.0.1", 0))
            port = closed_port.getsockname()[1]
            outcome: asyncio.Future[tuple[object, BaseException | None]] = loop.create_future()
            UpstreamOpen(
                loop,
                Recorder,
                "127.0.0.1",
                port,
                tls_context(pki.ca),
                NAME,
                5.0,
                5.0,
                None,
                lambda transport, exc: outcome.set_result((transport, exc)),
            )
            assert not outcome.done()  # the caller is never called back from inside its own call
            transport, exc = await asyncio.wait_for(outcome, 5)
        assert transport is None
        assert isinstance(exc, ConnectionRefusedError)
        assert f"127.0.0.1:{port}" in str(exc)
        assert open_fds() == before  # the socket is closed

    run(main())


def test_upstream_open_bounds_the_connect_and_the_handshake_separately(pki: CertFiles) -> None:
    """A connect nobody answers fails after the connect bound with a bare TimeoutError; a server
    that accepts and says nothing fails after the handshake bound, saying so."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = tls_context(pki.ca)

        async def attempt(
            port: int, connect_s: float, handshake_s: float
        ) -> tuple[BaseException | None, float]:
            outcome: asyncio.Future[BaseException | None] = loop.create_future()
            started = loop.time()
            UpstreamOpen(
                loop,
                Recorder,
                "127.0.0.1",
                port,
                context,
                NAME,
                connect_s,
                handshake_s,
                None,
                lambda _transport, exc: outcome.set_result(exc),
            )
            exc = await asyncio.wait_for(outcome, 10)
            return exc, loop.time() - started

        before = open_fds()
        with unanswered_port("127.0.0.1") as port:
            exc, took = await attempt(port, 0.3, 5.0)
        assert isinstance(exc, TimeoutError)
        assert not str(exc)
        assert 0.25 < took < 3
        with socket.socket() as silent:  # accepts (the kernel does) and never answers the ClientHello
            silent.bind(("127.0.0.1", 0))
            silent.listen(4)
            exc, took = await attempt(silent.getsockname()[1], 5.0, 0.3)
        assert isinstance(exc, TimeoutError)
        assert str(exc) == "TLS handshake timed out"
        assert 0.25 < took < 3
        assert open_fds() == before

    run(main())


def test_upstream_open_cancelled_while_connecting_or_in_the_handshake_calls_nobody_back(
    pki: CertFiles,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = tls_context(pki.ca)
        called: list[object] = []
        before = open_fds()
        with unanswered_port("127.0.0.1") as port:
            opener = UpstreamOpen(
                loop, Recorder, "127.0.0.1", port, context, NAME, 0.2, 0.2, None, lambda *a: called.append(a)
            )
            await asyncio.sleep(0.05)
            opener.cancel()
            opener.cancel()  # twice: nothing more happens
            await asyncio.sleep(0.4)  # past both bounds: no timer is left to fire
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(4)
            opener = UpstreamOpen(
                loop,
                Recorder,
                "127.0.0.1",
                silent.getsockname()[1],
                context,
                NAME,
                0.2,
                0.2,
                None,
                lambda *a: called.append(a),
            )
            # Connected: the ClientHello is out, the handshake waits for an answer.
            await until(lambda: opener._handshake is not None, [])
            opener.cancel()
            await asyncio.sleep(0.4)
        assert called == []
        assert open_fds() == before

    run(main())


def test_upstream_open_hands_over_a_started_transport(pki: CertFiles) -> None:
    """The whole way (connect, handshake on the connect's registration, transport): data flows at
    once, and a second connection resumes the first one's session."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = tls_context(pki.ca)
        sessions = UpstreamSessions(context)
        async with serving(pki, lambda: Recorder(echo=True)) as served:
            for resumed in (False, True):
                outcome: asyncio.Future[TlsTransport | None] = loop.create_future()
                UpstreamOpen(
                    loop,
                    lambda: Recorder(),
                    "127.0.0.1",
                    served.port,
                    context,
                    NAME,
                    5.0,
                    5.0,
                    sessions,
                    lambda transport, _exc, outcome=outcome: outcome.set_result(transport),
                )
                transport = await asyncio.wait_for(outcome, 5)
                assert transport is not None
                protocol = transport.get_protocol()
                assert isinstance(protocol, Recorder)
                assert protocol.events == ["made"]
                assert transport.get_extra_info("ssl_object").session_reused is resumed
                assert transport.get_extra_info("peername") == ("127.0.0.1", served.port)
                transport.write(b"ping")
                await asyncio.wait_for(protocol.got.wait(), 5)
                assert bytes(protocol.data) == b"pong"
                transport.close()
                assert await asyncio.wait_for(protocol.lost, 5) is None

    run(main())
