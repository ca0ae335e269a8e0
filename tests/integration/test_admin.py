"""The admin API, `casarray ctl` and /metrics against a real `casarray run` process, with simulated
Exchange servers (in a loop thread) behind it and real clients on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from casarray.lab.pki import CertFiles
from tests.integration.conftest import L7Lab, in_loop
from tests.support import (
    NAMESPACE,
    LoopThread,
    Proc,
    Response,
    casarray,
    free_port,
    https_request,
    read_response,
    wait_until,
)

TOKEN = "integration-token-5f2c"
EWS = "/EWS/Exchange.asmx"


class AdminLab(L7Lab):
    """The l7 lab (simulated servers on a loop thread) plus a balancer with the admin API."""

    def __init__(self, directory: Path, pki: CertFiles, loop: LoopThread) -> None:
        super().__init__(directory, pki, loop)
        self.token_file = directory / "admin.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.config = directory / "casarray.yaml"
        self.port = 0
        self.admin_url = ""

    def balancer(
        self, mode: str = "l7", admin_port: int | None = None, wait: bool = True, workers: int = 2
    ) -> Proc:
        self.port = free_port()
        admin_port = admin_port or free_port()
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        tls = f"tls: {{certificate: {self.pki.certificate}, key: {self.pki.key}}}\n" if mode == "l7" else ""
        servers = "\n".join(
            f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}" for s in self.sims.values()
        )
        self.config.write_text(
            textwrap.dedent(f"""\
            namespace: {NAMESPACE}
            mode: {mode}
            listen: {{address: 127.0.0.1, https_port: {self.port}}}
            upstream_tls: {{ca: {self.pki.ca}}}
            health: {{interval: 200ms, timeout: 1s, rise: 1, fall: 1}}
            timeouts: {{grace: 2s, upstream_release: 0}}
            workers: {workers}
            admin: {{listen: '127.0.0.1:{admin_port}', token_file: {self.token_file}}}
            servers:
            """)
            + servers
            + "\n"
            + tls
        )
        proc = Proc(casarray("run", "-c", str(self.config)), self.dir / f"run-{self.port}.log")
        self.procs.append(proc)
        if wait:
            proc.wait_log("admin API and dashboard on")
        return proc

    def api(self, method: str, path: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=self.admin_url, timeout=10, trust_env=False) as client:
            return client.request(method, path, headers=headers)

    def status(self) -> dict[str, Any]:
        response = self.api("GET", "/api/status", token=None)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def server(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["servers"] if s["name"] == name)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            casarray("ctl", "-c", str(self.config), *args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            # `ctl status` fits COLUMNS when it is set (and the test runner may export one): wide here,
            # so the one-table form is what the assertions read.
            env={**os.environ, "COLUMNS": "200"},
        )

    def get(self, path: str) -> Response:
        return https_request("127.0.0.1", self.port, path, self.pki.ca)

    def spread(self, path: str, n: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            response = self.get(path)
            assert response.status == 200, response
            counts[response.server] += 1
        return counts


@pytest.fixture
def lab(tmp_path: Path, pki: CertFiles) -> Iterator[AdminLab]:
    with in_loop(AdminLab, tmp_path, pki) as lab:
        yield lab


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class KeptConnection:
    """One client connection through the balancer, kept open across requests (HTTP/1.1 keep-alive).
    Its upstream connection stays open with it while idle: the lab sets `upstream_release: 0`, as an
    NTLM client's would stay (docs/l7.md)."""

    def __init__(self, lab: AdminLab, path: str = "/owa/healthcheck.htm") -> None:
        self.path = path
        ctx = ssl.create_default_context(cafile=str(lab.pki.ca))
        raw = socket.create_connection(("127.0.0.1", lab.port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname=NAMESPACE)

    def request(self) -> str:
        self.sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {NAMESPACE}\r\n\r\n".encode())
        status, headers, _ = read_response(self.sock)
        assert status == 200
        return headers["x-feserver"]

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def test_l7_drain_lets_the_in_flight_request_finish_and_sends_new_ones_elsewhere(lab: AdminLab) -> None:
    lab.start_sims()
    lab.balancer()
    # Auth on the real thing: reads are free on loopback, changes need the token.
    assert lab.api("POST", "/api/servers/MB1/drain", token=None).status_code == 401
    assert lab.api("POST", "/api/servers/MB1/drain", token="wrong").status_code == 401
    assert lab.server("MB1")["operator"] == "ready"
    scrape0 = metric_samples(lab.api("GET", "/metrics", token=None).text)
    # Park MB2 and MB3 so the slow request can only land on MB1, then bring them back.
    for name in ("MB2", "MB3"):
        assert lab.api("POST", f"/api/servers/{name}/drain").json()["outcome"] == f"{name}: drain"
    slow: list[Response] = []
    worker = threading.Thread(target=lambda: slow.append(lab.get(f"{EWS}?sim-delay=3")))
    worker.start()
    wait_until(lambda: lab.server("MB1")["active"] == 1, 5, what="the slow request open on MB1")
    assert lab.api("POST", "/api/servers/MB1/drain").status_code == 200
    for name in ("MB2", "MB3"):
        assert lab.api("POST", f"/api/servers/{name}/ready").status_code == 200
    assert set(lab.spread(EWS, 6)) == {"MB2", "MB3"}  # new requests go elsewhere...
    assert not slow  # ...while the one in flight on MB1 is still running
    worker.join(10)
    assert [(r.status, r.server) for r in slow] == [(200, "MB1")]
    members = lab.server("MB1")["members"]
    assert {m["state"] for m in members.values()} == {"drain"}
    assert not any(m["available"] for m in members.values())

    # With several workers the counters arrive in their stats, once a second: wait for them.
    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return metric_samples(lab.api("GET", "/metrics", token=None).text)

    before = sample(scrape0, "casarray_requests_total", service="ews", code_class="2xx")
    wait_until(
        lambda: sample(scrape(), "casarray_requests_total", service="ews", code_class="2xx") >= before + 7,
        5,
        what="casarray_requests_total counting the 7 EWS requests",
    )
    scrape1 = scrape()
    assert sample(scrape1, "casarray_member_operator_state", server="MB1", service="ews", state="drain") == 1
    assert sample(scrape1, "casarray_member_up", server="MB1", service="ews") == 1
    assert sample(scrape1, "casarray_server_connections_total", server="MB2") > sample(
        scrape0, "casarray_server_connections_total", server="MB2"
    )
    assert sample(scrape1, "casarray_check_last_duration_seconds", server="MB1", service="ews") > 0
    assert sample(scrape1, "casarray_check_duration_seconds_count", server="MB1", service="ews") >= 1

    # A client that speaks plain HTTP to the TLS port: a failed handshake, counted.
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", lab.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            plain.recv(100)
    wait_until(
        lambda: sample(scrape(), "casarray_tls_handshake_failures_total") >= 2,
        5,
        what="two failed TLS handshakes counted",
    )

    readied = lab.ctl("ready", "MB1")
    assert (readied.returncode, readied.stdout, readied.stderr) == (0, "MB1: ready\n", "")
    assert "MB1" in lab.spread(EWS, 6)
    events = lab.api("GET", "/api/events", token=None).json()["events"]
    assert [e["new"] for e in events if e["code"] == "operator" and e["server"] == "MB1"] == [
        "drain",
        "ready",
    ]


def test_operator_states_survive_a_reload(lab: AdminLab) -> None:
    lab.start_sims()
    proc = lab.balancer()
    drained = lab.ctl("drain", "MB1")
    assert (drained.returncode, drained.stdout, drained.stderr) == (0, "MB1: drain\n", "")
    assert lab.api("POST", "/api/servers/MB2/services/ews/maint").status_code == 200
    status = lab.ctl("status")
    assert status.returncode == 0, status.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│") for line in status.stdout.splitlines() if "│ MB" in line
    }
    assert rows["MB1"][2].strip() == "drain", status.stdout
    assert "maint" in status.stdout
    reloaded = lab.ctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.startswith(f"reloaded {lab.config}: generation 2 serving")
    status = lab.status()
    assert status["reloads"] == 1
    servers = {s["name"]: s for s in status["servers"]}
    assert servers["MB1"]["operator"] == "drain"
    assert servers["MB2"]["members"]["ews"]["operator"] == "maint"
    assert servers["MB2"]["members"]["owa"]["state"] == "up"
    assert set(lab.spread(EWS, 6)) == {"MB3"}
    assert set(lab.spread("/owa/", 6)) == {"MB2", "MB3"}
    # A refused config keeps the running one, and says why in one line.
    lab.config.write_text(lab.config.read_text().replace("mode: l7", "mode: l9"))
    refused = lab.ctl("reload")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: 409 Conflict: reload refused, the running config keeps serving:")
    assert refused.stderr.count("\n") == 1
    assert lab.status()["reloads"] == 1
    assert "reload refused" in proc.log


