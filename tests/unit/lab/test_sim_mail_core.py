"""The simulated mail front ends' sans-I/O sessions, and the health checks talking to them (no sockets)."""

from __future__ import annotations

import base64

import pytest

from casarray.health.mail import Dialogue, Send, Verdict, dialogue_for
from casarray.lab.sim_mail import (
    BROKEN_GREETINGS,
    Credentials,
    ImapSession,
    MailPort,
    Pop3Session,
    SmtpSession,
    banner_server,
    parse_astrings,
    server_tag,
)

FQDN = "MB1.alwayshotcafe.com"
USERS = Credentials([("ALWAYSHOTCAFE", "alice", "Passw0rd!")], "alwayshotcafe.com")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_server_tag_is_exchanges_utf16_base64() -> None:
    # What an Exchange greeting carries for BL0PR04CA0015.namprd04.prod.outlook.com, shortened.
    assert server_tag("BL0PR") == "QgBMADAAUABSAA=="
    greeting = f"* OK The Microsoft Exchange IMAP4 service is ready. [{server_tag(FQDN)}]"
    assert banner_server(greeting) == FQDN
    assert banner_server(greeting.encode()) == FQDN
    for junk in ("* OK Dovecot ready.", "* OK [not base64!]", "+OK [QQ==]"):
        assert banner_server(junk) is None


def test_parse_astrings() -> None:
    assert parse_astrings('alice "Pass w\\"0rd!"') == ["alice", 'Pass w"0rd!']
    assert parse_astrings("ALWAYSHOTCAFE\\alice  Passw0rd!") == ["ALWAYSHOTCAFE\\alice", "Passw0rd!"]
    assert parse_astrings('"unterminated') is None
    assert parse_astrings("alice {9}") is None  # literals are not simulated


def test_credentials_accept_the_names_exchange_accepts() -> None:
    for name in ("alice", "ALICE", "alwayshotcafe\\alice", "alice@alwayshotcafe.com"):
        assert USERS.check(name, "Passw0rd!")
    assert not USERS.check("alice", "passw0rd!")
    assert not USERS.check("bob", "Passw0rd!")
    assert Credentials().open
    assert Credentials().check("anyone", "anything")
    assert not Credentials().check("", "x")


def test_mail_port_labels() -> None:
    assert [
        MailPort("imap", 143).label,
        MailPort("imap", 993, implicit_tls=True).label,
        MailPort("smtp", 587, submission=True).label,
        MailPort("smtp", 465, implicit_tls=True, submission=True).label,
    ] == ["imap", "imaps", "submission", "smtps"]


# -- IMAP ------------------------------------------------------------------------------------------


def test_imap_secure_login() -> None:
    s = ImapSession(FQDN, USERS, tls=False)
    assert s.greeting().startswith(b"* OK The Microsoft Exchange IMAP4 service is ready. [")
    caps = s.handle(b"a1 CAPABILITY").out
    assert b"STARTTLS LOGINDISABLED" in caps
    assert caps.endswith(b"a1 OK CAPABILITY completed.\r\n")
    assert s.handle(b"a2 LOGIN alice Passw0rd!").out.startswith(b"a2 NO [PRIVACYREQUIRED]")
    reply = s.handle(b"a3 STARTTLS")
    assert reply.starttls
    assert reply.out == b"a3 OK Begin TLS negotiation now.\r\n"
    s.tls = True
    assert b"STARTTLS" not in s.handle(b"a4 CAPABILITY").out
    assert s.handle(b"a5 SELECT INBOX").out == b"a5 BAD Command received in Invalid state.\r\n"
    assert s.handle(b'a6 LOGIN alice "wrong"').out == b"a6 NO LOGIN failed.\r\n"
    assert s.handle(b'a7 LOGIN "ALWAYSHOTCAFE\\\\alice" "Passw0rd!"').out == b"a7 OK LOGIN completed.\r\n"
    assert s.user == "ALWAYSHOTCAFE\\alice"
    assert s.handle(b"a8 EXAMINE INBOX").out.endswith(b"a8 OK [READ-ONLY] EXAMINE completed.\r\n")
    reply = s.handle(b"a9 LOGOUT")
    assert reply.close
    assert reply.out.startswith(b"* BYE ")
    assert reply.out.endswith(b"a9 OK LOGOUT completed.\r\n")


