"""Memory per idle connection: many TLS keep-alive clients that made one request and stay open.

wrk cannot do this (it keeps every connection busy), so a small asyncio client does: it opens TLS
connections to the balancer (each completes a handshake and one GET, then goes quiet), waits for the
balancer's resident set to settle, reads it, and closes them all at the end.

It opens them in two halves and reads the memory after each: the figure is the second half's cost,
(RSS after − RSS at half time) / connections of the second half, from /proc/<pid>/status VmRSS — what
one more idle connection costs a process that has already held as many, once what the first half
allocated only for a while (handshakes, and upstream connections a balancer released) is there to be
reused, as it is in a balancer that runs for days. The first half's own figure, (RSS at half time −
RSS before) / its connections, is kept too.

When the balancer is expected to release idle upstream connections (`released`), each reading waits
until its descriptors show one per client connection (the upstream ones closed), so the figure is what
an idle client connection costs once its upstream connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .procs import LOOPBACK, BenchError

SOURCE_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 18))
CONCURRENCY = 100  # handshakes in flight at once
PER_CONNECTION_TIMEOUT_S = 10.0
# Descriptors a balancer needs besides its connections (listener, epoll, log, stdio, …): a margin.
FD_MARGIN = 100
# How long a balancer that releases idle upstream connections gets to do it once the last client
# connection is open (casarray: timeouts.upstream_release, 5 s by default, plus one sweep tick).
RELEASE_WAIT_S = 60.0


@dataclass(slots=True)
class IdleResult:
    """One idle-connection measurement against one balancer. Memory in KiB (1 KiB = 1 024 bytes)."""

    target: str
    case: str  # the IdleCase key: "pinned" or "released"
    requested: int
    opened: int  # both halves
    failed: int
    still_open: int
    open_seconds: float  # both halves
    rss_before_kib: int
    rss_after_kib: int
    fds_before: int
    fds_after: int
    opened_first: int = 0  # the first half
    rss_half_kib: int = 0  # after the first half (and, when released, its releases)
    fds_half: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    release_seconds: float | None = None  # released: the longer wait for one descriptor per client

    @property
    def kib_per_connection(self) -> float | None:
        """The second half's cost per connection (see the module)."""
        second = self.opened - self.opened_first
        if second <= 0 or self.opened_first == 0:
            return None
        return (self.rss_after_kib - self.rss_half_kib) / second

    @property
    def kib_first_half(self) -> float | None:
        if self.opened_first == 0:
            return None
        return (self.rss_half_kib - self.rss_before_kib) / self.opened_first

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kib_per_connection"] = self.kib_per_connection
        data["kib_first_half"] = self.kib_first_half
        return data


