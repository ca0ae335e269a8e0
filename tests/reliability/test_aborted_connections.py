"""5 000 TLS connections to the l7 balancer, each abandoned in one of four ways, leave nothing behind:
its open descriptors return to the baseline within a few seconds, and its resident memory stays within
baseline + 10 MiB (docs/reliability.md)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

import pytest

from tests.integration.conftest import L7Lab, get
from tests.support import NAMESPACE, rss_kib, tls_context, wait_until

HOST = NAMESPACE.encode()
TOTAL = 5000
BATCH = 100  # connections open at once
RSS_SLACK_KIB = 10 * 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rst_mid_head(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"GET /owa/ HTTP/1.1\r\nHost: " + HOST + b"\r\nUser-")
    # SO_LINGER 0: close() sends RST instead of FIN.
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def fin_mid_head(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"GET /owa/ HTTP/1.1\r\nHost: " + HOST + b"\r\nUser-")
    socket.socket.shutdown(tls, socket.SHUT_WR)


def fin_mid_body(tls: ssl.SSLSocket) -> None:
    tls.sendall(
        b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 50000\r\n\r\n<soap"
    )
    socket.socket.shutdown(tls, socket.SHUT_WR)


def after_handshake(tls: ssl.SSLSocket) -> None:
    pass  # closed at the end of the batch without a byte of HTTP


ABORTS = (rst_mid_head, fin_mid_head, fin_mid_body, after_handshake)


def abort_connections(port: int, ctx: ssl.SSLContext, count: int) -> None:
    done = 0
    while done < count:
        batch: list[ssl.SSLSocket] = []
        try:
            for i in range(min(BATCH, count - done)):
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                tls = ctx.wrap_socket(raw, server_hostname=NAMESPACE)
                batch.append(tls)
                ABORTS[(done + i) % len(ABORTS)](tls)
        finally:
            for tls in batch:
                socket.socket.close(tls)  # no close_notify: the client just goes away
        done += len(batch)


@pytest.mark.slow
def test_5000_aborted_connections_leave_no_descriptor_or_memory_behind(l7: L7Lab) -> None:
    l7.start_sims(2)
    proc, port = l7.balancer(health="{enabled: false}")
    pid = proc.popen.pid
    ctx = tls_context(l7.pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 tickets would cost a read per connection
    assert get(l7, port, "/owa/").status == 200
    base_fds = fds(pid)
    abort_connections(port, ctx, 400)  # warm-up: allocator pools and caches reach their working size
    wait_until(lambda: fds(pid) <= base_fds, 5, what=f"descriptors back to {base_fds} after the warm-up")
    wait_until(lambda: sum(s.state.connections_open for s in l7.sims.values()) == 0, 5, what="sims idle")
    base_rss = rss_kib(pid)
    start = time.monotonic()
    abort_connections(port, ctx, TOTAL)
    took = time.monotonic() - start
    wait_until(lambda: fds(pid) <= base_fds, 5, what=f"descriptors back to {base_fds} (now {fds(pid)})")
    released = time.monotonic() - start - took
    wait_until(lambda: sum(s.state.connections_open for s in l7.sims.values()) == 0, 5, what="sims idle")
    rss = rss_kib(pid)
    print(
        f"\n{TOTAL} aborted connections in {took:.1f}s; fds {base_fds} -> {fds(pid)} "
        f"({released:.2f}s after the last); RSS {base_rss} KiB -> {rss} KiB (+{rss - base_rss} KiB)"
    )
    assert rss <= base_rss + RSS_SLACK_KIB
    assert get(l7, port, "/owa/").status == 200
