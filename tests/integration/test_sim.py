"""The simulated Exchange server on real loopback TLS, checked with real clients (http.client, requests,
requests-ntlm, pyspnego, curl), plus `casarray sim-cas` and `casarray lab` as processes."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import spnego
from requests_ntlm import HttpNtlmAuth

from casarray.exchange import catalog
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas, parse_description, seeded_blocks, tls_server_end_point
from tests.support import LoopThread, Proc, casarray, free_port, read_response, wait_until

DOMAIN = "alwayshotcafe.com"
NETBIOS, USER, PASSWORD = "ALWAYSHOTCAFE", "alice", "Passw0rd!"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    path.write_text(f"{NETBIOS}:{USER}:{PASSWORD}\n")
    return path


def _start(loop: LoopThread, pki: CertFiles, host: str = "127.0.0.2", **kwargs: Any) -> Iterator[SimCas]:
    sim = SimCas("MB1", certificate=pki.certificate, key=pki.key, host=host, domain=DOMAIN, **kwargs)
    loop.run(sim.start())
    try:
        yield sim
    finally:
        loop.run(sim.stop())


@pytest.fixture
def sim(loop: LoopThread, pki: CertFiles) -> Iterator[SimCas]:
    yield from _start(loop, pki)


@pytest.fixture
def ntlm_sim(loop: LoopThread, pki: CertFiles, users: Path) -> Iterator[SimCas]:
    yield from _start(loop, pki, host="127.0.0.3", ntlm_users=users)


class Client:
    """One keep-alive HTTPS connection to a sim, addressed by IP (the certificate holds 127.0.0.1-4)."""

    def __init__(self, sim: SimCas, ca: Path, timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPSConnection(
            sim.host, sim.port, context=ssl.create_default_context(cafile=str(ca)), timeout=timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return resp.status, resp.headers, resp.read()

    def control(self, path: str, method: str = "POST", host: str | None = None) -> tuple[int, Any]:
        status, _, body = self.request(method, path, headers={"Host": host} if host else None)
        return status, json.loads(body)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def client(sim: SimCas, pki: CertFiles) -> Iterator[Client]:
    c = Client(sim, pki.ca)
    yield c
    c.close()


def _session(ca: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override s.verify
    s.verify = str(ca)
    return s


def _tls(sim: SimCas, ca: Path) -> ssl.SSLSocket:
    raw = socket.create_connection((sim.host, sim.port), timeout=10)
    return ssl.create_default_context(cafile=str(ca)).wrap_socket(raw, server_hostname=sim.host)


# --- health checks, routing, X-FEServer -----------------------------------------------------------


def test_every_healthcheck_answers_like_exchange(client: Client) -> None:
    for service in catalog.SERVICES.values():
        for path in (service.health_path, service.health_path.upper()):
            status, headers, body = client.request("GET", path)
            assert status == 200, path
            assert headers["Content-Type"].startswith("text/html")
            assert headers["X-FEServer"] == "MB1"
            assert body == b"200 OK<br/>MB1.alwayshotcafe.com"


def test_root_redirects_to_owa_and_unknown_paths_are_404(client: Client) -> None:
    status, headers, _ = client.request("GET", "/")
    assert (status, headers["Location"], headers["X-FEServer"]) == (302, "/owa/", "MB1")
    status, headers, _ = client.request("GET", "/nothing/here")
    assert (status, headers["X-FEServer"]) == (404, "MB1")


def test_vdir_requests_name_server_service_method_and_path(client: Client) -> None:
    for method, path, service in [
        ("GET", "/owa/", "owa"),
        ("POST", "/ews/exchange.asmx", "ews"),
        ("PROPFIND", "/OAB/x/oab.xml", "oab"),
        ("OPTIONS", "/Microsoft-Server-ActiveSync", "eas"),
    ]:
        status, headers, body = client.request(method, path, body=b"abc" if method == "POST" else None)
        assert (status, headers["X-FEServer"]) == (200, "MB1")
        fields = parse_description(body.decode())
        assert fields == {
            "server": "MB1",
            "service": service,
            "method": method,
            "path": path,
            "body_bytes": "3" if method == "POST" else "0",
        }


# --- controls ---------------------------------------------------------------------------------------


def test_service_down_and_up(client: Client) -> None:
    status, state = client.control("/_sim/service/ews/down")
    assert status == 200
    assert state["services"]["ews"] == "down"
    assert state["services"]["owa"] == "up"
    status, _, body = client.request("GET", "/EWS/healthcheck.htm")
    assert (status, body) == (503, b"503 Service Unavailable")
    assert client.request("POST", "/EWS/Exchange.asmx", body=b"x")[0] == 503
    assert client.request("GET", "/owa/healthcheck.htm")[0] == 200
    client.control("/_sim/service/EWS/up")  # service names are case-insensitive
    assert client.request("GET", "/EWS/healthcheck.htm")[0] == 200
    status, answer = client.control("/_sim/service/nope/down")
    assert status == 404
    assert "ews" in answer["services"]


def test_server_down_fails_every_service(client: Client) -> None:
    client.control("/_sim/server/down")
    for service in catalog.SERVICES.values():
        assert client.request("GET", service.health_path)[0] == 503
    assert client.request("GET", "/mapi/emsmdb/")[0] == 503
    _status, state = client.control("/_sim/server/up")
    assert state["server"] == "up"
    assert client.request("GET", "/mapi/healthcheck.htm")[0] == 200


def test_latency_is_added_before_every_response(client: Client) -> None:
    client.control("/_sim/latency?ms=300")
    for path in ("/owa/healthcheck.htm", "/owa/"):
        started = time.monotonic()
        assert client.request("GET", path)[0] == 200
        assert time.monotonic() - started >= 0.29
    assert client.control("/_sim/latency?ms=-5")[0] == 400
    started = time.monotonic()
    _, state = client.control("/_sim/reset")
    assert state["latency_ms"] == 0
    assert time.monotonic() - started < 0.25


def test_controls_refuse_the_namespace_host(client: Client, sim: SimCas) -> None:
    for host in (
        "outlook.alwayshotcafe.com",
        f"outlook.alwayshotcafe.com:{sim.port}",
        "mb2.alwayshotcafe.com",
    ):
        status, answer = client.control("/_sim/server/down", host=host)
        assert status == 403
        assert "mb1.alwayshotcafe.com" in answer["error"]
    assert sim.state.server_up
    for host in ("mb1.alwayshotcafe.com", f"MB1.alwayshotcafe.com:{sim.port}", f"127.0.0.2:{sim.port}"):
        assert client.control("/_sim/state", "GET", host=host)[0] == 200
    assert client.control("/_sim/server/down", "GET")[0] == 405
    assert client.control("/_sim/nothing", "GET")[0] == 404


# --- knobs ------------------------------------------------------------------------------------------


def test_status_delay_size_and_bad_knobs(client: Client) -> None:
    assert client.request("GET", "/owa/?sim-status=500")[0] == 500
    started = time.monotonic()
    assert client.request("GET", "/ews/?sim-delay=0.3")[0] == 200
    assert time.monotonic() - started >= 0.29
    status, headers, body = client.request("GET", "/oab/?sim-size=3000001")
    assert (status, headers["Content-Length"], len(body)) == (200, "3000001", 3000001)
    status, _, body = client.request("GET", "/oab/?sim-size=200000&sim-seed=9")
    assert (status, body) == (200, b"".join(seeded_blocks(9, 200_000)))
    assert client.request("HEAD", "/oab/?sim-size=200000&sim-seed=9")[2] == b""
    status, _, body = client.request("GET", "/owa/?sim-size=x")
    assert status == 400
    assert b"sim-size" in body


def test_chunked_trickle_arrives_chunk_by_chunk(sim: SimCas, pki: CertFiles) -> None:
    with _tls(sim, pki.ca) as tls:
        started = time.monotonic()
        tls.sendall(
            b"POST /mapi/emsmdb/?sim-chunks=3&sim-interval=0.3 HTTP/1.1\r\nHost: 127.0.0.2\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert time.monotonic() - started < 0.25, "headers must not wait for the first chunk"
        assert b"Transfer-Encoding: chunked" in head
        assert b"X-FEServer: MB1" in head
        arrivals: list[float] = []
        body = rest
        while not body.endswith(b"0\r\n\r\n"):
            piece = tls.recv(65536)
            assert piece
            if b"PENDING" in piece:
                arrivals.append(time.monotonic() - started)
            body += piece
    assert body == b"9\r\nPENDING\r\n\r\n" * 3 + b"0\r\n\r\n"
    assert len(arrivals) == 3
    assert arrivals[0] >= 0.28
    assert arrivals[1] - arrivals[0] >= 0.2
    assert arrivals[2] - arrivals[1] >= 0.2


def test_echo_headers_keeps_case_and_order(sim: SimCas, pki: CertFiles) -> None:
    headers = (
        b"HoSt: 127.0.0.2\r\nX-MiXeD-CaSe: One\r\nx-lower: two\r\nUSER-AGENT: Outlook-iOS/2.0\r\n"
        b"MS-ASProtocolVersion: 16.1\r\nContent-Length: 0\r\n"
    )
    with _tls(sim, pki.ca) as tls:
        tls.sendall(
            b"POST /Microsoft-Server-ActiveSync?sim-echo-headers=1&Cmd=Ping HTTP/1.1\r\n" + headers + b"\r\n"
        )
        status, _, body = read_response(tls)
    assert status == 200
    assert body == headers


# --- bodies and recording -------------------------------------------------------------------------------


def test_streamed_64_mib_upload_is_counted(client: Client, sim: SimCas) -> None:
    block = b"u" * MIB

    def body() -> Iterator[bytes]:
        for _ in range(64):
            yield block

    status, _, reply = client.request(
        "POST", "/rpc/rpcproxy.dll?mb1:6001", body=body(), headers={"Content-Length": str(64 * MIB)}
    )
    assert status == 200
    assert parse_description(reply.decode())["body_bytes"] == str(64 * MIB)
    # chunked request body (no Content-Length) is counted as well
    status, _, reply = client.request("POST", "/mapi/emsmdb/", body=body())  # http.client sends it chunked
    assert parse_description(reply.decode())["body_bytes"] == str(64 * MIB)
    assert sim.state.select(kind="vdir")[-1].body_bytes == 64 * MIB


def test_digest_knob_names_the_sha256_of_the_body_as_received(client: Client) -> None:
    """`sim-digest=1`: the reply carries the SHA-256 of the upload, so a body can be checked end to end
    through a balancer (bench/soak.py); the default reply stays without it."""
    body = os.urandom(MIB + 17)
    status, _, reply = client.request("POST", "/ews/Exchange.asmx?sim-digest=1", body=body)
    fields = parse_description(reply.decode())
    assert status == 200
    assert (fields["body_bytes"], fields["body_sha256"]) == (str(len(body)), hashlib.sha256(body).hexdigest())
    # a chunked upload (no Content-Length) is hashed as it streams
    pieces = [os.urandom(70_000) for _ in range(5)]
    status, _, reply = client.request("POST", "/mapi/emsmdb/?sim-digest=1", body=iter(pieces))
    assert parse_description(reply.decode())["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    status, _, reply = client.request("GET", "/owa/?sim-digest=1")
    assert parse_description(reply.decode())["body_sha256"] == hashlib.sha256(b"").hexdigest()
    assert "body_sha256" not in parse_description(client.request("POST", "/owa/", body=b"x")[2].decode())


def test_unknown_methods_and_request_recording(sim: SimCas, pki: CertFiles, client: Client) -> None:
    with _tls(sim, pki.ca) as tls:
        host, port = tls.getsockname()[:2]
        local = f"{host}:{port}"
        tls.sendall(
            b"RPC_IN_DATA /rpc/rpcproxy.dll?mb1.alwayshotcafe.com:6001 HTTP/1.1\r\nHost: 127.0.0.2\r\n"
            b"X-CaSe: kept\r\nContent-Length: 5\r\n\r\nhello"
            b"RPC_OUT_DATA /rpc/rpcproxy.dll?mb1.alwayshotcafe.com:6001 HTTP/1.1\r\nHost: 127.0.0.2\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        first = read_response(tls)
        second = read_response(tls)
    assert parse_description(first[2].decode())["method"] == "RPC_IN_DATA"
    assert parse_description(second[2].decode())["method"] == "RPC_OUT_DATA"
    status, answer = client.control("/_sim/requests?kind=vdir&service=rpc", "GET")
    records = answer["requests"]
    assert status == 200
    assert [r["method"] for r in records] == ["RPC_IN_DATA", "RPC_OUT_DATA"]
    first_record = records[0]
    assert first_record["path"] == "/rpc/rpcproxy.dll?mb1.alwayshotcafe.com:6001"
    assert first_record["headers"] == [["Host", "127.0.0.2"], ["X-CaSe", "kept"], ["Content-Length", "5"]]
    assert (first_record["body_bytes"], first_record["peer"], first_record["status"]) == (5, local, 200)
    assert first_record["time"] > 0
    since = records[-1]["seq"]
    client.request("GET", "/owa/healthcheck.htm")
    _, answer = client.control(f"/_sim/requests?since={since}", "GET")
    assert [(r["kind"], r["service"]) for r in answer["requests"]] == [("health", "owa")]
    _, state = client.control("/_sim/state", "GET")
    assert state["connections"]["total"] >= 2
    assert state["recorded"] == 3
    client.control("/_sim/reset")
    assert client.control("/_sim/requests", "GET")[1]["requests"] == []


# --- NTLM / Negotiate: auth belongs to the TCP connection -------------------------------------------------


def test_ntlm_authenticates_the_connection_not_the_request(ntlm_sim: SimCas, pki: CertFiles) -> None:
    base = ntlm_sim.url
    with _session(pki.ca) as anonymous:
        resp = anonymous.get(f"{base}/EWS/Exchange.asmx")
        assert resp.status_code == 401
        assert resp.raw.headers.getlist("WWW-Authenticate") == ["NTLM", "Negotiate"]
        assert anonymous.get(f"{base}/owa/healthcheck.htm").status_code == 200  # never authenticated
        assert anonymous.get(f"{base}/PowerShell/").status_code == 200  # Kerberos-only in Exchange
    with _session(pki.ca) as s:
        s.auth = HttpNtlmAuth(f"{NETBIOS}\\{USER}", PASSWORD)
        resp = s.post(f"{base}/EWS/Exchange.asmx", data=b"<soap/>")
        assert resp.status_code == 200
        assert parse_description(resp.text)["user"] == f"{NETBIOS}\\{USER}"
        total = ntlm_sim.state.connections_total
        s.auth = None  # same pooled connection, no Authorization header: still alice
        resp = s.get(f"{base}/mapi/emsmdb/")
        assert resp.status_code == 200
        assert parse_description(resp.text)["user"] == f"{NETBIOS}\\{USER}"
        assert "Authorization" not in resp.request.headers
        assert ntlm_sim.state.connections_total == total
    with _session(pki.ca) as fresh:  # a new connection starts unauthenticated
        assert fresh.get(f"{base}/mapi/emsmdb/").status_code == 401
    with _session(pki.ca) as wrong:
        wrong.auth = HttpNtlmAuth(f"{NETBIOS}\\{USER}", "wrong")
        assert wrong.get(f"{base}/owa/").status_code == 401
    users = [r.user for r in ntlm_sim.state.select(kind="vdir") if r.status == 200]
    assert users == [None, f"{NETBIOS}\\{USER}", f"{NETBIOS}\\{USER}"]  # PowerShell: no NTLM


def _negotiate(
    sim: SimCas, ca: Path, scheme: str, protocol: str, login: str = f"{NETBIOS}\\{USER}", **kwargs: Any
) -> tuple[int, bytes]:
    """Run the handshake by hand on one http.client connection, then one request without a header."""
    ctx = spnego.client(login, PASSWORD, hostname="mb1.alwayshotcafe.com", protocol=protocol, **kwargs)
    conn = http.client.HTTPSConnection(sim.host, sim.port, context=ssl.create_default_context(cafile=str(ca)))
    try:
        token = ctx.step()
        while True:
            assert token is not None
            conn.request(
                "GET", "/ecp/", headers={"Authorization": f"{scheme} {base64.b64encode(token).decode()}"}
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status != 401:
                break
            challenge = next((v for v in resp.headers.get_all("WWW-Authenticate", []) if " " in v), None)
            if challenge is None:
                return resp.status, b""
            token = ctx.step(base64.b64decode(challenge.split(" ", 1)[1]))
        conn.request("GET", "/oab/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_negotiate_scheme_with_spnego_wrapped_ntlm(ntlm_sim: SimCas, pki: CertFiles, users: Path) -> None:
    status, body = _negotiate(ntlm_sim, pki.ca, "Negotiate", "negotiate")
    assert status == 200
    assert parse_description(body.decode())["user"] == f"{NETBIOS}\\{USER}"


def test_a_user_logs_on_with_the_upn_the_domain_name_or_the_bare_name(
    loop: LoopThread, pki: CertFiles, users: Path
) -> None:
    """Outlook sends the UPN the user typed: NTLM then names the user `alice@<domain>` with an empty
    domain. Every name is the same account, recorded as IIS names it (DOMAIN\\user)."""
    upn = f"{USER}@{DOMAIN}"
    account = f"{NETBIOS}\\{USER}"
    for sim in _start(loop, pki, host="127.0.0.3", ntlm_users=users, extended_protection=True):
        store = sim._ntlm_store  # the acceptor's store, derived from the users file
        assert store is not None
        assert store.stat().st_mode & 0o077 == 0  # this process's alone
        for login in (upn, upn.upper(), account, USER):
            with _session(pki.ca) as s:  # requests-ntlm: NTLM bound to the certificate it saw
                s.auth = HttpNtlmAuth(login, PASSWORD)
                resp = s.get(f"{sim.url}/EWS/Exchange.asmx")
                assert resp.status_code == 200, login
                assert parse_description(resp.text)["user"] == account
        status, body = _negotiate(
            sim, pki.ca, "Negotiate", "negotiate", login=upn, channel_bindings=_binding(pki.certificate)
        )
        assert (status, parse_description(body.decode())["user"]) == (200, account)
        with _session(pki.ca) as s:  # the wrong password under the UPN is refused like any other
            s.auth = HttpNtlmAuth(upn, "wrong")
            assert s.get(f"{sim.url}/EWS/Exchange.asmx").status_code == 401
        for login in (upn, account):  # Basic where Exchange leaves it on (Autodiscover, ActiveSync)
            with _session(pki.ca) as s:
                s.auth = requests.auth.HTTPBasicAuth(login, PASSWORD)
                resp = s.get(f"{sim.url}/Microsoft-Server-ActiveSync")
                assert resp.status_code == 200, login
                assert parse_description(resp.text)["user"] == account
        accepted = [r.user for r in sim.state.select(kind="vdir") if r.status == 200]
        assert accepted == [account] * (4 + 2 + 2)  # NTLM; Negotiate and the request after it; Basic
    assert not store.exists()  # removed when the server stops


def _binding(certificate: Path) -> Any:
    from spnego.channel_bindings import GssChannelBindings

    return GssChannelBindings(application_data=tls_server_end_point(certificate.read_bytes()))


def test_extended_protection_rejects_a_channel_binding_for_another_certificate(
    loop: LoopThread, pki: CertFiles, users: Path, tmp_path: Path
) -> None:
    from spnego.channel_bindings import GssChannelBindings

    for sim in _start(loop, pki, host="127.0.0.4", ntlm_users=users, extended_protection=True):
        with _session(pki.ca) as s:  # requests-ntlm binds to the certificate it saw: accepted
            s.auth = HttpNtlmAuth(f"{NETBIOS}\\{USER}", PASSWORD)
            assert s.get(f"{sim.url}/EWS/Exchange.asmx").status_code == 200
        # As if a balancer terminated TLS with a different certificate (DESIGN §6, Extended Protection).
        wrong = GssChannelBindings(application_data=b"tls-server-end-point:" + b"\x00" * 31 + b"\x01")
        status, _ = _negotiate(sim, pki.ca, "NTLM", "ntlm", channel_bindings=wrong)
        assert status == 401


# --- real curl ------------------------------------------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
def test_curl_through_the_fqdn_and_with_ntlm(ntlm_sim: SimCas, pki: CertFiles) -> None:
    fqdn = f"https://mb1.alwayshotcafe.com:{ntlm_sim.port}"
    base = [
        "curl",
        "-s",
        "-i",
        "--max-time",
        "10",
        "--cacert",
        str(pki.ca),
        "--resolve",
        f"mb1.alwayshotcafe.com:{ntlm_sim.port}:{ntlm_sim.host}",
    ]
    out = subprocess.run(
        [*base, f"{fqdn}/Autodiscover/healthcheck.htm"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("HTTP/1.1 200")
    assert "X-FEServer: MB1" in out
    assert out.endswith("200 OK<br/>MB1.alwayshotcafe.com")
    out = subprocess.run(
        [*base, "-X", "POST", f"{fqdn}/_sim/service/autodiscover/down"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"autodiscover": "down"' in out
    if "NTLM" in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout:
        out = subprocess.run(
            [*base, "--ntlm", "-u", f"{NETBIOS}\\{USER}:{PASSWORD}", f"{fqdn}/EWS/Exchange.asmx"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"user={NETBIOS}\\{USER}" in out


# --- the command line -------------------------------------------------------------------------------------------


def test_sim_cas_command_serves_and_stops_on_sigterm(tmp_path: Path, pki: CertFiles) -> None:
    port = free_port("127.0.0.2")
    proc = Proc(
        casarray(
            "sim-cas",
            "--name",
            "mb2",
            "--listen",
            f"127.0.0.2:{port}",
            "--domain",
            DOMAIN,
            "--cert",
            str(pki.certificate),
            "--key",
            str(pki.key),
        ),
        tmp_path / "sim.log",
    )
    try:
        proc.wait_log(f"sim-cas MB2 listening on https://127.0.0.2:{port}")
        conn = http.client.HTTPSConnection(
            "127.0.0.2", port, context=ssl.create_default_context(cafile=str(pki.ca))
        )
        conn.request("GET", "/owa/healthcheck.htm")
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.headers["X-FEServer"]) == (
            200,
            b"200 OK<br/>MB2.alwayshotcafe.com",
            "MB2",
        )
        conn.close()
        # a second one on the same address: one clear error line, exit 1
        busy = subprocess.run(
            casarray(
                "sim-cas",
                "--name",
                "MB3",
                "--listen",
                f"127.0.0.2:{port}",
                "--cert",
                str(pki.certificate),
                "--key",
                str(pki.key),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"error: sim-cas MB3: cannot listen on 127.0.0.2:{port}")
        assert len(busy.stderr.splitlines()) == 1
    finally:
        assert proc.stop() == 0


def test_lab_starts_sims_and_balancer_and_stops_them(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port("127.0.0.2")
    directory = tmp_path / "lab-run"
    proc = Proc(
        casarray(
            "lab",
            "--dir",
            str(directory),
            "--port",
            str(port),
            "--sim-port",
            str(sim_port),
            "--dns-port",
            str(free_port(kind=socket.SOCK_DGRAM)),
        ),
        tmp_path / "lab.log",
    )
    try:
        proc.wait_log("Ctrl-C stops everything.", timeout=90)  # the lab applies the namespace first
        ca = directory / "ca.pem"
        assert f"--resolve outlook.alwayshotcafe.com:{port}:127.0.0.1 --cacert {ca}" in proc.log
        seen = set()
        ctx = ssl.create_default_context(cafile=str(ca))

        def answered_by_all() -> bool:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                with ctx.wrap_socket(raw, server_hostname="outlook.alwayshotcafe.com") as tls:
                    tls.sendall(
                        b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    status, headers, _body = read_response(tls)
            except OSError:  # a handshake slower than the timeout on a loaded machine: ask again
                return False
            if status == 200:
                seen.add(headers["x-feserver"])
            return seen == {"MB1", "MB2", "MB3"}

        wait_until(answered_by_all, timeout=60, what="X-FEServer MB1, MB2 and MB3 through the namespace")
        proc.signal(signal.SIGINT)
        assert proc.popen.wait(15) == 0
        assert "lab stopped" in proc.log
    finally:
        proc.stop()
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):  # every sim is gone
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, a listener not
            s.bind((address, sim_port))
            s.listen()


def lab_args(tmp_path: Path, sim_port: int, dns_port: int, *extra: str) -> list[str]:
    """`casarray lab` in tmp_path on free ports, with the sims' and the lab DNS's port given."""
    return casarray(
        "lab",
        "--dir",
        str(tmp_path / "lab"),
        "--port",
        str(free_port()),
        "--sim-port",
        str(sim_port),
        "--dns-port",
        str(dns_port),
        *extra,
    )


def test_lab_reports_a_child_that_dies(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    blocker = socket.socket()
    blocker.bind(("127.0.0.3", port))  # MB2 cannot listen
    blocker.listen()
    proc = Proc(
        lab_args(tmp_path, port, free_port(kind=socket.SOCK_DGRAM), "--no-ntlm"), tmp_path / "lab.log"
    )
    try:
        assert proc.popen.wait(30) == 1
        assert "error: sim-cas MB2 exited with code 1 before accepting on 127.0.0.3" in proc.log
        assert "lab stopped" in proc.log
    finally:
        proc.stop()
        blocker.close()


def test_lab_says_when_its_dns_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(type=socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        dns_port = blocker.getsockname()[1]
        done = subprocess.run(
            lab_args(tmp_path, free_port("127.0.0.2"), dns_port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: lab DNS: cannot listen on udp 127.0.0.1:{dns_port}: Address already in use"]
    assert "sim-cas" not in done.stdout + done.stderr  # nothing else was started
