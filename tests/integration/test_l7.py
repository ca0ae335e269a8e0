"""Layer 7 through real TLS on loopback: simulated Exchange servers (in a loop thread) behind the
balancer (as a real `casarray run` process), real clients."""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import time
from collections import Counter
from pathlib import Path

import pytest
from requests_ntlm import HttpNtlmAuth

from casarray.lab.pki import CertFiles
from tests.integration.conftest import USERS, L7Lab, get, session
from tests.support import (
    NAMESPACE,
    Proc,
    casarray,
    free_port,
    read_response,
    rss_kib,
    tls_connection,
    unanswered_port,
)


def test_per_service_routing_and_failover(l7: L7Lab) -> None:
    l7.start_sims()
    proc, port = l7.balancer()
    l7.sims["MB1"].state.set_service("ews", False)
    proc.wait_log("health MB1/ews up -> down L7STS 'HTTP 503'")
    ews = Counter(get(l7, port, "/EWS/Exchange.asmx").server for _ in range(9))
    owa = Counter(get(l7, port, "/owa/").server for _ in range(9))
    assert set(ews) == {"MB2", "MB3"}
    assert set(owa) == {"MB1", "MB2", "MB3"}  # a server whose EWS is down still serves OWA
    l7.sims["MB1"].state.set_service("ews", True)
    proc.wait_log("health MB1/ews down -> up L7OK")
    assert "MB1" in Counter(get(l7, port, "/ews/exchange.asmx").server for _ in range(9))  # IIS: any case


def test_balancer_answers_404_421_and_redirects_without_forwarding(l7: L7Lab) -> None:
    l7.start_sims()
    proc, port = l7.balancer()
    before = l7.recorded()
    nope = get(l7, port, "/_sim/state")
    assert nope.status == 404
    assert b"not an Exchange virtual directory" in nope.body
    wrong = get(l7, port, "/owa/", headers={"Host": "evil.example.com"})
    assert wrong.status == 421
    root = get(l7, port, "/")
    # Back to the name and port the client used (the lab and tests do not listen on 443).
    assert (root.status, root.headers["Location"]) == (302, f"https://{NAMESPACE}:{port}/owa/")
    owa = get(l7, port, "/OWA")
    assert owa.status == 302
    assert (
        get(l7, port, "/autodiscover/autodiscover.xml", host="autodiscover.alwayshotcafe.com").status == 200
    )
    assert l7.recorded() == before + 1  # only the autodiscover request reached a server
    assert "refused 127.0.0.1 GET /_sim/state: 404" in proc.log
    assert "refused 127.0.0.1 GET /owa/: 421 host 'evil.example.com' is not served here" in proc.log


def test_no_member_up_is_503_with_retry_after(l7: L7Lab) -> None:
    l7.start_sims(2)
    proc, port = l7.balancer()
    for sim in l7.sims.values():
        sim.state.set_service("mapi", False)
    proc.wait_log("no server is available for mapi")
    resp = get(l7, port, "/mapi/emsmdb/")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "10"
    assert b"<html>" in resp.body
    assert get(l7, port, "/owa/").status == 200


def test_upstream_closing_before_answering_is_502_for_post(l7: L7Lab, pki: CertFiles) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.certificate, pki.key)
    listener = socket.create_server(("127.0.0.2", 0))
    listener.settimeout(10)
    backend_port = listener.getsockname()[1]

    def rude() -> None:
        for _ in range(3):
            raw, _ = listener.accept()
            with ctx.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)  # read the request, then hang up without an answer

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(rude)
        _, port = l7.balancer(
            servers=f"  - {{name: RUDE, address: 127.0.0.2, port: {backend_port}}}",
            health="{enabled: false}",
            extra="retries: 1\n",
        )
        resp = get(l7, port, "/ews/Exchange.asmx", method="POST", body=b"<soap/>")
        assert resp.status == 502
        retried = get(l7, port, "/owa/")  # GET without a body: retried once, then 502
        assert retried.status == 502
    listener.close()