def test_imap_authenticate_plain() -> None:
    s = ImapSession(FQDN, USERS, tls=True)
    assert s.handle(b"a1 AUTHENTICATE PLAIN").out == b"+ \r\n"
    assert s.handle(b64("\0alice\0Passw0rd!").encode()).out == b"a1 OK AUTHENTICATE completed.\r\n"
    s = ImapSession(FQDN, USERS, tls=True)
    assert s.handle(b"a1 AUTHENTICATE PLAIN " + b64("\0alice\0nope").encode()).out.startswith(b"a1 NO")
    s.handle(b"a2 AUTHENTICATE PLAIN")
    assert s.handle(b"*").out == b"a2 BAD AUTHENTICATE cancelled.\r\n"
    assert s.handle(b"a3 AUTHENTICATE NTLM").out.startswith(b"a3 NO")
    assert s.handle(b"").out == b"* BAD Command Error. 10\r\n"
    assert s.handle(b"a4 FROB").out.startswith(b"a4 BAD")


# -- POP3 ------------------------------------------------------------------------------------------


def test_pop3_secure_login() -> None:
    s = Pop3Session(FQDN, USERS, tls=False)
    assert s.greeting().startswith(b"+OK The Microsoft Exchange POP3 service is ready. [")
    assert s.handle(b"CAPA").out == b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nSTLS\r\n.\r\n"
    assert s.handle(b"USER alice").out.startswith(b"-ERR")  # no user name in clear text
    assert s.handle(b"STAT").out.startswith(b"-ERR")
    assert s.handle(b"STLS").starttls
    s.tls = True
    assert b"STLS" not in s.handle(b"CAPA").out
    assert s.handle(b"USER alice").out == b"+OK\r\n"
    assert s.handle(b"PASS nope").out.startswith(b"-ERR Logon failure")
    s.handle(b"USER alice@alwayshotcafe.com")
    assert s.handle(b"PASS Passw0rd!").out == b"+OK User successfully logged on.\r\n"
    assert s.handle(b"STAT").out == b"+OK 0 0\r\n"
    assert s.handle(b"LIST").out == b"+OK\r\n.\r\n"
    assert s.handle(b"STLS").out.startswith(b"-ERR")
    reply = s.handle(b"QUIT")
    assert reply.close
    assert reply.out.startswith(b"+OK")


# -- SMTP ------------------------------------------------------------------------------------------


def smtp(tls: bool = False, submission: bool = False) -> SmtpSession:
    return SmtpSession(FQDN, USERS, tls, submission, "127.0.0.1", 1700000000.0)


def test_smtp_greeting_and_ehlo() -> None:
    s = smtp()
    assert s.greeting() == (
        b"220 MB1.alwayshotcafe.com Microsoft ESMTP MAIL Service ready at Tue, 14 Nov 2023 22:13:20 -0000\r\n"
    )
    ehlo = s.handle(b"EHLO client").out.decode()
    assert ehlo.startswith("250-MB1.alwayshotcafe.com Hello [127.0.0.1]\r\n")
    assert "250-STARTTLS\r\n" in ehlo
    assert "AUTH" not in ehlo
    assert ehlo.endswith("250 SMTPUTF8\r\n")
    assert s.handle(b"AUTH LOGIN").out.startswith(b"504")  # no password before TLS
    assert s.handle(b"STARTTLS").starttls
    s.tls = True
    assert s.handle(b"MAIL FROM:<a@b.c>").out.startswith(b"503 5.5.2 Send hello first")  # RFC 3207 §4.2
    assert "250-AUTH LOGIN PLAIN" in s.handle(b"EHLO client").out.decode()


