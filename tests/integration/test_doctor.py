"""`casarray doctor` against simulated Exchange servers, the l4 balancer and a test DNS server.

Everything runs on 127.0.0.0/8: the sims on 127.0.0.2-4, the balancer (the VIP) and the DNS server on
127.0.0.1. `ThreadLab` (also used by test_export_haproxy.py) runs them on an event loop in a thread so a
synchronous test, a CLI runner or a subprocess can talk to them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Coroutine, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from casarray.cli import app
from casarray.config import Config, parse_config
from casarray.doctor import certs, failed, run_doctor
from casarray.doctor.rows import Row
from casarray.doctor.wire import Answer, get_via
from casarray.engine.balancer import Balancer
from casarray.exchange.namespace.dns import DnsRecord
from casarray.lab.dns import LabDns, serve_dns
from casarray.lab.pki import CertFiles, LabCa, make_other_pki
from casarray.lab.sim import SimCas
from tests.integration.test_health_checks import INTERIM_THEN_CHUNKED, serve_parts
from tests.support import DOMAIN, NAMESPACE, free_port, wait_until

T = TypeVar("T")
AUTODISCOVER = f"autodiscover.{DOMAIN}"
SIM_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
FAST_HEALTH = "{interval: 200ms, timeout: 1s, rise: 1, fall: 1}"


def dns_records(records: dict[str, list[str]]) -> list[DnsRecord]:
    """name → addresses, or ["CNAME", target], as records of the name's parent zone."""
    found = []
    for name, values in records.items():
        zone = name.split(".", 1)[1]
        if values[:1] == ["CNAME"]:
            found.append(DnsRecord(zone, name, "CNAME", values[1]))
        else:
            found += [DnsRecord(zone, name, "AAAA" if ":" in v else "A", v) for v in values]
    return found


async def start_dns(records: dict[str, list[str]]) -> tuple[asyncio.DatagramTransport, LabDns, int]:
    """The lab's DNS server (casarray.lab.dns) on 127.0.0.1 with these names only."""
    port = free_port()
    transport, server = await serve_dns(dns_records(records), "127.0.0.1", port)
    return transport, server, port


async def start_sims(pki: CertFiles, certificates: Sequence[CertFiles] = ()) -> list[SimCas]:
    sims = []
    for i, ip in enumerate(SIM_IPS):
        files = certificates[i] if i < len(certificates) else pki
        sim = SimCas(f"MB{i + 1}", certificate=files.certificate, key=files.key, host=ip)
        await sim.start()
        sims.append(sim)
    return sims


def servers_yaml(sims: Sequence[SimCas]) -> str:
    return "".join(f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}\n" for s in sims)


def l4_config(pki: CertFiles, sims: Sequence[SimCas], port: int, extra: str = "") -> Config:
    return parse_config(
        f"namespace: {NAMESPACE}\nautodiscover: {AUTODISCOVER}\nmode: l4\n"
        f"listen: {{address: 127.0.0.1, https_port: {port}}}\nupstream_tls: {{ca: {pki.ca}}}\n"
        f"servers:\n{servers_yaml(sims)}health: {FAST_HEALTH}\n" + extra
    )


def by(rows: Sequence[Row], check: str) -> list[Row]:
    return [row for row in rows if row.check == check]


class ThreadLab:
    """Sims, balancer and DNS on an event loop in a thread; `run` executes a coroutine there."""

    def __init__(self, pki: CertFiles) -> None:
        self.pki = pki
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lab loop", daemon=True)
        self.thread.start()
        self.sims: list[SimCas] = []
        self.balancer: Balancer | None = None
        self.dns: asyncio.DatagramTransport | None = None
        self.dns_port = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_sims(self) -> list[SimCas]:
        self.sims = self.run(start_sims(self.pki))
        return self.sims

    def start_balancer(self, config: Config) -> None:
        async def start() -> Balancer:
            balancer = Balancer(config)
            await balancer.start()
            return balancer

        self.balancer = self.run(start())

    def start_dns(self, records: dict[str, list[str]]) -> int:
        self.dns, _, self.dns_port = self.run(start_dns(records))
        return self.dns_port

    def set_service(self, index: int, service: str, up: bool) -> None:
        sim = self.sims[index]

        async def flip() -> None:
            sim.state.set_service(service, up)

        self.run(flip())

    def close(self) -> None:
        async def stop() -> None:
            if self.balancer is not None:
                await self.balancer.stop(grace=0)
            if self.dns is not None:
                self.dns.close()
            for sim in self.sims:
                await sim.stop()
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def thread_lab(pki: CertFiles) -> Iterator[ThreadLab]:
    lab = ThreadLab(pki)
    try:
        yield lab
    finally:
        lab.close()


