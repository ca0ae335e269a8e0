"""Layer 4 through real processes: simulated Exchange servers (HTTPS) behind `casarray run`."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import struct
import threading
import time
from collections import Counter

import pytest

from tests.integration.conftest import Lab
from tests.support import (
    Proc,
    casarray,
    free_port,
    https_request,
    rss_kib,
    tls_connection,
    unanswered_port,
    wait_until,
)

HEALTH = "/owa/healthcheck.htm"


def spread(lab: Lab, port: int, n: int, path: str = HEALTH, **kw: object) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        resp = https_request("127.0.0.1", port, path, lab.pki.ca, **kw)  # type: ignore[arg-type]
        assert resp.status == 200
        counts[resp.server] += 1
    return counts


def test_traffic_spreads_across_all_servers(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    counts = spread(lab, port, 30)
    assert counts == {"MB1": 10, "MB2": 10, "MB3": 10}  # roundrobin, one request per connection
    resp = https_request("127.0.0.1", port, HEALTH, lab.pki.ca)
    assert resp.body.startswith(b"200 OK<br/>MB")  # TLS went through untouched to the server
    assert "health MB1/ews init -> up L7OK" in proc.log


def test_killed_server_drops_out_without_failing_new_connections(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    spread(lab, port, 3)
    lab.sims["MB2"][2].kill()
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 2.0  # bounded: covers the window before the checks notice
    while time.monotonic() < deadline:
        counts.update(spread(lab, port, 1))  # each must succeed: refused connects are retried
    proc.wait_log("server MB2 leaves the l4 pool")
    assert "L4CON" in proc.log
    assert set(spread(lab, port, 6)) == {"MB1", "MB3"}
    assert counts["MB1"]
    assert counts["MB3"]


def test_a_service_set_down_takes_the_server_out_and_back(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    lab.control("MB1", "/_sim/service/ews/down")
    proc.wait_log("server MB1 leaves the l4 pool: ews down")
    assert "health MB1/ews up -> down L7STS 'HTTP 503'" in proc.log
    assert set(spread(lab, port, 8)) == {"MB2", "MB3"}
    lab.control("MB1", "/_sim/service/ews/up")
    proc.wait_log("server MB1 joins the l4 pool", count=2)  # once at start, once now
    assert "MB1" in spread(lab, port, 6)


def test_l4_require_limits_which_services_count(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer("l4_require: [owa]\n")
    lab.control("MB1", "/_sim/service/ews/down")
    proc.wait_log("health MB1/ews up -> down")
    assert "MB1" in spread(lab, port, 6)  # ews does not count for this array
    assert "leaves the l4 pool" not in proc.log


def test_source_affinity_keeps_each_client_on_one_server(lab: Lab) -> None:
    lab.sims3()
    _, port = lab.balancer("balance: source\n")
    seen: dict[str, set[str]] = {}
    for i in range(12):
        source = f"127.0.1.{i + 1}"
        seen[source] = set(spread(lab, port, 3, source=source))
    assert all(len(servers) == 1 for servers in seen.values())
    assert len(set().union(*seen.values())) >= 2


def test_mail_listener_with_balance_source_hashes_each_client_address(lab: Lab) -> None:
    # A mail listener's own `balance: source` must key by the client address even when the main listener
    # does not hash (it once got an empty key: every client of that listener went to one server).
    lab.sims3()
    mail_port = free_port()
    servers = "\n".join(
        f"  - {{name: {name}, address: {address}, port: {port}, mail_ports: {{{mail_port}: {port}}}}}"
        for name, (address, port, _) in lab.sims.items()
    )
    # Checks off: the mail pool's members count as up, and the relayed TLS reaches each sim's HTTPS.
    _, _ = lab.balancer(
        f"mail: {{imap: {{ports: [{mail_port}], balance: source}}}}\n", servers, health="{enabled: false}"
    )
    seen: dict[str, set[str]] = {}
    for i in range(12):
        source = f"127.0.1.{i + 1}"
        seen[source] = set(spread(lab, mail_port, 2, source=source))
    assert all(len(servers) == 1 for servers in seen.values())
    assert len(set().union(*seen.values())) >= 2


def test_refused_connect_is_retried_on_the_next_server(lab: Lab) -> None:
    lab.sim("MB1", "127.0.0.2")
    dead = free_port("127.0.0.3")
    address, sim_port, _ = lab.sims["MB1"]
    servers = (
        f"  - {{name: DEAD, address: 127.0.0.3, port: {dead}}}\n"
        f"  - {{name: MB1, address: {address}, port: {sim_port}}}"
    )
    # Checks off: the dead server counts as up, so only the connect retry can save each client.
    proc, port = lab.balancer(servers=servers, health="{enabled: false}")
    assert spread(lab, port, 6) == {"MB1": 6}
    assert "connect to DEAD (127.0.0.3:" in proc.log
    assert "Connection refused" in proc.log


def test_a_server_that_never_answers_the_connect_times_out_and_the_next_one_serves(lab: Lab) -> None:
    lab.sim("MB1", "127.0.0.2")
    address, sim_port, _ = lab.sims["MB1"]
    with unanswered_port("127.0.0.3") as silent:
        servers = (
            f"  - {{name: SILENT, address: 127.0.0.3, port: {silent}}}\n"
            f"  - {{name: MB1, address: {address}, port: {sim_port}}}"
        )
        proc, port = lab.balancer("timeouts: {connect: 500ms}\n", servers=servers, health="{enabled: false}")
        assert spread(lab, port, 4) == {"MB1": 4}
        assert "connect to SILENT (127.0.0.3:" in proc.log
        assert "failed: timeout" in proc.log


def test_a_client_gone_while_its_server_is_connected_frees_its_slot_at_once(lab: Lab) -> None:
    """maxconn 1, a server whose connects hang for 10 s, a queue bound of 300 ms: a client that goes
    (a reset; a FIN alone is a half-close, and the relay waits for the server's answer) while its
    connect is under way must give its slot back at once, so the next client takes it (and waits for
    its own connect) instead of being refused from the queue."""
    with unanswered_port("127.0.0.3") as silent:
        proc, port = lab.balancer(
            "limits: {maxconn: 1}\ntimeouts: {connect: 10s, queue: 300ms}\n",
            servers=f"  - {{name: SILENT, address: 127.0.0.3, port: {silent}}}",
            health="{enabled: false}",
        )
        first = socket.create_connection(("127.0.0.1", port), timeout=5)  # takes the slot
        time.sleep(0.2)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # goes: a reset
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
            second.settimeout(1.5)
            with pytest.raises(TimeoutError):  # held (connecting), not closed by the queue bound
                second.recv(1)
        assert "in the queue" not in proc.log


def test_no_server_up_closes_new_connections_at_once(lab: Lab) -> None:
    dead = free_port("127.0.0.2")
    proc, port = lab.balancer(servers=f"  - {{name: MB1, address: 127.0.0.2, port: {dead}}}")
    assert "health MB1/owa init -> down L4CON 'connect refused'" in proc.log
    start = time.monotonic()
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https_request("127.0.0.1", port, HEALTH, lab.pki.ca, timeout=5)
    assert time.monotonic() - start < 1.0
    proc.wait_log("no server is up")


def test_maxconn_queues_then_serves_in_order(lab: Lab) -> None:
    lab.sims3()
    _, port = lab.balancer("limits: {maxconn: 1}\ntimeouts: {queue: 10s}\n")
    with tls_connection("127.0.0.1", port, lab.pki.ca):  # holds the only slot
        done: list[int] = []
        waiter = threading.Thread(
            target=lambda: done.append(https_request("127.0.0.1", port, HEALTH, lab.pki.ca).status)
        )
        waiter.start()
        time.sleep(0.3)  # give the second client time to be (wrongly) served if the queue did not hold it
        assert done == []
    waiter.join(10)
    assert done == [200]


def test_queue_timeout_closes_the_waiting_client(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer("limits: {maxconn: 1}\ntimeouts: {queue: 300ms}\n")
    with tls_connection("127.0.0.1", port, lab.pki.ca):
        start = time.monotonic()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https_request("127.0.0.1", port, HEALTH, lab.pki.ca, timeout=5)
        assert 0.25 < time.monotonic() - start < 3.0
    proc.wait_log("waited 0s in the queue (timeouts.queue)")


def test_sigterm_lets_open_connections_finish(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer("timeouts: {grace: 10s}\n")
    with tls_connection("127.0.0.1", port, lab.pki.ca) as tls:
        proc.signal(signal.SIGTERM)
        proc.wait_log("stopped accepting; waiting up to 10s for 1 connection(s)")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        tls.sendall(
            b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
    assert proc.popen.wait(10) == 0
    assert "stopped" in proc.log


def test_half_close_and_backpressure_with_a_raw_tcp_server(lab: Lab) -> None:
    """A server that reads until EOF before answering: the client's shutdown(SHUT_WR) must reach it
    while the answer still flows back (RFC 9293 half-close)."""
    backend = socket.create_server(("127.0.0.2", 0))
    backend_port = backend.getsockname()[1]

    def serve() -> None:
        conn, _ = backend.accept()
        with conn:
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            conn.sendall(b"got %d bytes" % len(received))

    thread = threading.Thread(target=serve)
    thread.start()
    _, port = lab.balancer(
        servers=f"  - {{name: RAW, address: 127.0.0.2, port: {backend_port}}}", health="{enabled: false}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"x" * 1_000_000)
        client.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    thread.join(10)
    backend.close()
    assert reply == b"got 1000000 bytes"


def send_until_blocked(client: socket.socket, byte: bytes) -> int:
    """Send `byte` over and over until a send blocks for half a second (nobody reads: backpressure
    reached the client), 5 s or 512 MiB; how many bytes were sent."""
    client.settimeout(0.5)
    chunk = byte * 65536
    sent = 0
    deadline = time.monotonic() + 5
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline and sent < 512 * 1024 * 1024:
            sent += client.send(chunk)
    return sent


def test_memory_stays_bounded_when_the_server_does_not_read(lab: Lab) -> None:
    backend = socket.create_server(("127.0.0.2", 0))
    backend_port = backend.getsockname()[1]
    proc, port = lab.balancer(
        servers=f"  - {{name: SLOW, address: 127.0.0.2, port: {backend_port}}}", health="{enabled: false}"
    )
    before = rss_kib(proc.popen.pid)
    with socket.create_connection(("127.0.0.1", port)) as client:
        conn, _ = backend.accept()  # accepted but never read
        sent = send_until_blocked(client, b"y")
        grown = rss_kib(proc.popen.pid) - before
        conn.close()
    backend.close()
    assert sent < 64 * 1024 * 1024, sent  # only kernel buffers + the high-water mark were filled
    assert grown < 32 * 1024, grown


def test_a_queued_client_that_keeps_sending_is_paused_not_buffered(lab: Lab) -> None:
    """What a client sends before it has a server (here: waiting in the queue) is kept up to a small
    bound, then the balancer stops reading it: the kernel's buffers fill, the client's sends block,
    and the balancer's memory does not grow with what it sends. Once served, all of it arrives."""
    backend = socket.create_server(("127.0.0.2", 0))
    backend_port = backend.getsockname()[1]
    proc, port = lab.balancer(
        "limits: {maxconn: 1}\ntimeouts: {queue: 30s}\n",
        servers=f"  - {{name: RAW, address: 127.0.0.2, port: {backend_port}}}",
        health="{enabled: false}",
    )
    holder = socket.create_connection(("127.0.0.1", port))  # takes the only slot
    held, _ = backend.accept()
    before = rss_kib(proc.popen.pid)
    with socket.create_connection(("127.0.0.1", port)) as client:
        sent = send_until_blocked(client, b"q")
        grown = rss_kib(proc.popen.pid) - before
        assert sent < 64 * 1024 * 1024, sent
        assert grown < 16 * 1024, grown
        holder.close()  # the slot frees: the queued client is served, from its first byte
        held.close()
        conn, _ = backend.accept()
        client.settimeout(10)
        client.shutdown(socket.SHUT_WR)
        conn.settimeout(10)
        received = 0
        while data := conn.recv(1 << 20):
            assert set(data) == {ord("q")}
            received += len(data)
        conn.close()
    backend.close()
    assert received == sent


def test_client_idle_timeout_closes_silent_connections(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer("timeouts: {client_idle: 500ms}\n")
    with tls_connection("127.0.0.1", port, lab.pki.ca) as tls:
        start = time.monotonic()
        tls.settimeout(5)
        assert tls.recv(100) == b""  # closed by the balancer
        assert 0.4 < time.monotonic() - start < 2.0
    proc.wait_log("client idle for")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            "namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 127.0.0.2, wieght: 1}\n",
            "servers[0].wieght: unknown key 'wieght'",
        ),
        (
            "namespace: outlook.alwayshotcafe.com\nupstream_tls: {ca: /nonexistent/ca.pem}\n"
            "servers: [{name: MB1, address: 127.0.0.2}]\nlisten: {address: 127.0.0.1, https_port: PORT}\n",
            "upstream_tls.ca: cannot read the CA bundle '/nonexistent/ca.pem'",
        ),
        (
            "namespace: outlook.alwayshotcafe.com\nservers: [{name: MB1, address: no-such-host.invalid}]\n"
            "listen: {address: 127.0.0.1, https_port: PORT}\n",
            "servers[0].address: cannot resolve 'no-such-host.invalid' (MB1)",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(lab: Lab, setup: str, expected: str) -> None:
    cfg = lab.config(setup.replace("PORT", str(free_port())), "bad.yaml")
    proc = Proc(casarray("run", "-c", str(cfg)), lab.dir / "bad.log")
    lab.procs.append(proc)
    assert proc.popen.wait(20) == 1
    errors = [line for line in proc.log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.log
    assert expected in errors[0]
    assert "listening on" not in proc.log


def test_port_in_use_is_refused_and_nothing_is_left_running(lab: Lab) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        lab.sims3()
        proc, _ = lab.balancer(port=port, wait=False)
        assert proc.popen.wait(20) == 1
        errors = [line for line in proc.log.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: listen: cannot listen on 127.0.0.1:{port}: Address already in use "
            "(is another process using the port, or is the address not local?)"
        ]
    finally:
        busy.close()


def test_check_verb_exit_codes(lab: Lab) -> None:
    good = lab.config(
        "namespace: outlook.alwayshotcafe.com\nservers: [{name: MB1, address: 10.0.1.11}]\n", "g.yaml"
    )
    bad = lab.config(
        "namespace: outlook.alwayshotcafe.com\nservers: [{name: MB1, adress: 10.0.1.11}]\n", "b.yaml"
    )
    ok = Proc(casarray("check", "-c", str(good)), lab.dir / "check-good.log")
    lab.procs.append(ok)
    assert ok.popen.wait(20) == 0
    assert "valid (mode l4, 1 server," in ok.log
    ko = Proc(casarray("check", "-c", str(bad)), lab.dir / "check-bad.log")
    lab.procs.append(ko)
    assert ko.popen.wait(20) == 1
    assert "b.yaml:2: servers[0].adress: unknown key 'adress'" in ko.log
    usage = Proc(casarray("check"), lab.dir / "check-usage.log")
    lab.procs.append(usage)
    assert usage.popen.wait(20) == 2


def test_wait_until_helper_raises() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout=0.05, what="never")