def test_smtp_message_on_port_25() -> None:
    s = smtp()
    s.handle(b"HELO client")
    assert s.handle(b"RCPT TO:<x@y>").out.startswith(b"503")
    assert s.handle(b"MAIL FROM:<bob@example.net> SIZE=10").out == b"250 2.1.0 Sender OK\r\n"
    assert s.handle(b"DATA").out.startswith(b"503")
    assert s.handle(b"RCPT TO:<alice@alwayshotcafe.com>").out == b"250 2.1.5 Recipient OK\r\n"
    assert s.handle(b"DATA").out.startswith(b"354")
    for line in (b"Subject: hi", b"", b"..a dot", b"end"):
        assert s.handle(line).out == b""
    assert s.handle(b".").out.startswith(b"250 2.6.0 <1@MB1.alwayshotcafe.com>")
    assert len(s.received) == 1
    got = s.received[0]
    assert (got.sender, got.recipients, got.size, got.user) == (
        "bob@example.net",
        ["alice@alwayshotcafe.com"],
        len(b"Subject: hi\r\n\r\n.a dot\r\nend\r\n"),
        None,
    )
    assert s.handle(b"QUIT").close


def test_smtp_submission_needs_auth() -> None:
    s = smtp(tls=True, submission=True)
    s.handle(b"EHLO client")
    assert s.handle(b"MAIL FROM:<alice@alwayshotcafe.com>").out.startswith(b"530 5.7.57")
    assert s.handle(b"AUTH LOGIN").out == b"334 VXNlcm5hbWU6\r\n"
    assert s.handle(b64("alice").encode()).out == b"334 UGFzc3dvcmQ6\r\n"
    assert s.handle(b64("wrong").encode()).out.startswith(b"535")
    assert s.handle(b"AUTH PLAIN " + b64("\0alice\0Passw0rd!").encode()).out.startswith(b"235")
    assert s.user == "alice"
    assert s.handle(b"AUTH PLAIN").out.startswith(b"503")
    assert s.handle(b"MAIL FROM:<alice@alwayshotcafe.com>").out.startswith(b"250")
    s = smtp(tls=True, submission=True)
    assert s.handle(b"AUTH PLAIN").out == b"334 \r\n"
    assert s.handle(b"not base64!").out.startswith(b"501")
    assert s.handle(b"AUTH LOGIN").out.startswith(b"334")
    assert s.handle(b"*").out.startswith(b"501 5.0.0 Authentication cancelled")


# -- the health checks against the simulated sessions ----------------------------------------------


def converse(dialogue: Dialogue, session: ImapSession | Pop3Session | SmtpSession) -> Verdict:
    """Pump bytes between a check's core and a session's core until the check decides."""
    actions = dialogue.receive_data(session.greeting())
    while True:
        for action in actions:
            if isinstance(action, Verdict):
                return action
        sends = [a for a in actions if isinstance(a, Send)]
        if not sends:
            return dialogue.connection_closed()
        out = b"".join(session.handle(line).out for send in sends for line in send.data.splitlines())
        actions = dialogue.receive_data(out)


@pytest.mark.parametrize("tls", [False, True])
def test_checks_pass_on_the_simulated_sessions(tls: bool) -> None:
    for dialogue, session in (
        (dialogue_for("imap", not tls), ImapSession(FQDN, USERS, tls)),
        (dialogue_for("pop3", not tls), Pop3Session(FQDN, USERS, tls)),
        (dialogue_for("smtp", not tls), smtp(tls)),
    ):
        verdict = converse(dialogue, session)
        assert verdict.ok, verdict
        assert verdict.code == "L7OK"


def test_checks_fail_on_the_broken_greetings() -> None:
    for kind, greeting in BROKEN_GREETINGS.items():
        dialogue = dialogue_for(kind)
        verdicts = [a for a in dialogue.receive_data(greeting) if isinstance(a, Verdict)]
        assert len(verdicts) == 1
        assert verdicts[0].code == "L7RSP"
        assert "simulated broken banner" in verdicts[0].reason
