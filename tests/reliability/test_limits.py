"""Every limit refuses visibly (DESIGN.md §8): at `limits.maxconn` an l7 client gets a 503 it can act on,
an l4 client waits in the queue or is refused with a log line; a flood of refusals is logged as a
count, not line by line. Real TLS on loopback, a real `casarray run`."""

from __future__ import annotations

import re
import socket
import ssl
import time
from contextlib import ExitStack

from tests.integration.conftest import L7Lab, Lab
from tests.support import NAMESPACE, read_response, tls_connection, tls_context, wait_until

GET = f"GET /owa/ HTTP/1.1\r\nHost: {NAMESPACE}\r\n\r\n".encode()
MAXCONN_LINE = re.compile(r"refused 127\.0\.0\.1: limits\.maxconn \(2\) reached: 503")
SUMMARY = re.compile(r"refused (\d+) more connection\(s\) in the last 1s: (.*)")


def summaries(log: str, reason: str) -> list[int]:
    return [int(m.group(1)) for m in SUMMARY.finditer(log) if m.group(2).startswith(reason)]


def forwarded(lab: L7Lab) -> int:
    """Requests the servers saw, health checks aside."""
    return sum(len(s.state.select(kind="vdir")) for s in lab.sims.values())


def refused_503(port: int, lab: L7Lab, send: bytes) -> None:
    """One connection over the limit: a whole 503 answer, then a clean TLS close (no reset)."""
    with tls_connection("127.0.0.1", port, lab.pki.ca) as conn:
        if send:
            conn.sendall(send)
        status, headers, body = read_response(conn)
        assert status == 503, (status, headers, body)
        assert headers["retry-after"] == "10"
        assert headers["connection"] == "close"
        assert b"connection limit" in body
        assert conn.recv(1) == b""  # close_notify
        # ... and a FIN, not a reset: closing over unread input sends RST, which on Windows destroys
        # the answer in the client's buffers before it is read (RFC 9112 §9.6). Linux keeps what
        # arrived, so the reset shows only as the socket's pending error.
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def test_l7_at_maxconn_answers_503_with_retry_after_and_forwards_nothing(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer("limits: {maxconn: 2}\n")
    with ExitStack() as held:
        for _ in range(2):  # two keep-alive connections hold both slots
            conn = held.enter_context(tls_connection("127.0.0.1", port, l7.pki.ca))
            conn.sendall(GET)
            assert read_response(conn)[0] == 200
        seen = forwarded(l7)
        refused_503(port, l7, GET)  # a request sent at once: answered, not reset
        refused_503(port, l7, b"")  # nothing sent: the answer comes all the same
        post = (
            f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: {NAMESPACE}\r\nContent-Length: 30000\r\n\r\n"
        ).encode() + b"x" * 30000
        refused_503(port, l7, post)  # a body the balancer never reads does not turn into a reset
        assert forwarded(l7) == seen  # nothing of the refused requests reached the server
        assert len(MAXCONN_LINE.findall(proc.log)) == 1  # the first refusal in full, the rest counted
        wait_until(lambda: summaries(proc.log, "limits.maxconn (2)") == [2], 5, what="the summary line")
    # Slots free again: served.
    with tls_connection("127.0.0.1", port, l7.pki.ca) as conn:
        conn.sendall(GET)
        assert read_response(conn)[0] == 200


def test_l7_a_flood_over_maxconn_is_logged_as_a_count(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer("limits: {maxconn: 2}\n")
    flood = 60
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(tls_connection("127.0.0.1", port, l7.pki.ca)).sendall(GET)
        wait_until(lambda: forwarded(l7) >= 2, 5, what="both slots taken")
        started = time.monotonic()
        for _ in range(flood):
            refused_503(port, l7, GET)
        took = time.monotonic() - started

        def counted() -> int:
            return len(MAXCONN_LINE.findall(proc.log)) + sum(summaries(proc.log, "limits.maxconn (2)"))

        wait_until(lambda: counted() == flood, 5, what=f"{flood} refusals accounted for in the log")
    lines = [line for line in proc.log.splitlines() if "limits.maxconn (2)" in line]
    # At most one full line after each quiet second and one summary per second of flood.
    assert len(lines) <= 2 * (int(took) + 2), lines
    assert len(lines) < flood / 4


def test_l4_refusals_at_maxconn_are_logged_but_rate_limited(lab: Lab) -> None:
    lab.sim("MB1", "127.0.0.2")
    proc, port = lab.balancer("limits: {maxconn: 1, queue: 1}\ntimeouts: {queue: 1s}\n")
    flood = 40
    ctx = tls_context(lab.pki.ca)
    with tls_connection("127.0.0.1", port, lab.pki.ca):  # holds the only slot
        # The queue's one place (accepted, hence queued, before the flood: the backlog is FIFO).
        waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
        refused = 0
        for _ in range(flood):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                ctx.wrap_socket(raw, server_hostname=NAMESPACE).close()
            except (ssl.SSLError, ConnectionError, OSError):
                refused += 1  # closed by the balancer: no server ever saw it
            finally:
                raw.close()
        assert refused == flood

        def counted() -> int:
            full = proc.log.count("maxconn reached and the queue is full")
            return full + sum(summaries(proc.log, "limits.maxconn (1) reached and the queue is full"))

        wait_until(lambda: counted() == flood, 5, what=f"{flood} refusals accounted for in the log")
        assert proc.log.count("maxconn reached and the queue is full") <= 3
        # The queued client is refused after timeouts.queue, with its line.
        waiting.settimeout(5)
        assert waiting.recv(1) == b""
        waiting.close()
        proc.wait_log("waited 1s in the queue (timeouts.queue)")