def test_l7_maint_closes_the_open_connections_of_that_server(lab: AdminLab) -> None:
    lab.start_sims()
    lab.balancer()
    kept = KeptConnection(lab)
    try:
        server = kept.request()
        assert kept.request() == server  # pinned: the same upstream connection
        kept.sock.settimeout(0.2)
        assert not kept.closed_by_peer()
        kept.sock.settimeout(5)
        assert lab.api("POST", f"/api/servers/{server}/maint").status_code == 200
        assert kept.closed_by_peer()
    finally:
        kept.close()
    assert server not in lab.spread("/owa/", 6)


def test_l4_drain_keeps_open_connections_and_maint_closes_them(lab: AdminLab) -> None:
    lab.start_sims()
    lab.balancer(mode="l4", workers=1)  # the single-process engine: the Balancer itself is the Control
    kept: list[KeptConnection] = []
    try:
        for _ in range(3):  # round robin: one of three connections lands on MB1
            kept.append(KeptConnection(lab))
            if kept[-1].request() == "MB1":
                break
        on_mb1 = kept[-1]
        assert lab.api("POST", "/api/servers/MB1/drain").status_code == 200
        assert set(lab.spread("/owa/healthcheck.htm", 6)) == {"MB2", "MB3"}  # no new connection to MB1
        assert on_mb1.request() == "MB1"  # the open one still works
        wait_until(lambda: lab.server("MB1")["active"] == 1, 5, what="MB1's open connection counted")
        assert lab.api("POST", "/api/servers/MB1/maint").status_code == 200
        assert on_mb1.closed_by_peer()
        wait_until(lambda: lab.server("MB1")["active"] == 0, 5, what="MB1's connection counted closed")
    finally:
        for connection in kept:
            connection.close()