def fd_budget(requested: int, descriptors_per_connection: int) -> tuple[int, str | None]:
    """How many idle connections fit the open-files limit a child inherits; the reason when capped.

    The hard limit is what a child can reach: inside a user namespace even root cannot raise it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if hard == resource.RLIM_INFINITY else max(soft, hard)
    fits = (limit - FD_MARGIN) // descriptors_per_connection
    if fits >= requested:
        return requested, None
    return fits, (
        f"{requested:,} requested but the open-files limit here is {limit:,} and cannot be raised; "
        f"each idle client connection holds {descriptors_per_connection} descriptors in the balancer "
        f"(the client's and, until it is released, its upstream connection), so {fits:,} were opened"
    )


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read the memory of pid {pid} (did it exit?): {exc}") from exc
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _client_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Failure(Exception):
    pass


async def _one(
    port: int,
    source: str,
    context: ssl.SSLContext,
    server_name: str,
    request: bytes,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, handshake, send one GET, read its whole response (Content-Length), keep the connection."""
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=context, server_hostname=server_name, local_addr=(source, 0)
    )
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        if not status_line.startswith(b"HTTP/1.1 200"):
            raise _Failure(f"status {status_line.decode(errors='replace')!r}")
        length = None
        lowered = rest.lower()
        for line in lowered.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
            elif line.startswith(b"connection:") and b"close" in line:
                raise _Failure("the balancer answered Connection: close")
        if length is None:
            raise _Failure("no Content-Length")
        await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _hold(
    pid: int,
    port: int,
    count: int,
    ca: Path,
    server_name: str,
    request: bytes,
    deadline_s: float,
    result: IdleResult,
    released: bool,
) -> None:
    context = _client_context(ca)
    gate = asyncio.Semaphore(CONCURRENCY)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def worker(i: int) -> None:
        async with gate:
            try:
                async with asyncio.timeout(PER_CONNECTION_TIMEOUT_S):
                    held.append(
                        await _one(
                            port, SOURCE_ADDRESSES[i % len(SOURCE_ADDRESSES)], context, server_name, request
                        )
                    )
            except (
                OSError,
                ssl.SSLError,
                asyncio.IncompleteReadError,
                _Failure,
                TimeoutError,
                ValueError,
            ) as exc:
                result.failed += 1
                key = f"{type(exc).__name__}: {exc}"[:160]
                result.errors[key] = result.errors.get(key, 0) + 1

    async def open_half(indices: range) -> None:
        tasks = [asyncio.create_task(worker(i)) for i in indices]
        _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            stopped = f"opening stopped after {deadline_s:.0f}s with {len(pending):,} connections not done"
            result.note = f"{result.note}; {stopped}" if result.note else stopped

    async def settle() -> tuple[int, int]:
        """Wait for the releases (if any), then for the RSS to settle; (RSS, descriptors)."""
        if released:
            await _wait_released(pid, result, len(held))
        # Let the balancer finish what the last connections started, then wait for its RSS to settle.
        previous = -1
        for _ in range(20):
            await asyncio.sleep(0.5)
            current = rss_kib(pid)
            if previous >= 0 and abs(current - previous) <= max(64, current // 500):
                break
            previous = current
        return rss_kib(pid), fd_count(pid)

    half = count // 2
    try:
        started = time.monotonic()
        await open_half(range(half))
        result.open_seconds = time.monotonic() - started
        result.opened_first = len(held)
        result.rss_half_kib, result.fds_half = await settle()
        started = time.monotonic()
        await open_half(range(half, count))
        result.open_seconds += time.monotonic() - started
        result.opened = len(held)
        result.rss_after_kib, result.fds_after = await settle()
        result.still_open = sum(
            1 for reader, writer in held if not reader.at_eof() and not writer.is_closing()
        )
    finally:
        for _, writer in held:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(w.wait_closed() for _, w in held), return_exceptions=True)


async def _wait_released(pid: int, result: IdleResult, clients: int) -> None:
    """Until the balancer holds one descriptor per client connection: every upstream connection closed
    (timeouts.upstream_release, then one sweep tick). A note says so when that does not happen."""
    opened = time.monotonic()
    wanted = result.fds_before + clients + max(10, clients // 100)
    while time.monotonic() - opened < RELEASE_WAIT_S:
        if fd_count(pid) <= wanted:
            waited = time.monotonic() - opened
            result.release_seconds = max(result.release_seconds or 0.0, waited)
            return
        await asyncio.sleep(0.5)
    missing = (
        f"the upstream connections were not released within {RELEASE_WAIT_S:.0f}s "
        f"({fd_count(pid):,} descriptors, {wanted:,} expected at most)"
    )
    result.note = f"{result.note}; {missing}" if result.note else missing
    result.release_seconds = None


def measure_idle(
    name: str,
    pid: int,
    port: int,
    *,
    case: str,
    count: int,
    requested: int,
    ca: Path,
    server_name: str,
    request: bytes,
    deadline_s: float = 180.0,
    capped: str | None = None,
    released: bool = False,
) -> IdleResult:
    """Open `count` idle TLS connections to the balancer `pid` listening on `port`; see the module.
    `released`: read the memory once the balancer has closed their upstream connections."""
    result = IdleResult(
        target=name,
        case=case,
        requested=requested,
        opened=0,
        failed=0,
        still_open=0,
        open_seconds=0.0,
        rss_before_kib=rss_kib(pid),
        rss_after_kib=0,
        fds_before=fd_count(pid),
        fds_after=0,
        note=capped,
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_hold(pid, port, count, ca, server_name, request, deadline_s, result, released))
    _wait_closed(pid, result.fds_before)
    return result


def _wait_closed(pid: int, fds_before: int, timeout_s: float = 30.0) -> None:
    """Wait until the balancer has let go of the connections, so the next measurement starts clean."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fd_count(pid) <= fds_before + 10:
            return
        time.sleep(0.2)
