"""`doctor --user` over real sockets: a client's log-on through the balancer (doctor/wire.py `fetch`)
against the simulated servers' NTLM acceptor, with Extended Protection; and the whole check against
the lab's servers as installed, moved to the namespace through their settings, and one set back."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from casarray.cli import app
from casarray.config import load_config
from casarray.doctor.client import ClientOptions, ClientReport, run_client_check
from casarray.doctor.reply import offered_schemes
from casarray.doctor.rows import UrlRow
from casarray.doctor.wire import Credentials, Fetched, fetch
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas, parse_description
from tests.integration.conftest import L7Lab, in_loop, post_sim_settings
from tests.integration.test_doctor import start_dns
from tests.support import DOMAIN, NAMESPACE, free_port, https_request


def start_sims(lab: L7Lab, *, extended_protection: bool) -> None:
    for i in range(1, 4):
        sim = SimCas(
            f"MB{i}",
            certificate=lab.pki.certificate,
            key=lab.pki.key,
            host=f"127.0.0.{i + 1}",
            ntlm_users=lab.users_file,
            extended_protection=extended_protection,
        )
        lab.loop.run(sim.start())
        lab.sims[sim.name] = sim


@pytest.mark.parametrize("mode", ["l4", "l7"])
def test_a_client_logs_on_with_ntlm_bound_to_the_tls_channel(
    tmp_path: Path, pki: CertFiles, mode: str
) -> None:
    """The check logs on as Outlook does: NTLM on one connection, the channel binding of the certificate
    it saw (Extended Protection), through either mode; a wrong password is a refusal, not an error."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    with in_loop(L7Lab, tmp_path, pki) as lab:
        start_sims(lab, extended_protection=True)
        http_port = free_port() if mode == "l7" else None
        _, port = lab.balancer(mode=mode, http_port=http_port)

        def get(credentials: Credentials | None) -> Fetched:
            return asyncio.run(
                fetch(
                    "127.0.0.1",
                    port,
                    NAMESPACE,
                    "GET",
                    "/EWS/Exchange.asmx",
                    context,
                    10.0,
                    credentials=credentials,
                )
            )

        anonymous = get(None)
        assert anonymous.reply is not None
        assert anonymous.reply.status == 401
        assert offered_schemes(anonymous.reply.all("WWW-Authenticate")) == ["NTLM", "Negotiate"]
        assert anonymous.auth is None
        assert not anonymous.refused

        good = get(Credentials("CORP\\user07", "Pass-user07"))
        assert good.reply is not None, good
        assert (good.reply.status, good.auth, good.refused) == (200, "NTLM", False)
        assert parse_description(good.reply.body.decode())["user"] == "CORP\\user07"
        assert good.reply.fe_server in {"MB1", "MB2", "MB3"}

        wrong = get(Credentials("CORP\\user07", "not-the-password"))
        assert wrong.reply is not None
        assert wrong.reply.status == 401
        assert (wrong.auth, wrong.refused) == ("NTLM", True)

        unknown = get(Credentials("nobody@alwayshotcafe.com", "whatever"))
        assert unknown.refused

        if http_port is not None:
            # Plain http, as the HTTP redirect method asks (no TLS context): the l7 listener sends it to
            # the same path on the namespace, never to a name the client wrote.
            plain = asyncio.run(
                fetch(
                    "127.0.0.1", http_port, AUTODISCOVER, "GET", "/Autodiscover/Autodiscover.xml", None, 10.0
                )
            )
            assert plain.reply is not None
            assert plain.reply.status == 301
            assert (
                plain.reply.header("Location") == f"https://{NAMESPACE}:{port}/Autodiscover/Autodiscover.xml"
            )


# -- the whole check against the lab's servers, through the balancer ----------------------------------

