"""The simulated mail front ends on real loopback sockets: Python's imaplib, poplib and smtplib, the
mail health check, the /_sim/mail controls, and `casarray sim-cas --imap …` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import poplib
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from casarray.health.mail import MailProbe, MailProtocolName, probe_mail
from casarray.health.state import CheckResult
from casarray.lab.pki import CertFiles
from casarray.lab.sim_mail import Credentials, MailPort, MailSimCas, SimMail, banner_server
from tests.support import NAMESPACE, LoopThread, Proc, casarray, free_port, https_request

HOST = "127.0.0.2"
USERS = Credentials([("ALWAYSHOTCAFE", "alice", "Passw0rd!")], "alwayshotcafe.com")
LABELS = ("imap", "imaps", "pop3", "pop3s", "smtp", "submission", "smtps")


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def sim(loop: LoopThread, pki: CertFiles) -> Iterator[MailSimCas]:
    ports = [
        MailPort("imap", free_port(HOST)),
        MailPort("imap", free_port(HOST), implicit_tls=True),
        MailPort("pop3", free_port(HOST)),
        MailPort("pop3", free_port(HOST), implicit_tls=True),
        MailPort("smtp", free_port(HOST)),
        MailPort("smtp", free_port(HOST), submission=True),
        MailPort("smtp", free_port(HOST), implicit_tls=True, submission=True),
    ]
    mail = SimMail("MB1", certificate=pki.certificate, key=pki.key, ports=ports, host=HOST, credentials=USERS)
    sim = MailSimCas("MB1", mail=mail, certificate=pki.certificate, key=pki.key, host=HOST)
    loop.run(sim.start())
    try:
        yield sim
    finally:
        loop.run(sim.stop())


def port(sim: MailSimCas, label: str) -> int:
    return next(p.port for p in sim.mail.ports if p.label == label)


def ctx(pki: CertFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def check(
    loop: LoopThread, sim: MailSimCas, pki: CertFiles, label: str, starttls: bool = True
) -> CheckResult:
    protocol: MailProtocolName = "imap" if "imap" in label else "pop3" if "pop3" in label else "smtp"
    probe = MailProbe(
        protocol,
        HOST,
        port(sim, label),
        label in ("imaps", "pop3s", "smtps"),
        NAMESPACE,
        ctx(pki),
        2.0,
        starttls,
    )
    result = loop.run(probe_mail(probe))
    assert isinstance(result, CheckResult)
    return result


def test_clients_log_in(sim: MailSimCas, pki: CertFiles) -> None:
    imap = imaplib.IMAP4(HOST, port(sim, "imap"), timeout=5)
    try:
        assert banner_server(imap.welcome) == "MB1.alwayshotcafe.com"
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(ssl_context=ctx(pki))
        assert imap.login("ALWAYSHOTCAFE\\alice", "Passw0rd!")[0] == "OK"
        assert imap.select("INBOX") == ("OK", [b"0"])
        assert imap.logout()[0] == "BYE"
    finally:
        with contextlib.suppress(OSError):  # already closed after LOGOUT
            imap.shutdown()
    with imaplib.IMAP4_SSL(HOST, port(sim, "imaps"), ssl_context=ctx(pki), timeout=5) as imaps:
        with pytest.raises(imaplib.IMAP4.error):
            imaps.login("alice", "wrong")
        assert imaps.login("alice@alwayshotcafe.com", "Passw0rd!")[0] == "OK"
    pop = poplib.POP3(HOST, port(sim, "pop3"), timeout=5)
    try:
        pop.stls(ctx(pki))
        pop.user("alice")
        pop.pass_("Passw0rd!")
        assert pop.stat() == (0, 0)
        pop.quit()
    finally:
        pop.close()
    pops = poplib.POP3_SSL(HOST, port(sim, "pop3s"), context=ctx(pki), timeout=5)
    try:
        assert banner_server(pops.getwelcome()) == "MB1.alwayshotcafe.com"
        pops.quit()
    finally:
        pops.close()
    with smtplib.SMTP(HOST, port(sim, "smtp"), timeout=5) as smtp:
        smtp.starttls(context=ctx(pki))
        smtp.sendmail("bob@example.net", ["alice@alwayshotcafe.com"], "Subject: hi\r\n\r\nhello\r\n")
    with smtplib.SMTP(HOST, port(sim, "submission"), timeout=5) as submission:
        submission.starttls(context=ctx(pki))
        with pytest.raises(smtplib.SMTPSenderRefused):
            submission.sendmail("alice@alwayshotcafe.com", ["x@example.net"], "Subject: no\r\n\r\n")
        submission.login("alice", "Passw0rd!")
        submission.sendmail("alice@alwayshotcafe.com", ["x@example.net"], "Subject: yes\r\n\r\n")
    with smtplib.SMTP_SSL(HOST, port(sim, "smtps"), context=ctx(pki), timeout=5) as smtps:
        smtps.login("alice", "Passw0rd!")
    state = sim.snapshot()["mail"]
    assert state["received"] == 2
    assert state["logins"] == 5  # imap, imaps, pop3, submission, smtps
    assert state["protocols"]["smtp"]["ports"]["submission"] == port(sim, "submission")


def test_checks_follow_the_controls(loop: LoopThread, sim: MailSimCas, pki: CertFiles) -> None:
    for label in LABELS:
        result = check(loop, sim, pki, label)
        assert (result.ok, result.code) == (True, "L7OK"), (label, result)

    def control(path: str) -> dict[str, object]:
        resp = https_request(HOST, sim.port, path, pki.ca, method="POST", host=HOST)
        assert resp.status == 200, resp
        data = json.loads(resp.body)
        assert isinstance(data, dict)
        return data

    state = control("/_sim/mail/imap/broken")
    assert state["mail"]["protocols"]["imap"]["state"] == "broken"  # type: ignore[index]
    result = check(loop, sim, pki, "imaps")
    assert (result.ok, result.code) == (False, "L7RSP")
    assert "* BYE Service unavailable" in result.reason
    assert check(loop, sim, pki, "pop3").ok
    control("/_sim/mail/pop3/down")  # PopProxy Inactive: the service stops
    assert check(loop, sim, pki, "pop3s").code == "L4CON"
    assert check(loop, sim, pki, "smtp").ok
    control("/_sim/mail/up")
    assert all(check(loop, sim, pki, label).ok for label in LABELS)
    control("/_sim/server/down")  # ServerWideOffline takes the mail components with it
    assert check(loop, sim, pki, "smtp").code == "L4CON"
    assert https_request(HOST, sim.port, "/owa/healthcheck.htm", pki.ca).status == 503
    control("/_sim/server/up")
    assert check(loop, sim, pki, "imap").ok
    control("/_sim/mail/smtp/broken")
    control("/_sim/reset")
    assert check(loop, sim, pki, "smtp").ok


def test_down_drops_open_sessions(sim: MailSimCas, pki: CertFiles) -> None:
    imap = imaplib.IMAP4_SSL(HOST, port(sim, "imaps"), ssl_context=ctx(pki), timeout=5)
    try:
        https_request(HOST, sim.port, "/_sim/mail/imap/down", pki.ca, method="POST", host=HOST)
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            imap.noop()
    finally:
        with contextlib.suppress(OSError):  # already closed after LOGOUT
            imap.shutdown()


def test_controls_refuse_the_namespace_and_bad_paths(sim: MailSimCas, pki: CertFiles) -> None:
    assert https_request(HOST, sim.port, "/_sim/mail/down", pki.ca, method="POST").status == 403
    for path in ("/_sim/mail/nntp/down", "/_sim/mail/imap/sideways", "/_sim/mail"):
        assert https_request(HOST, sim.port, path, pki.ca, method="POST", host=HOST).status == 404
    assert https_request(HOST, sim.port, "/_sim/mail/up", pki.ca, host=HOST).status == 405


def test_sim_cas_process_with_mail(tmp_path: Path, pki: CertFiles) -> None:
    ports = {label: free_port(HOST) for label in ("imap", "pop3s", "smtp")}
    web = free_port(HOST)
    proc = Proc(
        casarray("sim-cas", "--name", "MB2", "--listen", f"{HOST}:{web}", "--cert", str(pki.certificate),
                 "--key", str(pki.key), *(a for label, p in ports.items() for a in (f"--{label}", str(p)))),
        tmp_path / "sim.log",
    )  # fmt: skip
    try:
        proc.wait_log("mail on")
        assert f"sim-cas MB2 mail on imap {HOST}:{ports['imap']}, pop3s {HOST}:{ports['pop3s']}" in proc.log
        result = asyncio.run(
            probe_mail(MailProbe("pop3", HOST, ports["pop3s"], True, NAMESPACE, ctx(pki), 2.0))
        )
        assert result.ok, result
        with smtplib.SMTP(HOST, ports["smtp"], timeout=5) as smtp:
            assert smtp.ehlo()[0] == 250
    finally:
        assert proc.stop() == 0


def test_sim_cas_refuses_clashing_ports(tmp_path: Path, pki: CertFiles) -> None:
    web = free_port(HOST)
    proc = Proc(
        casarray("sim-cas", "--name", "MB2", "--listen", f"{HOST}:{web}", "--cert", str(pki.certificate),
                 "--key", str(pki.key), "--imap", str(web)),
        tmp_path / "sim.log",
    )  # fmt: skip
    assert proc.popen.wait(30) == 1
    proc.stop()
    assert "error: each mail port must differ" in proc.log
