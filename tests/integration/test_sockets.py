"""TCP on the socket (engine/sockets.py) over loopback: the connect (refused, unanswered, cancelled)
and TcpTransport's asyncio contract as Layer 4 uses it (data both ways, half-close after the buffer,
flow control, close that flushes, a bounded flush, exactly one connection_lost, no descriptor left)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvloop

from casarray.engine import sockets
from casarray.engine.sockets import Connect, TcpServer
from tests.support import Recorder, open_fds, unanswered_port, until


def run(coro: object) -> None:
    uvloop.run(coro)  # type: ignore[arg-type]


@asynccontextmanager
async def served(keep_open_on_eof: bool = True) -> AsyncIterator[tuple[int, list[Recorder]]]:
    """A TcpServer on loopback; the recorders of its accepted connections, in order."""
    recorders: list[Recorder] = []

    def factory() -> Recorder:
        recorders.append(Recorder(keep_open_on_eof=keep_open_on_eof))
        return recorders[-1]

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = TcpServer(factory, listener, logging.getLogger("test"))
    await server.start_serving()
    try:
        yield listener.getsockname()[1], recorders
    finally:
        server.close()


async def connect(port: int, bound: float = 5.0) -> socket.socket:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[socket.socket | None, BaseException | None]] = loop.create_future()

    def done(sock: socket.socket | None, exc: BaseException | None) -> None:
        if sock is not None:
            loop.remove_writer(sock.fileno())  # the caller takes the registration over
        outcome.set_result((sock, exc))

    Connect(loop, "127.0.0.1", port, bound, done)
    assert not outcome.done()  # never called back from the constructor
    sock, exc = await asyncio.wait_for(outcome, bound + 5)
    if sock is None:
        assert exc is not None
        raise exc
    return sock


def test_connect_sets_nodelay_and_reports_refusals_and_timeouts_later() -> None:
    async def main() -> None:
        before = open_fds()
        async with served() as (port, recorders):
            sock = await connect(port)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
            await until(lambda: bool(recorders) and "eof" in recorders[0].events, recorders)
            transport = recorders[0].transport
            assert transport is not None
            assert transport.get_extra_info("peername")[0] == "127.0.0.1"
            assert transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.close()
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))
            refused = closed_port.getsockname()[1]
            with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{refused}"):
                await connect(refused)
        with unanswered_port("127.0.0.1") as silent:
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await connect(silent, bound=0.3)
            assert 0.25 < asyncio.get_running_loop().time() - started < 3
        assert open_fds() == before  # every close above is done by now (none waits for the loop)

    run(main())


def test_a_cancelled_connect_calls_nobody_back_and_closes_its_socket() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        called: list[object] = []
        before = open_fds()
        with unanswered_port("127.0.0.1") as silent:
            attempt = Connect(loop, "127.0.0.1", silent, 0.2, lambda *a: called.append(a))
            await asyncio.sleep(0.05)
            attempt.cancel()
            attempt.cancel()
            await asyncio.sleep(0.4)  # past the bound: its timer is gone too
        assert called == []
        assert open_fds() == before

    run(main())


def test_data_both_ways_half_close_after_the_buffer_and_one_connection_lost() -> None:
    """What Layer 4 relies on: a write the socket cannot take at once is buffered (pause_writing past
    the high-water mark, resume_writing below the low one), write_eof's FIN follows the last buffered
    byte, reading goes on after it, and close() ends with exactly one connection_lost."""

    async def main() -> None:
        async with served() as (port, recorders):
            client = await connect(port)
            client.setblocking(True)
            await until(lambda: len(recorders) > 0, recorders)
            server = recorders[0]
            transport = server.transport
            assert transport is not None
            transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            payload = os.urandom(8 * 1024 * 1024)  # more than the socket buffers hold
            transport.write(payload)
            assert transport.get_write_buffer_size() > 0
            assert server.events[-1] == "pause_writing"
            transport.write_eof()
            with pytest.raises(RuntimeError):
                transport.write(b"more")
            received = bytearray()
            loop = asyncio.get_running_loop()
            while chunk := await loop.run_in_executor(None, client.recv, 1 << 20):
                received += chunk
            assert bytes(received) == payload  # then the FIN, after the last byte
            assert "resume_writing" in server.events
            client.sendall(b"still reading after our FIN")
            await until(lambda: server.data == b"still reading after our FIN", [server])
            client.close()
            await until(lambda: "eof" in server.events, [server])
            transport.close()
            assert await asyncio.wait_for(server.lost, 5) is None
            transport.close()
            transport.abort()
            await asyncio.sleep(0.05)
            assert server.events.count("lost") == 1

    run(main())


def test_close_flushes_the_buffer_and_gives_up_on_a_peer_that_reads_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sockets, "CLOSE_FLUSH_S", 0.3)

    async def main() -> None:
        async with served() as (port, recorders):
            reader = await connect(port)  # reads everything, after close() was called
            stuck = await connect(port)  # reads nothing
            await until(lambda: len(recorders) > 1, recorders)
            payload = os.urandom(4 * 1024 * 1024)
            for recorder in recorders:
                assert recorder.transport is not None
                recorder.transport.write(payload)
                recorder.transport.close()
                assert recorder.transport.is_closing()
            reader.setblocking(True)
            received = bytearray()
            loop = asyncio.get_running_loop()
            while chunk := await loop.run_in_executor(None, reader.recv, 1 << 20):
                received += chunk
            assert bytes(received) == payload
            assert await asyncio.wait_for(recorders[0].lost, 5) is None
            exc = await asyncio.wait_for(recorders[1].lost, 5)
            assert isinstance(exc, TimeoutError)
            reader.close()
            stuck.close()

    run(main())


def test_paused_reading_holds_data_until_resumed_and_abort_drops_the_buffer() -> None:
    async def main() -> None:
        async with served() as (port, recorders):
            client = await connect(port)
            await until(lambda: len(recorders) > 0, recorders)
            server = recorders[0]
            transport = server.transport
            assert transport is not None
            transport.pause_reading()
            assert not transport.is_reading()
            client.send(b"held")
            await asyncio.sleep(0.1)
            assert server.data == b""
            transport.resume_reading()
            await until(lambda: server.data == b"held", [server])
            transport.write(os.urandom(8 * 1024 * 1024))
            transport.abort()
            assert await asyncio.wait_for(server.lost, 5) is None
            assert transport.get_write_buffer_size() == 0
            client.close()

    run(main())
