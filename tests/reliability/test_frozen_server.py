"""A server that accepts and never answers (a simulated Exchange server frozen with SIGSTOP): what waits
on it is retried or failed as soon as the checks mark it down, never left to `timeouts.server` (65 min);
new connections give up on its TLS handshake after `timeouts.upstream_handshake` and try the next server
(docs/reliability.md, HAProxy's `on-marked-down shutdown-sessions`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Lab
from tests.support import (
    NAMESPACE,
    Proc,
    casarray,
    free_port,
    https_request,
    read_response,
    tls_connection,
)

HOST = NAMESPACE.encode()
CHECKS = "{interval: 200ms, timeout: 1s, rise: 1, fall: 1}"


def l7_balancer(lab: Lab, extra: str = "", health: str = CHECKS, workers: int = 1) -> tuple[Proc, int]:
    port = free_port()
    path = lab.config(
        f"namespace: {NAMESPACE}\nmode: l7\nlisten: {{address: 127.0.0.1, https_port: {port}}}\n"
        f"tls: {{certificate: {lab.pki.certificate}, key: {lab.pki.key}}}\n"
        f"upstream_tls: {{ca: {lab.pki.ca}}}\nservers:\n{lab.servers_yaml()}\n"
        f"health: {health}\nworkers: {workers}\nlog: {{access: true}}\n" + extra,
        f"l7-{port}.yaml",
    )
    proc = Proc(casarray("run", "-c", str(path)), lab.dir / f"l7-{port}.log")
    lab.procs.append(proc)
    proc.wait_log("listening on")
    return proc, port


@contextlib.contextmanager
def frozen(lab: Lab, name: str) -> Iterator[None]:
    proc = lab.sims[name][2]
    proc.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.signal(signal.SIGCONT)


def ask(tls: ssl.SSLSocket, request: bytes, timeout: float) -> tuple[int, dict[str, str], float]:
    start = time.monotonic()
    tls.sendall(request)
    tls.settimeout(timeout)
    status, headers, _ = read_response(tls)
    return status, headers, time.monotonic() - start


def sim_requests(lab: Lab, name: str) -> list[dict[str, object]]:
    address, port, _ = lab.sims[name]
    resp = https_request(address, port, "/_sim/requests?kind=vdir", lab.pki.ca, host=address)
    return list(json.loads(resp.body)["requests"])


GET = b"GET /owa/ HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n"


def test_a_waiting_get_is_retried_on_another_server_when_its_server_is_marked_down(lab: Lab) -> None:
    lab.sims3()
    proc, port = l7_balancer(lab, "timeouts: {server: 60s}\n")
    with tls_connection("127.0.0.1", port, lab.pki.ca) as tls:
        status, headers, _ = ask(tls, GET, 5)
        assert status == 200
        pinned = headers["x-feserver"]
        with frozen(lab, pinned):
            # Sent on the pinned connection before the checks notice: the frozen server holds it.
            status, headers, took = ask(tls, GET, 10)
    assert status == 200
    assert headers["x-feserver"] != pinned
    assert took < 5.0  # one failed check (1 s) and a retry; the old wait was timeouts.server
    proc.wait_log(f"retrying GET /owa/ on another server: {pinned} was marked down")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_waiting_post_fails_at_once_when_its_server_is_marked_down(lab: Lab, workers: int) -> None:
    lab.sims3()
    # workers: 2 — the supervisor checks, and each worker learns the transition from it.
    proc, port = l7_balancer(lab, "timeouts: {server: 60s}\n", workers=workers)
    post = b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 7\r\n\r\n<soap/>"
    with tls_connection("127.0.0.1", port, lab.pki.ca) as tls:
        status, headers, _ = ask(tls, b"GET /EWS/Exchange.asmx HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n", 5)
        assert status == 200
        pinned = headers["x-feserver"]
        with frozen(lab, pinned):
            status, headers, took = ask(tls, post, 10)
    assert status == 503
    assert took < 5.0
    proc.wait_log(f"503 {pinned} was marked down before answering")
    proc.wait_log(" DH\n")  # the access log: killed because its server went down, before the response
    # A request with a body is never replayed: no other server saw the POST.
    others = [name for name in lab.sims if name != pinned]
    assert not [r for name in others for r in sim_requests(lab, name) if r["method"] == "POST"]


@pytest.mark.slow
def test_new_connections_give_up_on_a_frozen_handshake_quickly(lab: Lab) -> None:
    lab.sims3()
    # No checks: only the handshake bound stands between a client and the frozen server.
    proc, port = l7_balancer(lab, "timeouts: {upstream_handshake: 1s}\n", health="{enabled: false}")
    with frozen(lab, "MB1"):
        for _ in range(6):
            start = time.monotonic()
            resp = https_request("127.0.0.1", port, "/owa/", lab.pki.ca, timeout=15)
            assert resp.status == 200
            assert resp.server != "MB1"
            # timeouts.upstream_handshake (1 s), then the next server; before, connect x 2 (10 s)
            assert time.monotonic() - start < 4.5
    proc.wait_log("connect to MB1", count=2)


def l4_handshake(port: int, ca: object) -> tuple[str, float]:
    start = time.monotonic()
    try:
        with tls_connection("127.0.0.1", port, ca, timeout=10):  # type: ignore[arg-type]
            return "ok", time.monotonic() - start
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, TimeoutError | socket.timeout):
            return "timeout", time.monotonic() - start
        return "closed", time.monotonic() - start


def test_l4_connections_that_never_got_a_byte_are_closed_when_their_server_is_marked_down(
    lab: Lab,
) -> None:
    lab.sims3()
    proc, port = lab.balancer("log: {access: true}\n", health=CHECKS)
    with frozen(lab, "MB1"), concurrent.futures.ThreadPoolExecutor(3) as pool:
        # Round robin: one of the three goes to the frozen server, whose kernel still accepts.
        outcomes = list(pool.map(lambda _: l4_handshake(port, lab.pki.ca), range(3)))
    assert sorted(o for o, _ in outcomes) == ["closed", "ok", "ok"], outcomes
    assert max(t for _, t in outcomes) < 5.0, outcomes
    proc.wait_log("server MB1 was marked down before it answered")
    proc.wait_log(" DD\n")