# -- the library -----------------------------------------------------------------------------------


def test_l4_deployment_is_all_ok_and_names_the_answering_servers(pki: CertFiles) -> None:
    async def main() -> None:
        sims = await start_sims(pki)
        dns_transport, fake, dns_port = await start_dns(
            {NAMESPACE: ["127.0.0.1"], AUTODISCOVER: ["CNAME", NAMESPACE]}
        )
        config = l4_config(pki, sims, free_port())
        balancer = Balancer(config)
        await balancer.start()
        nameservers = [("127.0.0.1", dns_port)]
        try:
            rows = await run_doctor(config, nameservers=nameservers)
            assert [r for r in rows if r.status != "ok"] == []
            dns_rows = by(rows, "name resolves to the VIP")
            assert [r.target for r in dns_rows] == [NAMESPACE, AUTODISCOVER]
            assert dns_rows[0].detail == f"→ 127.0.0.1 (DNS 127.0.0.1:{dns_port})"
            assert f"via CNAME {NAMESPACE}" in dns_rows[1].detail
            certificates = by(rows, "server certificate")
            assert [r.target for r in certificates] == ["MB1", "MB2", "MB3"]
            assert f"covers {AUTODISCOVER}" in certificates[0].detail
            assert by(rows, "servers share one certificate")[0].status == "ok"
            health = by(rows, "health")
            assert len(health) == 3 * 9
            assert health[0].target == "MB1/owa"
            assert health[0].detail.startswith("L7OK 200 OK MB1.alwayshotcafe.com")
            via = by(rows, "health via the VIP")
            assert [r.target for r in via][-1] == f"autodiscover ({AUTODISCOVER})"
            assert len(via) == 9 + 1
            answered = {r.detail.split(":", 1)[0] for r in via}
            assert answered <= {"answered by MB1", "answered by MB2", "answered by MB3"}
            assert len(answered) >= 2  # round robin through the balancer
            assert not failed(rows)

            # A service down on one server: its direct check fails, the report fails; once the
            # balancer has taken MB2 out, requests through the VIP still succeed.
            sims[1].state.set_service("ews", False)
            for _ in range(250):
                if not balancer.servers[1].members["ews"].health.up:
                    break
                await asyncio.sleep(0.02)
            rows = await run_doctor(config, nameservers=nameservers)
            bad = [r for r in rows if r.status == "fail"]
            assert [r.target for r in bad] == ["MB2/ews"]
            assert "L7STS HTTP 503" in bad[0].detail
            assert "l4: MB2 takes no connections while ews is down" in bad[0].detail
            sims[1].state.set_service("ews", True)

            # DNS pointing elsewhere fails; the VIP plus another address warns.
            fake.records = dns_records(
                {NAMESPACE: ["10.9.9.9"], AUTODISCOVER: ["127.0.0.1", "10.9.9.9", "::9"]}
            )
            rows = await run_doctor(config, nameservers=nameservers)
            first, second = by(rows, "name resolves to the VIP")
            assert (first.status, second.status) == ("fail", "warn")
            assert "10.9.9.9 (DNS" in first.detail
            assert "10.9.9.9, ::9 is not the VIP 127.0.0.1" in second.detail
            fake.records = dns_records({AUTODISCOVER: ["127.0.0.1"]})  # the namespace gone
            rows = await run_doctor(config, nameservers=nameservers)
            assert by(rows, "name resolves to the VIP")[0].detail.startswith("no such name (NXDOMAIN")
        finally:
            await balancer.stop(grace=0)
            dns_transport.close()
            for sim in sims:
                await sim.stop()

    asyncio.run(main())