LOGIN = ("ALWAYSHOTCAFE", "alice", "Passw0rd!")
ADDRESS = f"alice@{DOMAIN}"
AUTODISCOVER = f"autodiscover.{DOMAIN}"
# Every client-access setting, as the namespace script sets it (Set-<Type>VirtualDirectory; the
# Autodiscover vdir keeps no URL; PowerShell stays on the servers).
VDIR_PATHS = {
    "Owa": "/owa",
    "Ecp": "/ecp",
    "WebServices": "/EWS/Exchange.asmx",
    "Mapi": "/mapi",
    "Oab": "/OAB",
    "ActiveSync": "/Microsoft-Server-ActiveSync",
}


class ClientLab:
    """Three sims with alice's account, the l4 balancer in front (a `casarray run` process), and a DNS
    server that knows the namespace and the Autodiscover name (→ the VIP) and the servers' names."""

    def __init__(self, lab: L7Lab) -> None:
        self.lab = lab
        users = lab.dir / "users.txt"
        users.write_text(":".join(LOGIN) + "\n")
        for i in range(1, 4):
            sim = SimCas(
                f"MB{i}",
                certificate=lab.pki.certificate,
                key=lab.pki.key,
                host=f"127.0.0.{i + 1}",
                domain=DOMAIN,
                ntlm_users=users,
                extended_protection=True,
            )
            lab.loop.run(sim.start())
            lab.sims[sim.name] = sim
        proc, self.port = lab.balancer(mode="l4")
        self.config = load_config(Path(proc.args[-1]))
        records = {NAMESPACE: ["127.0.0.1"], AUTODISCOVER: ["127.0.0.1"]}
        records |= {sim.fqdn: [sim.host] for sim in lab.sims.values()}
        self.dns, _, dns_port = cast(
            "tuple[asyncio.DatagramTransport, object, int]", lab.loop.run(start_dns(records))
        )
        self.nameservers = [("127.0.0.1", dns_port)]
        self.password = lab.dir / "alice.pw"
        self.password.write_text(LOGIN[2] + "\n")

    def close(self) -> None:
        self.dns.close()

    def check(self, password: str = LOGIN[2], **options: Any) -> ClientReport:
        credentials = Credentials(f"{LOGIN[0]}\\{LOGIN[1]}", password)
        given = ClientOptions(ADDRESS, credentials=credentials, nameservers=self.nameservers, **options)
        return asyncio.run(run_client_check(self.config, given))

    def set(self, sim: SimCas, change: dict[str, Any]) -> None:
        """One Set-… on one server, through its control port (POST /_sim/settings)."""
        post_sim_settings(sim.host, sim.port, self.lab.pki.ca, change, host=sim.fqdn)

    def move_to_the_namespace(self, sim: SimCas) -> None:
        base = f"https://{NAMESPACE}:{self.port}"
        for kind, path in VDIR_PATHS.items():
            urls = {"InternalUrl": base + path, "ExternalUrl": base + path}
            self.set(sim, {"Kind": "VirtualDirectory", "Type": kind, "Set": urls})
        hosts = {
            "InternalHostname": NAMESPACE,
            "ExternalHostname": NAMESPACE,
            "ExternalClientsRequireSsl": True,
        }
        self.set(sim, {"Kind": "OutlookAnywhere", "Set": hosts})
        scp = f"https://{AUTODISCOVER}:{self.port}/Autodiscover/Autodiscover.xml"
        self.set(sim, {"Kind": "ClientAccessService", "Set": {"AutoDiscoverServiceInternalUri": scp}})


@pytest.fixture
def client_lab(tmp_path: Path, pki: CertFiles) -> Iterator[ClientLab]:
    with in_loop(L7Lab, tmp_path, pki) as lab:
        found = ClientLab(lab)
        try:
            yield found
        finally:
            found.close()


def failing(report: ClientReport) -> list[UrlRow]:
    return [row for row in report.urls if row.status == "fail"]


