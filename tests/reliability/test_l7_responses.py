"""What reaches a client from a server is sane: a malformed or ambiguous response becomes a 502 and its
upstream connection is closed, interim responses are bounded, and bytes a server sends out of turn never
answer a later request. A scripted server misbehaves on purpose, over real TLS on loopback."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from casarray.http.h1 import MAX_INTERIM
from casarray.lab.pki import CertFiles
from tests.integration.conftest import L7Lab
from tests.reliability.scripted import ScriptedServer
from tests.support import NAMESPACE, read_response, tls_connection, wait_until

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BAD = {
    "both-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "connection-content-length": b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
    "connection-transfer-encoding": (
        b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "status-000": b"HTTP/1.1 000 Nothing\r\nContent-Length: 0\r\n\r\n" + OK,
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "1000-continues": b"HTTP/1.1 100 Continue\r\n\r\n" * 1000 + OK,
    "listed-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "garbage": b"\x16\x03\x01 not http at all\r\n\r\n",
}


def script(head: bytes, index: int) -> list[bytes | float] | None:
    path = head.split(b" ")[1].decode()
    name = path.rsplit("/", 1)[-1]
    if name in BAD:
        return [BAD[name]]
    if name == "204-then-junk":  # junk in the same write as the 204
        return [b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"]
    if name == "204-later-junk":  # junk after the 204, while no request is outstanding
        return [b"HTTP/1.1 204 No Content\r\n\r\n", 0.3, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"]
    return [OK]


@pytest.fixture
def scripted(pki: CertFiles) -> Iterator[ScriptedServer]:
    server = ScriptedServer(pki, script)
    try:
        yield server
    finally:
        server.close()


def read_until_closed(tls: ssl.SSLSocket) -> bytes:
    tls.settimeout(5)
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    return data


def request(path: str) -> bytes:
    return f"GET /ews/{path} HTTP/1.1\r\nHost: {NAMESPACE}\r\n\r\n".encode()


def test_malformed_and_ambiguous_responses_are_502_and_the_upstream_is_closed(
    l7: L7Lab, scripted: ScriptedServer
) -> None:
    proc, port = l7.balancer(servers=scripted.servers_yaml(), health="{enabled: false}")
    for i, name in enumerate(BAD, start=1):
        with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
            tls.sendall(request(name))
            received = read_until_closed(tls)
        interim, _, final = received.rpartition(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert final, (name, received[:200])
        assert b"\r\nConnection: close\r\n" in final
        # Interim responses relayed before the 502: at most MAX_INTERIM, and only real ones.
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM if name == "1000-continues" else 0)
        wait_until(lambda i=i: scripted.closed_by_peer >= i, 5)  # the balancer closed the upstream
    assert proc.log.count("502 invalid response from SCRIPTED") == len(BAD)
    assert "Traceback" not in proc.log


@pytest.mark.parametrize("name", ["204-then-junk", "204-later-junk"])
def test_bytes_after_a_response_never_answer_the_next_request(
    l7: L7Lab, scripted: ScriptedServer, name: str
) -> None:
    proc, port = l7.balancer(servers=scripted.servers_yaml(), health="{enabled: false}")
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(request(name))
        status, _, _ = read_response(tls)
        assert status == 204
        wait_until(lambda: scripted.closed_by_peer >= 1, 5)  # the connection that misbehaved is dropped
        tls.sendall(request("next"))
        status, _, body = read_response(tls)
    assert (status, body) == (200, b"ok")
    assert len(scripted.heads) == 2
    assert "Traceback" not in proc.log