def test_l4_server_certificates_that_do_not_fit_fail(pki: CertFiles, tmp_path: Path) -> None:
    # MB2: right CA, but no Autodiscover name (l4 clients see this certificate); MB3: another CA.
    ca = LabCa.load(pki.ca, pki.ca.parent / "ca.key")
    narrow = ca.issue(tmp_path / "narrow", [NAMESPACE, "127.0.0.3"], stem="narrow")
    other = make_other_pki(tmp_path / "other", [NAMESPACE, AUTODISCOVER])

    async def main() -> list[Row]:
        sims = await start_sims(pki, [pki, narrow, other])
        dns_transport, _, dns_port = await start_dns({})
        try:
            return await run_doctor(l4_config(pki, sims, free_port()), nameservers=[("127.0.0.1", dns_port)])
        finally:
            dns_transport.close()
            for sim in sims:
                await sim.stop()

    rows = asyncio.run(main())
    mb1, mb2, mb3 = by(rows, "server certificate")
    assert mb1.status == "ok"
    assert mb2.status == "fail"
    assert f"does not cover {AUTODISCOVER}" in mb2.detail
    assert mb3.status == "fail"
    assert "certificate rejected" in mb3.detail
    assert "casarray other CA" in mb3.detail  # what it presents, fetched without verification
    (shared,) = by(rows, "servers share one certificate")
    assert shared.status == "warn"
    assert "3 different certificates" in shared.detail
    # MB3's checks fail verification like the balancer's would
    assert all(
        r.status == "fail" and "L6RSP" in r.detail for r in by(rows, "health") if r.target.startswith("MB3")
    )


def test_l7_listener_certificate_must_be_the_servers_own(pki: CertFiles, tmp_path: Path) -> None:
    other = make_other_pki(tmp_path / "other", [NAMESPACE, AUTODISCOVER])

    def l7(sims: Sequence[SimCas], cert: Path, key: Path) -> Config:
        return parse_config(
            f"namespace: {NAMESPACE}\nautodiscover: {AUTODISCOVER}\nmode: l7\n"
            f"listen: {{address: 127.0.0.1, https_port: {free_port()}}}\n"
            f"tls: {{certificate: {cert}, key: {key}}}\nupstream_tls: {{ca: {pki.ca}}}\n"
            f"servers:\n{servers_yaml(sims)}services: [owa, ews]\nhealth: {FAST_HEALTH}\n"
        )

    async def main() -> tuple[list[Row], list[Row], list[Row], list[Row]]:
        sims = await start_sims(pki)
        dns_transport, _, dns_port = await start_dns({})
        nameservers = [("127.0.0.1", dns_port)]
        try:
            same = await run_doctor(l7(sims, pki.certificate, pki.key), nameservers=nameservers)
            different = await run_doctor(l7(sims, other.certificate, other.key), nameservers=nameservers)
            mismatch = await run_doctor(l7(sims, pki.certificate, other.key), nameservers=nameservers)
            expiry = certs_not_after(pki.certificate)
            late = await run_doctor(
                l7(sims, pki.certificate, pki.key), nameservers=nameservers, now=expiry - timedelta(days=10)
            )
            return same, different, mismatch, late
        finally:
            dns_transport.close()
            for sim in sims:
                await sim.stop()

    same, different, mismatch, late = asyncio.run(main())
    assert by(same, "listener certificate")[0].status == "ok"
    assert "key matches" in by(same, "listener certificate")[0].detail
    assert [r.status for r in by(same, "listener certificate covers")] == ["ok", "ok"]
    assert [(r.target, r.status) for r in by(same, "same certificate as the listener")] == [
        ("MB1", "ok"),
        ("MB2", "ok"),
        ("MB3", "ok"),
    ]
    assert all(r.status == "ok" for r in by(same, "health"))
    # nothing listens on the VIP in this test: those rows fail, and say so
    assert all(r.status == "fail" and "L4CON" in r.detail for r in by(same, "health via the VIP"))

    warned = by(different, "same certificate as the listener")
    assert [r.status for r in warned] == ["warn"] * 3
    assert "Extended Protection" in warned[0].detail
    assert by(mismatch, "listener certificate")[0].status == "fail"
    assert "does not belong" in by(mismatch, "listener certificate")[0].detail
    validity = by(late, "listener certificate validity")[0]
    assert (validity.status, "expires in 10 days" in validity.detail) == ("warn", True)


def certs_not_after(path: Path) -> datetime:
    return certs.facts(certs.load_pem_chain(path.read_bytes())[0]).not_after


# -- the command line ------------------------------------------------------------------------------