def test_the_procedure_as_installed_then_on_the_namespace_then_one_server_set_back(
    client_lab: ClientLab,
) -> None:
    # As installed: every server tells Outlook and phones URLs on its own name.
    report = client_lab.check()
    assert report.failed
    hosts = {urlsplit(row.url).hostname for row in failing(report)}
    assert hosts == {"mb1.alwayshotcafe.com", "mb2.alwayshotcafe.com", "mb3.alwayshotcafe.com"}
    mb2_ews = next(r for r in failing(report) if r.url == "https://mb2.alwayshotcafe.com/EWS/Exchange.asmx")
    assert "mb2.alwayshotcafe.com is not outlook.alwayshotcafe.com" in mb2_ews.on_namespace
    assert mb2_ews.via_vip.startswith("no: → 127.0.0.3")  # the server's own address, not the VIP
    assert "MB2" in mb2_ews.told_by
    # Autodiscover itself was found through the VIP, on the Autodiscover name, and every server asked.
    found = [s for s in report.steps if s.status == "ok" and "settings" in s.detail]
    assert found[0].target == f"https://{AUTODISCOVER}:{client_lab.port}/Autodiscover/Autodiscover.xml"
    assert {d.split("answered by ")[1].rstrip(")") for d in (s.detail for s in found)} == {
        "MB1",
        "MB2",
        "MB3",
    }
    # Outlook 2016 (MAPI/HTTP) is told the mapiHttp and WEB sections, as the dialog would list them.
    shown = "\n".join(report.autoconfiguration)
    assert "  Protocol: Exchange MAPI/HTTP\n    MailStore Internal URL: https://mb" in shown
    assert "    Internal EXCH Availability Service URL: https://mb" in shown

    # Every server's settings moved to the namespace: everything passes, through the VIP.
    for sim in client_lab.lab.sims.values():
        client_lab.move_to_the_namespace(sim)
    report = client_lab.check()
    assert [r for r in report.urls if r.status == "fail"] == []
    assert [s for s in report.steps if s.status == "fail"] == []
    assert not report.failed
    protocols = {row.protocol for row in report.urls}
    for expected in (
        "mapiHttp MailStore InternalUrl",
        "EXCH EwsUrl",
        "EXPR Server",
        "WEB External OWAUrl",
        "MobileSync Url",
        "v2 EWS Url",
        "v2 ActiveSync Url",
    ):
        assert expected in protocols
    for row in report.urls:
        assert row.on_namespace == "yes", row
        assert row.via_vip == "yes", row
        assert row.answered_by in {"MB1", "MB2", "MB3"}, row
    rpc = next(r for r in report.urls if r.protocol == "EXPR Server")
    assert rpc.url == f"https://{NAMESPACE}:{client_lab.port}/rpc/rpcproxy.dll"
    assert "401" in rpc.detail
    told = {s for row in report.urls for s in row.told_by.split(", ")}
    assert {"MB1", "MB2", "MB3"} <= told

    # One server set back: MB2 tells clients its own name for EWS; that URL, and only it, fails.
    mb2 = client_lab.lab.sims["MB2"]
    wrong = "https://mb2.alwayshotcafe.com/EWS/Exchange.asmx"
    client_lab.set(mb2, {"Kind": "VirtualDirectory", "Type": "WebServices", "Set": {"ExternalUrl": wrong}})
    report = client_lab.check()
    assert report.failed
    assert {row.url for row in failing(report)} == {wrong}
    assert all(row.told_by == "MB2" for row in failing(report))


def test_a_wrong_password_is_an_authentication_failure_and_no_password_asks_for_one(
    client_lab: ClientLab,
) -> None:
    report = client_lab.check(password="not-alice's")
    assert report.failed
    refused = [s for s in report.steps if "authentication failed" in s.detail]
    assert len(refused) == 1  # Outlook stops there; the phone and v2 are not asked with it again
    assert refused[0].status == "fail"
    assert "refused the credentials of ALWAYSHOTCAFE\\alice (NTLM, then 401 again)" in refused[0].detail
    assert report.urls == ()

    anonymous = asyncio.run(
        run_client_check(client_lab.config, ClientOptions(ADDRESS, nameservers=client_lab.nameservers))
    )
    asked = [s for s in anonymous.steps if "asks for credentials" in s.detail]
    assert len(asked) == 1
    assert "NTLM, Negotiate, Basic" in asked[0].detail
    assert "--password-file" in asked[0].detail


