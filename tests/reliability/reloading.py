"""What the reload tests share: a balancer process in front of the in-process simulated servers of the
`l7` lab (in either mode), clients that never retry, and a load that counts every error."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.conftest import L7Lab
from tests.support import NAMESPACE, Proc, https_request, tls_context

LOAD_BOUND_S = 50.0  # every load thread stops by itself after this long, whatever the test does


def start_balancer(lab: L7Lab, mode: str, extra: str = "", ca: Path | None = None) -> tuple[Proc, int, Path]:
    """`casarray run` in `mode` (l4: TLS passes through to the sims; l7: terminated and re-encrypted)."""
    proc, port = lab.balancer(extra, mode=mode, ca=ca)
    return proc, port, Path(proc.args[-1])


class Connection(http.client.HTTPSConnection):
    """http.client's keep-alive connection to 127.0.0.1 with SNI and Host = the namespace; it opens a
    new connection after a `Connection: close`, and never retries a request."""

    def __init__(self, port: int, ca: Path, timeout: float = 10.0) -> None:
        super().__init__(NAMESPACE, port, context=tls_context(ca), timeout=timeout)

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=NAMESPACE)  # type: ignore[attr-defined]


@dataclass
class Load:
    """Client threads sending GETs whose answers are checked: the sim echoes the path it received."""

    port: int
    ca: Path
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, keepalive: int = 0, fresh: int = 0, per_connection: int = 0) -> None:
        """`keepalive` clients reuse one connection (`per_connection` requests each, 0: for ever);
        `fresh` clients open a new connection per request."""
        for i in range(keepalive):
            self._spawn(self._keepalive, f"k{i}", per_connection)
        for i in range(fresh):
            self._spawn(self._fresh, f"f{i}", 0)

    def _spawn(self, target: object, name: str, per_connection: int) -> None:
        thread = threading.Thread(target=target, args=(name, per_connection), daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _record(self, path: str, status: int, body: bytes) -> None:
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200 and f"path={path}\n".encode() in body:
                self.ok += 1
            else:
                self.wrong.append(f"{path}: {status} {body[:120]!r}")

    def _error(self, path: str, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(f"{path}: {exc!r}")

    def _keepalive(self, name: str, per_connection: int) -> None:
        deadline = time.monotonic() + LOAD_BOUND_S
        conn: Connection | None = None
        used = n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            path = f"/ews/exchange.asmx?client={name}&n={n}"
            if conn is None:
                conn, used = Connection(self.port, self.ca), 0
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._error(path, exc)
                conn.close()
                conn = None
                continue
            self._record(path, resp.status, body)
            used += 1
            if per_connection and used >= per_connection:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self, name: str, _: int) -> None:
        deadline = time.monotonic() + LOAD_BOUND_S
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            path = f"/ews/exchange.asmx?client={name}&n={n}"
            try:
                resp = https_request("127.0.0.1", self.port, path, self.ca, timeout=10)
            except (OSError, http.client.HTTPException) as exc:
                self._error(path, exc)
                continue
            self._record(path, resp.status, resp.body)


def open_tls(port: int, ca: Path, timeout: float = 30.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return tls_context(ca).wrap_socket(raw, server_hostname=NAMESPACE)


def children(pid: int) -> set[int]:
    """The child processes of `pid`, from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue  # a thread that just ended
    return found