def test_cli_table_json_and_exit_codes(thread_lab: ThreadLab, tmp_path: Path) -> None:
    sims = thread_lab.start_sims()
    port = free_port()
    config_text = (
        f"namespace: {NAMESPACE}\nmode: l4\nlisten: {{address: 127.0.0.1, https_port: {port}}}\n"
        f"upstream_tls: {{ca: {thread_lab.pki.ca}}}\nservers:\n{servers_yaml(sims)}"
        f"services: [owa, ews, mapi]\nhealth: {FAST_HEALTH}\n"
    )
    path = tmp_path / "casarray.yaml"
    path.write_text(config_text)
    thread_lab.start_balancer(parse_config(config_text))
    dns_port = thread_lab.start_dns({NAMESPACE: ["127.0.0.1"]})
    runner = CliRunner()
    base = ["doctor", "-c", str(path), "--nameserver", f"127.0.0.1:{dns_port}"]

    result = runner.invoke(app, [*base, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["status"] for row in rows} == {"ok"}
    assert set(rows[0]) == {"check", "target", "status", "detail"}

    table = runner.invoke(app, base)
    assert table.exit_code == 0
    assert "health via the VIP" in table.stdout
    assert "0 failures" in table.stdout

    thread_lab.set_service(2, "mapi", False)
    assert thread_lab.balancer is not None
    member = thread_lab.balancer.servers[2].members["mapi"]
    wait_until(lambda: not member.health.up, 5, what="the balancer to take MB3 out")
    down = runner.invoke(app, [*base, "--json"])
    assert down.exit_code == 1
    assert [r["target"] for r in json.loads(down.stdout) if r["status"] == "fail"] == ["MB3/mapi"]
    # The report ends with one line per server and per service, then the verdict.
    ends = runner.invoke(app, base).stdout.split("Summary", 1)[1].splitlines()
    assert any(
        "MB3" in line and "fail" in line and "2 of 3 services healthy (failing: mapi)" in line
        for line in ends
    )
    assert any("MB1" in line and "ok" in line and "3 of 3 services healthy" in line for line in ends)
    assert any("mapi" in line and "healthy on 2 of 3 servers (failing on MB3)" in line for line in ends)
    assert "1 failure" in ends[-1]

    assert runner.invoke(app, ["doctor", "-c", str(path), "--nameserver", "dns.example.com"]).exit_code == 2
    assert runner.invoke(app, ["doctor", "-c", str(tmp_path / "missing.yaml")]).exit_code == 1


def test_unreadable_ca_and_unreachable_servers_fail_without_crashing(pki: CertFiles, tmp_path: Path) -> None:
    config = parse_config(
        f"namespace: {NAMESPACE}\nmode: l4\nlisten: {{address: 127.0.0.1, https_port: {free_port()}}}\n"
        f"upstream_tls: {{ca: {tmp_path / 'missing-ca.pem'}}}\n"
        f"servers: [{{name: MB1, address: 127.0.0.2, port: {free_port('127.0.0.2')}}}]\n"
        "services: [owa]\nhealth: {timeout: 1s}\n"
    )

    async def main() -> list[Row]:
        dns_transport, _, dns_port = await start_dns({NAMESPACE: ["127.0.0.1"]})
        try:
            return await run_doctor(config, nameservers=[("127.0.0.1", dns_port)])
        finally:
            dns_transport.close()

    rows = asyncio.run(main())
    assert rows[0].check == "upstream TLS"
    assert rows[0].status == "fail"
    assert "cannot read the CA bundle" in rows[0].detail
    assert by(rows, "name resolves to the VIP")[0].status == "ok"
    assert by(rows, "server certificate")[0].detail.startswith("L4CON connect error")
    assert by(rows, "health")[0].detail.startswith("L4CON")
    assert by(rows, "health via the VIP")[0].detail.startswith("L4CON")
    assert failed(rows)


def test_via_the_vip_reads_like_the_checks(pki: CertFiles) -> None:
    """doctor reads with the proxy's framer too: a 1xx is skipped, a chunked body decoded, X-FEServer
    found; a body cut short is a bad response."""
    context = ssl.create_default_context(cafile=str(pki.ca))

    async def main(parts: Sequence[bytes]) -> Answer:
        async with serve_parts(pki, parts) as port:
            return await get_via("127.0.0.2", port, "/owa/healthcheck.htm", NAMESPACE, context, 2.0)

    good = asyncio.run(main(INTERIM_THEN_CHUNKED))
    assert (good.ok, good.code, good.reason, good.status, good.fe_server) == (
        True,
        "L7OK",
        "200 OK MB1",
        200,
        "MB1",
    )
    cut = asyncio.run(main([b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n200 OK"]))
    assert (cut.ok, cut.code, cut.status) == (False, "L7RSP", None)
    assert cut.reason.startswith("bad response")
    refused = asyncio.run(get_via("127.0.0.2", free_port("127.0.0.2"), "/", NAMESPACE, context, 1.0))
    # doctor's words for it, as before (the checks say "connect refused")
    assert (refused.code, refused.reason.startswith("connect error: ")) == ("L4CON", True)