def test_the_scp_a_domain_joined_outlook_reads_comes_first(client_lab: ClientLab) -> None:
    """With the SCP URLs (here as installed: each server's own name), Outlook tries them before DNS; they
    lead past the balancer and fail, and Outlook falls back to autodiscover.<domain>."""
    scp = [f"https://{sim.fqdn}/Autodiscover/Autodiscover.xml" for sim in client_lab.lab.sims.values()]
    report = client_lab.check(scp=tuple(scp))
    scp_rows = [r for r in report.urls if r.protocol == "SCP"]
    assert [r.url for r in scp_rows] == scp
    assert all(r.status == "fail" and r.told_by == "Active Directory (SCP)" for r in scp_rows)
    outlook = [s for s in report.steps if s.check == "Autodiscover for Outlook"]
    assert [s.target for s in outlook[:3]] == scp
    assert all("outside the balancer" in s.detail for s in outlook[:3])
    log = "\n".join(report.autoconfiguration)
    assert f"Attempting URL {scp[0]} found through SCP" in log


def test_the_command_line(client_lab: ClientLab) -> None:
    for sim in client_lab.lab.sims.values():
        client_lab.move_to_the_namespace(sim)
    config = client_lab.lab.procs[0].args[-1]
    nameserver = f"127.0.0.1:{client_lab.nameservers[0][1]}"
    base = ["doctor", "-c", config, "--nameserver", nameserver, "--user", ADDRESS]
    login = ["--password-file", str(client_lab.password), "--login", f"{LOGIN[0]}\\{LOGIN[1]}"]
    runner = CliRunner()
    table = runner.invoke(app, [*base, *login])
    assert table.exit_code == 0, table.output
    for text in (
        "Finding Autodiscover",
        "URL told",
        "On namespace",
        "Via VIP",
        "Answered by",
        "Protocol: Exchange MAPI/HTTP",
    ):
        assert text in table.stdout
    assert LOGIN[2] not in table.stdout
    # The SCP URLs from an inventory of the servers (what `namespace collector` writes; here each sim's
    # GET /_sim/settings, put together), as a domain-joined Outlook reads them from Active Directory.
    documents = [
        json.loads(https_request(s.host, s.port, "/_sim/settings", client_lab.lab.pki.ca, host=s.fqdn).body)
        for s in client_lab.lab.sims.values()
    ]
    inventory = client_lab.lab.dir / "inventory.json"
    inventory.write_text(json.dumps({key: [e for d in documents for e in d[key]] for key in documents[0]}))
    result = runner.invoke(app, [*base, *login, "--inventory", str(inventory), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert set(document) == {"user", "ok", "steps", "urls", "autoconfiguration"}
    scp = f"https://{AUTODISCOVER}:{client_lab.port}/Autodiscover/Autodiscover.xml"
    assert [(u["protocol"], u["url"], u["status"]) for u in document["urls"] if u["protocol"] == "SCP"] == [
        ("SCP", scp, "ok")
    ]
    assert document["steps"][0]["detail"].startswith("SCP: settings")
    wrong = client_lab.lab.dir / "wrong.pw"
    wrong.write_text("nope\n")
    refused = runner.invoke(
        app, [*base, "--password-file", str(wrong), "--login", "ALWAYSHOTCAFE\\alice", "--json"]
    )
    assert refused.exit_code == 1
    assert any("authentication failed" in s["detail"] for s in json.loads(refused.stdout)["steps"])
    usage = runner.invoke(app, ["doctor", "-c", config, "--scp", "https://x/Autodiscover/Autodiscover.xml"])
    assert usage.exit_code == 2
    assert "only with --user" in usage.output
