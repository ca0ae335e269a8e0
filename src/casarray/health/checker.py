"""The health checker: one loop per (server, service) probing GET /<vdir>/healthcheck.htm directly on
each server (never the VIP: that would hit a random server; never "/": it answers 302, KB 3002351).

Results feed each member's HealthState; every transition is logged once and reported to listeners.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from casarray.health.layers import Failed, open_layers
from casarray.health.state import CheckResult, HealthState, Transition
from casarray.health.verdict import judge
from casarray.http.decode import ResponseStart
from casarray.http.errors import ProtocolError

log = logging.getLogger("casarray.health")

Probe = Callable[[], Awaitable[CheckResult]]  # one check of one member (HTTPS, IMAP, POP3, SMTP, ...)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class Checked(Protocol):
    """What the checker reads of a member (balance/state.py's Member). Described here rather than
    imported, so health/ does not depend on balance/ (which depends on health/state.py)."""

    @property
    def server(self) -> _Named: ...

    @property
    def service(self) -> str: ...

    @property
    def health(self) -> HealthState: ...


M = TypeVar("M", bound=Checked)


@dataclass(frozen=True, slots=True)
class HttpsProbe:
    """Where and how to probe: the server's own address, with SNI/Host set to the namespace so the
    certificate (shared by all servers behind the VIP) verifies."""

    address: str
    port: int
    path: str
    server_name: str
    ssl_context: ssl.SSLContext
    timeout: float


class ResponseProtocol(asyncio.Protocol):
    """Collects the start of one response (the proxy's framer underneath) and settles `finished`; the
    HTTPS check and doctor's requests through the VIP both read with it."""

    def __init__(self) -> None:
        self.response = ResponseStart()
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failed handshake also ends here; the caller reports it from start_tls, not from this future.
        self.finished.add_done_callback(lambda f: f.cancelled() or f.exception())

    def data_received(self, data: bytes) -> None:
        try:
            done = self.response.feed(data)
        except ProtocolError as exc:
            self._finish(ProtocolError(f"malformed HTTP response: {exc.what}", 502))
            return
        if done:
            self._finish(None)

    def eof_received(self) -> bool:
        try:
            self.response.eof()
        except ProtocolError as exc:
            self._finish(exc)
        else:
            self._finish(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ProtocolError("connection closed before a response", 502))

    def _finish(self, exc: BaseException | None) -> None:
        if not self.finished.done():
            if exc is None:
                self.finished.set_result(None)
            else:
                self.finished.set_exception(exc)


def get_request(path: str, host: str, agent: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


async def probe_https(probe: HttpsProbe) -> CheckResult:
    """One check. Connect (L4), TLS handshake (L6), request and verdict (L7), all within probe.timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + probe.timeout
    transport: asyncio.Transport | None = None

    def result(ok: bool, code: str, reason: str) -> CheckResult:
        return CheckResult(ok, code, reason, loop.time() - start)

    try:
        opened = await open_layers(
            ResponseProtocol, probe.address, probe.port, deadline, (probe.ssl_context, probe.server_name)
        )
        if isinstance(opened, Failed):
            return result(False, opened.code, opened.reason)
        transport, protocol = opened
        transport.write(get_request(probe.path, probe.server_name, "casarray-check"))
        try:
            async with asyncio.timeout_at(deadline):
                await protocol.finished
        except TimeoutError:
            return result(False, "L7TOUT", "no complete response before the check timeout")
        except (ProtocolError, OSError, ssl.SSLError) as exc:
            return result(False, "L7RSP", str(exc))
        response = protocol.response
        assert response.head is not None
        # A body cut short by the server is judged on what arrived, as before.
        ok, code, reason = judge(response.head.status, response.body)
        return result(ok, code, reason)
    finally:
        if transport is not None:
            transport.abort()


class HealthChecker(Generic[M]):
    """Runs one probing loop per member until stopped. `on_transition` is called for every change."""

    def __init__(
        self,
        members: list[tuple[M, Probe]],
        interval: float,
        jitter: float,
        on_transition: Callable[[M, Transition], None],
    ) -> None:
        self._members = members
        self._interval = interval
        self._jitter = jitter
        self._on_transition = on_transition
        self._tasks: list[asyncio.Task[None]] = []

    async def first_round(self, members: list[tuple[M, Probe]] | None = None) -> None:
        """Check every member (or those given) once, concurrently, so traffic starts on real states."""
        todo = self._members if members is None else members
        results = await asyncio.gather(*(probe() for _, probe in todo))
        for (member, _), res in zip(todo, results, strict=True):
            self._record(member, res)

    @property
    def running(self) -> bool:
        """True once the first round is over and the periodic checks run."""
        return bool(self._tasks)

    def start(self) -> None:
        for member, probe in self._members:
            self._tasks.append(
                asyncio.create_task(
                    self._loop(member, probe), name=f"check {member.server.name}/{member.service}"
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, member: M, probe: Probe) -> None:
        while True:
            spread = self._interval * self._jitter
            await asyncio.sleep(self._interval + random.uniform(-spread, spread))
            self._record(member, await probe())

    def _record(self, member: M, res: CheckResult) -> None:
        transition = member.health.record(res, asyncio.get_running_loop().time())
        if transition is not None:
            log.info(
                "health %s/%s %s -> %s %s %r (check %.0fms)",
                member.server.name,
                member.service,
                transition.old,
                transition.new,
                res.code,
                res.reason,
                res.duration * 1000,
            )
            self._on_transition(member, transition)
