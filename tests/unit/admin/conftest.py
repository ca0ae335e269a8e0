"""A fake Control (plain data, no data plane) and an admin server on it, on real loopback sockets."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from casarray.admin.auth import Policy
from casarray.admin.server import AdminServer
from casarray.engine.control import Adoption, Event, MemberView, OperatorState, ServerView, Setting, Snapshot
from casarray.errors import CasarrayError
from tests.support import LoopThread

SERVICES = ("owa", "ews")
TOKEN = "s3cret-token"


class FakeControl:
    """Implements casarray.engine.control.Control over a dict of servers the test edits."""

    def __init__(self) -> None:
        self.operator: dict[str, str] = {"MB1": "ready", "MB2": "ready"}
        self.member_operator: dict[tuple[str, str], str] = {}
        self.health: dict[tuple[str, str], str] = {}
        self.active = {"MB1": 2, "MB2": 0}
        self.total = {"MB1": 10, "MB2": 4}
        self.requests: dict[str, dict[str, int]] = {"ews": {"2xx": 7, "5xx": 1}}
        self.log: list[Event] = []
        self.reload_error: CasarrayError | None = None
        self.reloads = 0
        self.calls: list[tuple[str, str | None, OperatorState]] = []
        self.notes: list[tuple[str, str]] = []  # (reason, by) of each call
        self.why: dict[str, tuple[str, str, float]] = {}  # server -> (reason, by, since)
        self.settings: list[Setting] = []  # what operator_settings gives
        self.adopted: list[tuple[Setting, str]] = []  # (setting, source) of each adopt_operators

    def snapshot(self) -> Snapshot:
        servers = []
        for i, name in enumerate(self.operator):
            members = {}
            for service in SERVICES:
                health = self.health.get((name, service), "up")
                operator = self.member_operator.get((name, service), "ready")
                members[service] = MemberView(
                    name,
                    service,
                    health,
                    "L7OK" if health == "up" else "L7STS",
                    "HTTP 200" if health == "up" else "HTTP 503",
                    12.5,
                    1700000000.0,
                    operator,
                    health == "up" and operator == "ready" and self.operator[name] == "ready",
                    3,
                )
            servers.append(
                ServerView(
                    name,
                    f"127.0.0.{i + 2}",
                    443,
                    self.operator[name],
                    self.active[name],
                    5,
                    self.total[name],
                    1000 * (i + 1),
                    5000 * (i + 1),
                    i,
                    members,
                    *self.why.get(name, ("", "", 0.0)),
                )
            )
        return Snapshot(
            "l7",
            "outlook.alwayshotcafe.com",
            SERVICES,
            tuple(servers),
            clients=2,
            clients_total=14,
            refused=1,
            requests={k: dict(v) for k, v in self.requests.items()},
            queue=0,
            tls_handshake_failures=3,
            reloads=self.reloads,
            upstream_releases=4,
            started=1700000000.0,
            https_listener="10.0.1.250:443",
            pools={name: (name,) for name in SERVICES},
        )

    def events(self, since: float = 0.0) -> Sequence[Event]:
        return [e for e in self.log if e.time > since]

    def set_operator(
        self, server: str, service: str | None, state: OperatorState, *, reason: str = "", by: str = ""
    ) -> None:
        name = next((n for n in self.operator if n.lower() == server.lower()), None)
        if name is None:
            raise KeyError(f"no server {server!r} (servers: {', '.join(self.operator)})")
        if service is not None and service.lower() not in SERVICES:
            raise KeyError(f"no service {service!r} (services: {', '.join(SERVICES)})")
        self.calls.append((name, service, state))
        self.notes.append((reason, by))
        if service is None:
            old = self.operator[name]
            self.operator[name] = state.value
            self.why[name] = (reason, by, 1700000000.0)
        else:
            old = self.member_operator.get((name, service.lower()), "ready")
            self.member_operator[(name, service.lower())] = state.value
        self.log.append(Event(time.time(), name, service or "", old, state.value, "operator", "test"))

    def operator_settings(self) -> Sequence[Setting]:
        return list(self.settings)

    def adopt_operators(self, settings: Sequence[Setting], source: str) -> list[Adoption]:
        self.adopted += [(s, source) for s in settings]
        return [Adoption(s, "taken", f"ready -> {s.state.value} {s.describe()}") for s in settings]

    async def reload(self) -> str:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloads += 1
        return "reloaded test.yaml: generation 2 serving"


@dataclasses.dataclass
class Running:
    control: FakeControl
    server: AdminServer

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def start_admin(loop_thread: LoopThread) -> Iterator[Callable[..., Running]]:
    """Start an admin server on 127.0.0.1:<free> with the given policy; closed after the test."""
    started: list[AdminServer] = []

    def start(
        *,
        loopback: bool = True,
        token: str | None = TOKEN,
        host: str = "127.0.0.1",
        interval: float = 0.1,
        max_streams: int = 16,
    ) -> Running:
        control = FakeControl()
        # The policy is what admin.listen would give; the socket stays on loopback either way, so the
        # "beyond loopback" rules are exercised without exposing a port.
        server = AdminServer(
            control,
            host,
            0,
            Policy(loopback=loopback, token=token),
            stream_interval=interval,
            max_streams=max_streams,
        )
        loop_thread.run(server.start())
        started.append(server)
        return Running(control, server)

    yield start
    for server in started:
        loop_thread.run(server.close())
