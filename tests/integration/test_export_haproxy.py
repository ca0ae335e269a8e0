"""`casarray export haproxy` against Debian's real HAProxy 2.6: `haproxy -c` accepts both modes, and
HAProxy running the export serves three simulated Exchange servers on 127.0.0.2-4.

l4: a service set down on one server takes that whole server out (every l4_require service is a step
of one check sequence). l7: only that service's backend loses the server; the others still reach it.
"""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from casarray.config import Config, parse_config
from casarray.doctor import Row, failed, run_doctor
from casarray.export.haproxy import export_haproxy
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas
from tests.integration.test_doctor import AUTODISCOVER, FAST_HEALTH, ThreadLab, start_dns
from tests.support import NAMESPACE, Proc, free_port, https_request, tls_context, wait_until

HAPROXY = Path("/usr/sbin/haproxy")

pytestmark = [
    pytest.mark.needs_haproxy,
    pytest.mark.skipif(not HAPROXY.exists(), reason="Debian's haproxy is not installed"),
]


@pytest.fixture
def thread_lab(pki: CertFiles) -> Iterator[ThreadLab]:
    lab = ThreadLab(pki)
    try:
        yield lab
    finally:
        lab.close()


def config_text(pki: CertFiles, sims: list[SimCas], port: int, mode: str, extra: str = "") -> str:
    servers = "".join(f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}\n" for s in sims)
    tls = f"tls: {{certificate: {pki.certificate}, key: {pki.key}}}\n" if mode == "l7" else ""
    # maxconn: HAProxy raises its file limit to about twice this; keep it within a test runner's.
    return (
        f"namespace: {NAMESPACE}\nautodiscover: {AUTODISCOVER}\nmode: {mode}\n"
        f"listen: {{address: 127.0.0.1, https_port: {port}}}\n{tls}upstream_tls: {{ca: {pki.ca}}}\n"
        f"servers:\n{servers}health: {FAST_HEALTH}\nlimits: {{maxconn: 500}}\n" + extra
    )


def write_export(tmp_path: Path, text: str, name: str = "haproxy.cfg") -> Path:
    result = export_haproxy(parse_config(text), "casarray.yaml", bundle_dir=tmp_path)
    for generated in result.files:
        generated.path.write_bytes(generated.content)
        generated.path.chmod(generated.mode)
    path = tmp_path / name
    path.write_text(result.text)
    return path


def haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HAPROXY), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


def start_haproxy(tmp_path: Path, cfg: Path, port: int) -> Proc:
    proc = Proc([str(HAPROXY), "-db", "-f", str(cfg)], tmp_path / "haproxy.log")

    def listening() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"haproxy exited ({proc.popen.returncode}):\n{proc.log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait_until(listening, 10, what="haproxy to listen")
    return proc


