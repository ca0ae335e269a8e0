"""Shared test helpers: free ports, wait-until, processes with captured logs, TLS clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMESPACE = "outlook.alwayshotcafe.com"
DOMAIN = "alwayshotcafe.com"


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free on `host` for TCP (or, with kind=socket.SOCK_DGRAM, UDP)."""
    with socket.socket(type=kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def unanswered_port(host: str) -> Iterator[int]:
    """A port on `host` whose connects neither succeed nor fail, like a server behind a dead link: a
    listener whose accept queue is full, so the kernel drops every further SYN (listen overflow)."""
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(0)
        with socket.create_connection(listener.getsockname(), timeout=5):  # the queue holds one
            yield int(listener.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    """A child process whose stderr+stdout go to a file the test can search."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        self._log = log.open("wb")
        env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log (fails early if the process exits)."""

        def found() -> bool:
            log = self.log
            if self.popen.poll() is not None and log.count(text) < count:
                raise AssertionError(
                    f"{self.args[3:5]} exited ({self.popen.returncode}) before logging {text!r}:\n{log}"
                )
            return log.count(text) >= count

        wait_until(found, timeout, what=f"{text!r} x{count} in the log of {' '.join(self.args[2:5])}")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return int(self.popen.returncode)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def logged_at(log: str, text: str) -> float:
    """Epoch seconds of the log line holding `text` (lines start `2025-03-02 21:40:01,234 INFO …`)."""
    line = next(line for line in log.splitlines() if text in line)
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def casarray(*args: str) -> list[str]:
    return [sys.executable, "-m", "casarray", *args]


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def server(self) -> str:
        return self.headers.get("X-FEServer", "")


def tls_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


def https_request(
    address: str,
    port: int,
    path: str,
    ca: Path,
    *,
    method: str = "GET",
    host: str = NAMESPACE,
    source: str | None = None,
    timeout: float = 10.0,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request on a new connection to address:port, with SNI and Host = `host` (like curl --resolve)."""
    ctx = tls_context(ca)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    raw = socket.create_connection(
        (address, port), timeout=timeout, source_address=(source, 0) if source else None
    )
    conn.sock = ctx.wrap_socket(raw, server_hostname=host)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@contextlib.contextmanager
def tls_connection(
    address: str, port: int, ca: Path, host: str = NAMESPACE, timeout: float = 10.0
) -> Iterator[ssl.SSLSocket]:
    ctx = tls_context(ca)
    raw = socket.create_connection((address, port), timeout=timeout)
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            yield tls
    finally:
        raw.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class LoopThread:
    """An event loop in a background thread, so blocking test clients can talk to in-process servers."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: object, timeout: float = 30.0) -> object:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        import asyncio

        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (Content-Length or chunked) from a blocking socket; raw helper for
    tests that need the bytes exactly as they arrive."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest


def open_fds() -> int:
    """Descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


class Recorder(asyncio.Protocol):
    """An asyncio protocol for the transports' tests (engine/sockets.py, engine/tlsfd.py): keeps what
    happens to it; answers b"ping" lines with b"pong" lines when `echo` is set."""

    def __init__(self, echo: bool = False, keep_open_on_eof: bool = False) -> None:
        self.echo = echo
        self.keep_open_on_eof = keep_open_on_eof
        self.transport: Any = None  # a TcpTransport or a TlsTransport
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.got: asyncio.Event = asyncio.Event()
        self.changed: asyncio.Event = asyncio.Event()  # set on every callback

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()
        self.changed.set()
        if self.echo:
            assert self.transport is not None
            self.transport.write(data.replace(b"ping", b"pong"))

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.changed.set()
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def until(condition: Callable[[], bool], recorders: list[Recorder]) -> None:
    """Wait (5 s at most) for `condition`, re-checking whenever a recorder sees a callback."""
    async with asyncio.timeout(5):
        while not condition():
            if recorders:
                recorders[-1].changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recorders[-1].changed.wait(), 0.05)
            else:
                await asyncio.sleep(0.01)
