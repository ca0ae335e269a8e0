"""Resources follow clients (docs/reliability.md): a client that has finished sending an incomplete request
frees its slot and its upstream connection at once; a body that trickles below `limits.min_upload_rate`
on a short-lived vdir is cut, while long-lived vdirs (RPC, MAPI, EAS, EWS) are left alone."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

import pytest

from tests.integration.conftest import L7Lab, get
from tests.support import NAMESPACE, tls_connection, wait_until

HOST = NAMESPACE.encode()


def upload_head(path: bytes, length: int) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def read_until_closed(tls: ssl.SSLSocket, timeout: float) -> None:
    """Wait for the balancer to close the TCP connection; fails after `timeout`. Reads below TLS: after
    a FIN without close_notify, OpenSSL on the other side answers with an alert, which is not a close."""
    tls.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not socket.socket.recv(tls, 65536):
                return
        except ConnectionError:
            return
        except TimeoutError:
            break
    raise AssertionError(f"the connection is still open after {timeout}s")


def test_fin_mid_upload_aborts_the_request_and_frees_the_slot(l7: L7Lab) -> None:
    l7.start_sims(1)
    sim = l7.sims["MB1"]
    proc, port = l7.balancer(
        "limits: {maxconn: 8}\nlog: {access: true}\n",
        health="{enabled: false}",
    )
    paths = (b"/owa/service.svc", b"/EWS/Exchange.asmx", b"/mapi/emsmdb/", b"/ecp/")
    for i in range(20):
        opened = sim.state.connections_total
        with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
            tls.sendall(upload_head(paths[i % len(paths)], 100_000) + b"x" * 1000)
            # The request is on its way to the server before the client stops sending.
            wait_until(
                lambda opened=opened: sim.state.connections_total > opened,
                5,
                what=f"the upstream connection of client {i}",
            )
            # A plain FIN without close_notify, as a killed client or a dropped tunnel sends.
            socket.socket.shutdown(tls, socket.SHUT_WR)
            start = time.monotonic()
            read_until_closed(tls, 8.0)
            assert time.monotonic() - start < 8.0  # at once; before, body_idle (here 120 s) held it
    # Both sides closed: the server's connections are gone too, and a new client is served at once.
    wait_until(lambda: sim.state.connections_open == 0, 5, what="the sim's connections to close")
    start = time.monotonic()
    assert get(l7, port, "/owa/", timeout=10).status == 200
    assert time.monotonic() - start < 8.0  # before, every slot stayed taken for body_idle
    proc.wait_log("request aborted", count=20)
    proc.wait_log(" CD\n", count=20)  # the access log's termination code: client gone, data phase


def test_fin_mid_head_closes_at_once(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer(health="{enabled: false}")  # request_header stays at its 10 s default
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(b"GET /owa/ HTTP/1.1\r\nHost: " + HOST + b"\r\nX-Half: ")
        socket.socket.shutdown(tls, socket.SHUT_WR)
        start = time.monotonic()
        read_until_closed(tls, 7.0)
        assert time.monotonic() - start < 7.0  # before, timeouts.request_header (10 s)
    proc.wait_log("in the middle of a request head")


def trickle(tls: ssl.SSLSocket, seconds: float, result: dict[str, object]) -> None:
    """Send 20 bytes every 100 ms (200 B/s) for `seconds`, or until the balancer answers or closes."""
    deadline = time.monotonic() + seconds
    result["open"] = True
    got = b""
    try:
        while time.monotonic() < deadline:
            tls.sendall(b"y" * 20)
            if not select.select([tls], [], [], 0.1)[0]:
                continue
            tls.settimeout(0.05)
            try:
                chunk = tls.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue  # a TLS 1.3 session ticket, not data
            got += chunk
            if not chunk or b"\r\n\r\n" in got:
                result["status"] = int(got.split(b" ", 2)[1]) if got else 0
                result["at"] = time.monotonic()
                result["open"] = False
                return
    except OSError as exc:
        result["error"] = exc
        result["open"] = False


@pytest.mark.slow
def test_trickled_upload_is_cut_on_short_lived_vdirs_only(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer(
        "timeouts: {body_idle: 1s}\nlimits: {min_upload_rate: 1000}\n", health="{enabled: false}"
    )
    results: dict[bytes, dict[str, object]] = {}
    threads = []
    with (
        tls_connection("127.0.0.1", port, l7.pki.ca) as owa,
        tls_connection("127.0.0.1", port, l7.pki.ca) as mapi,
        tls_connection("127.0.0.1", port, l7.pki.ca) as eas,
    ):
        start = time.monotonic()
        for tls, path in (
            (owa, b"/owa/service.svc?action=UploadAttachment"),
            (mapi, b"/mapi/emsmdb/"),
            (eas, b"/Microsoft-Server-ActiveSync?Cmd=Ping"),
        ):
            tls.sendall(upload_head(path, 1_000_000))
            results[path] = {}
            threads.append(threading.Thread(target=trickle, args=(tls, 4.5, results[path])))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    cut = results[b"/owa/service.svc?action=UploadAttachment"]
    # 200 B/s against 1000 B/s: cut once 1 s (body_idle) + received/1000 s have passed, ~1.25 s.
    assert cut.get("status") == 408, cut
    assert float(cut["at"]) - start < 3.5  # type: ignore[arg-type]
    # Long-lived vdirs trickle on (RPC_IN_DATA, MAPI and EAS Ping hold requests open by design).
    assert results[b"/mapi/emsmdb/"] == {"open": True}
    assert results[b"/Microsoft-Server-ActiveSync?Cmd=Ping"] == {"open": True}
    proc.wait_log("below limits.min_upload_rate")