def test_a_server_that_never_answers_the_connect_times_out_and_the_next_one_serves(l7: L7Lab) -> None:
    """The upstream connect is bounded (timeouts.connect + timeouts.upstream_handshake): a server whose
    connects neither succeed nor fail costs each request that meets it that long, then another serves."""
    l7.start_sims(1)
    with unanswered_port("127.0.0.3") as silent:
        servers = f"  - {{name: SILENT, address: 127.0.0.3, port: {silent}}}\n" + l7.servers_yaml()
        proc, port = l7.balancer(
            "timeouts: {connect: 400ms, upstream_handshake: 400ms}\n",
            servers=servers,
            health="{enabled: false}",
        )
        started = time.monotonic()
        served = Counter(get(l7, port, "/owa/").server for _ in range(4))
        assert served == {"MB1": 4}
        assert time.monotonic() - started < 8.0
        proc.wait_log("timed out (timeouts.connect)")
        assert "SILENT" in proc.log


def test_response_not_started_in_time_is_504(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer("timeouts: {server: 500ms}\n")
    start = time.monotonic()
    resp = get(l7, port, "/ews/Exchange.asmx?sim-delay=3")
    assert resp.status == 504
    assert time.monotonic() - start < 2.5
    proc.wait_log("504 no response within")


def test_a_long_poll_outlives_the_request_header_timeout(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer("timeouts: {request_header: 300ms, body_idle: 300ms}\n")
    resp = get(l7, port, "/Microsoft-Server-ActiveSync?Cmd=Ping&sim-delay=1.2", method="POST", body=b"x")
    assert resp.status == 200
    assert resp.server == "MB1"


def test_slowloris_gets_408(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer("timeouts: {request_header: 300ms}\n")
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(b"GET /owa/ HTTP/1.1\r\nHost: " + NAMESPACE.encode() + b"\r\n")
        tls.settimeout(5)
        status, _, _ = read_response(tls)
    assert status == 408


def test_cookie_affinity(l7: L7Lab) -> None:
    l7.start_sims()
    proc, port = l7.balancer("affinity: cookie\naffinity_cookie: CASID\n")
    first = get(l7, port, "/owa/")
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("CASID=")
    for attr in ("Secure", "HttpOnly", "SameSite=None"):
        assert attr in cookie
    value = cookie.split(";")[0]
    assert "MB" not in value.upper()
    assert "127.0.0" not in value  # opaque: never the address or the name
    pinned = first.server
    again = [get(l7, port, "/ecp/", headers={"Cookie": value}) for _ in range(6)]
    assert {r.server for r in again} == {pinned}
    assert all("Set-Cookie" not in r.headers for r in again)
    l7.sims[pinned].state.set_service("ecp", False)
    proc.wait_log(f"health {pinned}/ecp up -> down")
    moved = get(l7, port, "/ecp/", headers={"Cookie": value})
    assert moved.server != pinned
    assert moved.headers["Set-Cookie"].split(";")[0] != value


def test_source_affinity(l7: L7Lab) -> None:
    l7.start_sims()
    _, port = l7.balancer("affinity: source\n")
    seen = {
        f"127.0.1.{i}": {get(l7, port, "/owa/", source=f"127.0.1.{i}").server for _ in range(3)}
        for i in range(1, 9)
    }
    assert all(len(s) == 1 for s in seen.values())
    assert len(set().union(*seen.values())) >= 2


def test_forwarded_headers_and_header_case_both_ways(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer()
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(
            b"GET /Microsoft-Server-ActiveSync?sim-echo-headers=1 HTTP/1.1\r\n"
            b"Host: outlook.alwayshotcafe.com\r\nMS-ASProtocolVersion: 14.1\r\nX-MS-PolicyKey: 0\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\n"
            b"user-agent: Apple-iPhone/1\r\n\r\n"
        )
        status, headers, body = read_response(tls)
        raw = b""
    assert status == 200
    echoed = body.decode()
    for line in (
        "MS-ASProtocolVersion: 14.1",
        "X-MS-PolicyKey: 0",
        "user-agent: Apple-iPhone/1",
        "X-Forwarded-For: 127.0.0.1",
        "X-Forwarded-Proto: https",
    ):
        assert line in echoed, echoed
    assert "6.6.6.6" not in echoed  # not a trusted proxy: replaced
    assert "X-Drop-Me" not in echoed  # named in Connection: hop-by-hop
    assert echoed.index("MS-ASProtocolVersion") < echoed.index("X-MS-PolicyKey") < echoed.index("user-agent")
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n\r\n")
        while b"\r\n\r\n" not in raw:
            raw += tls.recv(65536)
    assert b"\r\nX-FEServer: MB1\r\n" in raw  # the server's spelling, not lower-cased
    assert headers["x-feserver"] == "MB1"


def test_trusted_proxy_xff_is_appended(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer("trusted_proxies: [127.0.0.0/8]\n")
    resp = get(l7, port, "/owa/?sim-echo-headers=1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert "X-Forwarded-For: 198.51.100.7, 127.0.0.1" in resp.body.decode()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"POST /ews/ HTTP/1.1\r\nHost: H\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /ews/ HTTP/1.1\r\nHost: H\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST /ews/ HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /ews/ HTTP/1.1\r\nHost : H\r\n\r\n", 400),
        (b"GET /ews/ HTTP/1.1\r\nHost: H\r\nX-Bad: a\x01b\r\n\r\n", 400),
        (b"GET /ews/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /ews/ HTTP/1.1\r\nHost: H\r\nHost: H\r\n\r\n", 400),
        (b"POST /ews/ HTTP/1.1\r\nHost: H\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"CONNECT outlook.alwayshotcafe.com:443 HTTP/1.1\r\nHost: H\r\n\r\n", 405),
        (b"GET /ews/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: H\r\n\r\n", 414),
        (b"GET /ews/ HTTP/1.1\r\nHost: H\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_never_reach_a_server(l7: L7Lab, raw: bytes, status: int) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer()
    before = l7.recorded()
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(raw.replace(b"Host: H", b"Host: " + NAMESPACE.encode()))
        got, headers, _ = read_response(tls)
        assert got == status
        assert headers["connection"] == "close"
        tls.settimeout(5)
        assert tls.recv(100) == b""  # and the connection is closed
    assert l7.recorded() == before
    assert f": {status} " in proc.log


def test_expect_100_continue(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer()
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(
            b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = tls.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 ")
        tls.sendall(b"hello")
        status, _, body = read_response(tls)
    assert status == 200
    assert b"body_bytes=5" in body


def test_chunked_response_chunks_arrive_one_by_one(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer()
    with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
        tls.sendall(
            b"POST /mapi/emsmdb/?sim-chunks=3&sim-interval=0.4 HTTP/1.1\r\n"
            b"Host: outlook.alwayshotcafe.com\r\nContent-Length: 0\r\n\r\n"
        )
        arrivals: list[tuple[float, bytes]] = []
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = tls.recv(65536)
            assert chunk
            arrivals.append((time.monotonic(), chunk))
            data += chunk
    pending = [t for t, chunk in arrivals if b"PENDING" in chunk]
    assert len(pending) == 3  # each chunk in its own read: forwarded when it arrived, not batched
    assert pending[1] - pending[0] > 0.25
    assert pending[2] - pending[1] > 0.25
    assert b"Transfer-Encoding: chunked" in data


def test_256_mib_rpc_in_data_streams_with_bounded_memory(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer()
    size = 256 * 1024 * 1024
    block = b"r" * (1024 * 1024)
    peak = 0
    with tls_connection("127.0.0.1", port, l7.pki.ca, timeout=60) as tls:
        tls.sendall(
            b"RPC_IN_DATA /rpc/rpcproxy.dll?mb1.alwayshotcafe.com:6001 HTTP/1.1\r\n"
            b"Host: outlook.alwayshotcafe.com\r\nContent-Length: %d\r\n\r\n" % size
        )
        for i in range(size // len(block)):
            tls.sendall(block)
            if i % 32 == 0:
                peak = max(peak, rss_kib(proc.popen.pid))
        status, _, body = read_response(tls)
    assert status == 200
    assert f"body_bytes={size}".encode() in body
    assert peak < 100 * 1024, f"balancer RSS {peak} KiB"


def test_ntlm_32_concurrent_clients_and_no_cross_client_answers(l7: L7Lab) -> None:
    l7.start_sims(ntlm=True)
    # The sims answer in this process, alongside 32 client threads: on a slow machine one check can
    # take longer than the default 1 s timeout, and with fall 1 every server would go down at once.
    # This test is about answers reaching the right client, so the checks are made tolerant.
    _, port = l7.balancer(health="{interval: 500ms, timeout: 5s, rise: 1, fall: 3}")

    def user_session(user: str) -> str:
        with session(l7, port) as s:
            s.auth = HttpNtlmAuth(f"CORP\\{user}", f"Pass-{user}")
            first = s.get(f"https://127.0.0.1:{port}/EWS/Exchange.asmx", timeout=20)
            assert first.status_code == 200, first.text
            s.auth = None  # the connection stays authenticated (IIS keeps NTLM per connection)
            again = s.get(f"https://127.0.0.1:{port}/EWS/Exchange.asmx", timeout=20)
            assert again.status_code == 200, again.text
            return again.text

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(user_session, USERS))
    for user, text in zip(USERS, answers, strict=True):
        assert f"user=CORP\\{user}" in text
    # A client that never authenticated, on a new connection, is never answered as anybody.
    for _ in range(10):
        anon = get(l7, port, "/EWS/Exchange.asmx")
        assert anon.status == 401
        assert b"user=" not in anon.body


def test_http_port_redirects_to_https(l7: L7Lab) -> None:
    l7.start_sims(1)
    http_port = free_port()
    _, port = l7.balancer(http_port=http_port)
    with socket.create_connection(("127.0.0.1", http_port), timeout=5) as plain:
        plain.sendall(b"GET /ews/Exchange.asmx HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n\r\n")
        status, headers, _ = read_response(plain)
    assert status == 301
    assert headers["location"] == f"https://{NAMESPACE}:{port}/ews/Exchange.asmx"


def test_ntlm_connection_moves_when_the_pinned_server_lacks_the_next_service(l7: L7Lab) -> None:
    l7.start_sims(2, ntlm=True)
    proc, port = l7.balancer()
    with session(l7, port) as s:
        s.auth = HttpNtlmAuth("CORP\\user01", "Pass-user01")
        first = s.get(f"https://127.0.0.1:{port}/EWS/Exchange.asmx", timeout=20)
        assert first.status_code == 200
        pinned = first.headers["X-FEServer"]
        s.auth = None
        same = s.get(f"https://127.0.0.1:{port}/mapi/emsmdb/", timeout=20)
        assert same.status_code == 200  # another service, same pinned connection: still authenticated
        assert same.headers["X-FEServer"] == pinned
        assert "user=CORP\\user01" in same.text
        l7.sims[pinned].state.set_service("mapi", False)
        proc.wait_log(f"health {pinned}/mapi up -> down")
        moved = s.get(f"https://127.0.0.1:{port}/mapi/emsmdb/", timeout=20)
        assert moved.status_code == 401  # a new upstream connection: the client authenticates again
        assert moved.headers["X-FEServer"] != pinned
    proc.wait_log(f"mapi not available on {pinned} for /mapi/emsmdb/: new upstream connection")


def test_sni_picks_an_extra_certificate(l7: L7Lab, tmp_path: Path) -> None:
    from casarray.lab.pki import LabCa

    ca = LabCa.load(l7.pki.ca, l7.pki.ca.parent / "ca.key")
    extra = ca.issue(tmp_path, ["legacy.alwayshotcafe.com"], stem="legacy")
    l7.start_sims(1)
    _, port = l7.balancer(
        tls=f"{{certificate: {l7.pki.certificate}, key: {l7.pki.key}, "
        f"extra: [{{certificate: {extra.certificate}, key: {extra.key}}}]}}"
    )
    for name in ("legacy.alwayshotcafe.com", NAMESPACE):
        with tls_connection("127.0.0.1", port, l7.pki.ca, host=name) as tls:
            cert = tls.getpeercert()
            assert cert is not None
            sans = {value for _, value in cert["subjectAltName"]}
            assert name in sans
            assert ("legacy.alwayshotcafe.com" in sans) == (name != NAMESPACE)


def test_unreadable_listener_certificate_is_one_clear_line(l7: L7Lab) -> None:
    cfg = l7.dir / "badcert.yaml"
    cfg.write_text(
        f"namespace: {NAMESPACE}\nmode: l7\nlisten: {{address: 127.0.0.1, https_port: {free_port()}}}\n"
        "tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"
        "servers: [{name: MB1, address: 127.0.0.2}]\nworkers: 1\n"
    )
    proc = Proc(casarray("run", "-c", str(cfg)), l7.dir / "badcert.log")
    l7.procs.append(proc)
    assert proc.popen.wait(20) == 1
    errors = [line for line in proc.log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.log
    assert "tls: cannot load the certificate '/nonexistent/cert.pem'" in errors[0]