def answers(port: int, ca: Path, path: str, n: int, *, strict: bool = True) -> Counter[str]:
    """Which servers answered `n` requests (one connection each). `strict`: every answer must be a 200;
    while a check has yet to notice a service went down, the server still answers, with its 503."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        resp = https_request("127.0.0.1", port, path, ca)
        if strict:
            assert resp.status == 200, (resp.status, resp.body[:200])
        counts[resp.server] += 1
    return counts


def test_haproxy_accepts_both_modes_with_every_option(pki: CertFiles, tmp_path: Path) -> None:
    servers = "".join(
        f"  - {{name: MB{i}, address: 127.0.0.{i + 1}, port: 8443, weight: {i}, maxconn: 100}}\n"
        for i in (1, 2, 3)
    )
    base = (
        f"namespace: {NAMESPACE}\nautodiscover: {AUTODISCOVER}\nupstream_tls: {{ca: {pki.ca}}}\n"
        f"servers:\n{servers}limits: {{maxconn: 500}}\n"
        "mail: {imap: {ports: [143, 993]}, pop3: {ports: [110, 995]}, smtp: {ports: [25, 587]}}\n"
        "admin: {listen: '127.0.0.1:9090'}\n"
    )
    variants = {
        "l4.cfg": "mode: l4\nlisten: {address: 127.0.0.1, https_port: 443}\nl4_require: [owa, ews, mapi]\n"
        "affinity: source\n",
        "l4-plain.cfg": "mode: l4\nlisten: {address: '::1', https_port: 443}\nbalance: source\n"
        "upstream_tls: {verify: false}\nhealth: {enabled: false}\n",
        "l7.cfg": f"mode: l7\nlisten: {{address: 127.0.0.1, https_port: 443, http_port: 80}}\n"
        f"tls: {{certificate: {pki.certificate}, key: {pki.key}}}\naffinity: cookie\n"
        "trusted_proxies: [10.0.0.0/8]\nbalance: leastconn\n",
        "l4-mapped.cfg": "mode: l4\nlisten: {address: 127.0.0.1, https_port: 443}\n",
        "l7-source.cfg": f"mode: l7\nlisten: {{address: 127.0.0.1, https_port: 443}}\n"
        f"tls: {{certificate: {pki.certificate}, key: {pki.key}}}\naffinity: source\nservices: [owa, rpc]\n",
    }
    for name, extra in variants.items():
        text = base + extra
        if "upstream_tls: {verify" in extra:
            text = text.replace(f"upstream_tls: {{ca: {pki.ca}}}\n", "")
        if name == "l4-mapped.cfg":  # servers[].mail_ports: one backend per VIP mail port
            text = text.replace("maxconn: 100}", "maxconn: 100, mail_ports: {993: 10993, 25: 2525}}")
        path = write_export(tmp_path, text, name)
        result = haproxy_check(path)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}\n{path.read_text()}"
        assert "WARNING" not in result.stdout + result.stderr, f"{name}: {result.stdout}{result.stderr}"


def test_l4_export_serves_the_lab_and_drops_a_server_with_a_service_down(
    thread_lab: ThreadLab, tmp_path: Path
) -> None:
    sims = thread_lab.start_sims()
    port = free_port()
    cfg = write_export(tmp_path, config_text(thread_lab.pki, sims, port, "l4", "l4_require: [owa, ews]\n"))
    proc = start_haproxy(tmp_path, cfg, port)
    try:
        ca = thread_lab.pki.ca
        wait_until(
            lambda: set(answers(port, ca, "/owa/healthcheck.htm", 3)) == {"MB1", "MB2", "MB3"},
            10,
            what="all three servers through HAProxy",
        )
        # TLS passed through untouched: the body is the server's own healthcheck.htm
        resp = https_request("127.0.0.1", port, "/EWS/Exchange.asmx", ca)
        assert resp.status == 200
        assert resp.server in {"MB1", "MB2", "MB3"}

        thread_lab.set_service(0, "ews", False)  # EWS down on MB1: l4 takes MB1 out for everything
        wait_until(
            lambda: "MB1" not in answers(port, ca, "/owa/", 6, strict=False),
            10,
            what="MB1 out of the l4 backend",
        )
        assert set(answers(port, ca, "/owa/", 6)) == {"MB2", "MB3"}
        wait_until(
            lambda: "ews: /EWS/healthcheck.htm not 200" in proc.log, 5, what="the check's comment in the log"
        )

        thread_lab.set_service(0, "ews", True)
        wait_until(lambda: "MB1" in answers(port, ca, "/owa/", 6), 10, what="MB1 back")
    finally:
        proc.stop()


def test_l7_export_takes_out_only_the_service_that_is_down(thread_lab: ThreadLab, tmp_path: Path) -> None:
    sims = thread_lab.start_sims()
    port = free_port()
    text = config_text(thread_lab.pki, sims, port, "l7", "services: [owa, ews, mapi, autodiscover]\n")
    cfg = write_export(tmp_path, text)
    assert (tmp_path / "server.haproxy.pem").exists()  # cert + key in one file for 'crt'
    proc = start_haproxy(tmp_path, cfg, port)
    try:
        ca = thread_lab.pki.ca
        wait_until(
            lambda: set(answers(port, ca, "/EWS/Exchange.asmx", 3)) == {"MB1", "MB2", "MB3"},
            10,
            what="all three servers for EWS",
        )

        thread_lab.set_service(0, "ews", False)  # EWS down on MB1: only the EWS backend drops it
        wait_until(
            lambda: "MB1" not in answers(port, ca, "/EWS/Exchange.asmx", 6, strict=False),
            10,
            what="MB1 out of the EWS backend",
        )
        assert set(answers(port, ca, "/EWS/Exchange.asmx", 6)) == {"MB2", "MB3"}
        assert set(answers(port, ca, "/owa/", 6)) == {"MB1", "MB2", "MB3"}  # OWA still reaches MB1

        # Routing and the rules around it
        assert https_request("127.0.0.1", port, "/nothing/here", ca).status == 404
        misdirected = raw_exchange(port, ca, "/owa/", [], host="other.example.net")
        assert misdirected.startswith(b"HTTP/1.1 421 ")  # host_check: a name this VIP does not serve
        root = https_request("127.0.0.1", port, "/", ca)
        assert (root.status, root.headers["Location"]) == (302, f"https://{NAMESPACE}:{port}/owa/")

        # Header names keep Exchange's spelling both ways (h1-case-adjust), XFF is set for IIS.
        raw = raw_exchange(
            port, ca, "/owa/?sim-echo-headers=1", [("X-MS-PolicyKey", "1"), ("X-Forwarded-For", "6.6.6.6")]
        )
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"\r\nX-FEServer: " in head
        assert b"X-MS-PolicyKey: 1\r\n" in body
        assert b"X-Forwarded-For: 127.0.0.1\r\n" in body
        assert b"6.6.6.6" not in body  # not a trusted proxy: replaced, not appended to

        # The doctor, pointed at HAProxy as the VIP, agrees: MB1/ews down, everything else fine.
        rows = thread_lab.run(doctor(parse_config(text)))
        bad = [(r.check, r.target) for r in rows if r.status == "fail"]
        assert bad == [("health", "MB1/ews")], rows
        same = [r for r in rows if r.check == "same certificate as the listener"]
        assert [r.status for r in same] == ["ok", "ok", "ok"]
        assert failed(rows)
    finally:
        proc.stop()


async def doctor(config: Config) -> list[Row]:
    transport, _, dns_port = await start_dns({NAMESPACE: ["127.0.0.1"], AUTODISCOVER: ["127.0.0.1"]})
    try:
        return await run_doctor(config, nameservers=[("127.0.0.1", dns_port)])
    finally:
        transport.close()


def raw_exchange(
    port: int, ca: Path, path: str, headers: list[tuple[str, str]], host: str = NAMESPACE
) -> bytes:
    """One request (SNI the namespace, Host `host`) with the given header spelling; the raw response
    bytes, to see header case."""
    ctx = tls_context(ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=NAMESPACE) as tls,
    ):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data