def test_admin_port_in_use_stops_the_start_with_one_line(lab: AdminLab) -> None:
    lab.start_sims(1)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        proc = lab.balancer(admin_port=taken.getsockname()[1], wait=False)
        assert proc.popen.wait(20) == 1
    assert "error: admin.listen: cannot listen on 127.0.0.1:" in proc.log


@pytest.mark.slow
def test_a_drain_survives_a_restart_with_its_reason(lab: AdminLab) -> None:
    lab.start_sims()
    proc = lab.balancer()
    drained = lab.ctl("drain", "MB2", "--reason", "CU14")
    assert (drained.returncode, drained.stdout) == (0, "MB2: drain (CU14)\n"), drained.stderr
    state_file = lab.config.with_name(lab.config.name + ".state.json")
    assert '"reason": "CU14"' in state_file.read_text()
    assert proc.stop() == 0
    proc = lab.balancer()  # a new process on the same config file
    assert "operator: MB2 drain since " in proc.log
    assert f"CU14 (kept in {state_file})" in proc.log
    mb2 = lab.server("MB2")
    assert mb2["operator"] == "drain"
    assert mb2["operator_reason"] == "CU14"
    assert mb2["operator_by"].endswith("(ctl) from 127.0.0.1") or mb2["operator_by"].startswith("ctl")
    assert set(lab.spread("/owa/", 6)) == {"MB1", "MB3"}  # in force from the first request
    status = lab.ctl("status")
    assert "MB2 drain since " in status.stdout
    assert status.stdout.rstrip().endswith(": CU14")
    # Saying it again changes nothing, and the event says so instead of "drain -> drain".
    again = lab.ctl("drain", "MB2", "--reason", "CU14")
    assert again.returncode == 0
    events = lab.ctl("events").stdout.splitlines()
    assert "MB2 still drain operator 'already drain, nothing changed (by " in events[-1]
    assert lab.ctl("ready", "MB2").returncode == 0
    assert proc.stop() == 0
    proc = lab.balancer()
    assert lab.server("MB2")["operator"] == "ready"


@pytest.mark.slow
def test_ctl_drain_wait_returns_when_the_connections_have_finished(lab: AdminLab) -> None:
    lab.start_sims()
    lab.balancer()
    kept = KeptConnection(lab)
    try:
        server = kept.request()
        wait_until(lambda: lab.server(server)["active"] == 1, 5, what=f"{server} holding the connection")
        timed_out = lab.ctl("drain", server, "--reason", "CU14", "--wait", "--timeout", "1s")
        assert timed_out.returncode == 1
        assert timed_out.stderr.splitlines()[-1] == (
            f"error: {server} still has 1 open connection(s) after 1s (--timeout); it stays in drain"
        )
        waiting = subprocess.Popen(
            casarray("ctl", "-c", str(lab.config), "drain", server, "--wait", "--timeout", "30s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: waiting.poll() is None and lab.server(server)["operator"] == "drain", 5)
            assert waiting.poll() is None  # still waiting: the connection is open
            kept.close()
            out, err = waiting.communicate(timeout=20)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        assert waiting.returncode == 0, err
        assert out.splitlines()[-1].startswith(f"{server}: every connection has finished (after ")
        assert lab.server(server)["active"] == 0
    finally:
        kept.close()
