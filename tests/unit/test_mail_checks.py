"""The mail checks' sans-I/O cores: bytes in, Send/Verdict out. No sockets."""

from __future__ import annotations

import base64

import pytest

from casarray.health.mail import (
    MAX_LINE,
    Dialogue,
    ImapDialogue,
    LineReader,
    LineTooLong,
    Pop3Dialogue,
    Send,
    SmtpDialogue,
    SmtpReply,
    Verdict,
    dialogue_for,
    exchange_server,
    imap_capabilities,
    parse_imap_line,
    parse_smtp_line,
    shown,
)


def run(dialogue: Dialogue, *pieces: bytes) -> tuple[list[bytes], Verdict | None]:
    """Feed the pieces in order; what the core sent and its verdict (None while it waits)."""
    sent: list[bytes] = []
    verdict: Verdict | None = None
    for piece in pieces:
        for action in dialogue.receive_data(piece):
            if isinstance(action, Send):
                sent.append(action.data)
            else:
                assert verdict is None, "two verdicts"
                verdict = action
    return sent, verdict


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- lines -----------------------------------------------------------------------------------------


def test_line_reader_joins_crlf_split_across_reads() -> None:
    reader = LineReader()
    assert reader.feed(b"+OK ready\r") == []
    assert reader.pending == b"+OK ready\r"
    assert reader.feed(b"\n+OK second\r\nthird") == [b"+OK ready", b"+OK second"]
    assert reader.feed(b"\n") == [b"third"]  # a bare LF ends a line too
    assert reader.pending == b""


def test_line_reader_refuses_endless_lines() -> None:
    reader = LineReader(max_line=10)
    assert reader.feed(b"0123456789") == []
    with pytest.raises(LineTooLong):
        reader.feed(b"x")
    with pytest.raises(LineTooLong):
        LineReader(max_line=4).feed(b"0123456\r\n")


def test_shown_cuts_and_cleans() -> None:
    assert shown(b"* OK\x00 ready\x1b") == "* OK  ready"
    assert shown(b"\xff220 ok") == "\ufffd220 ok"
    long = shown(b"x" * 500)
    assert len(long) == 100
    assert long.endswith("…")


# -- IMAP ------------------------------------------------------------------------------------------


def test_parse_imap_line() -> None:
    assert parse_imap_line(b"* OK Dovecot ready.") == parse_imap_line(b"* ok Dovecot ready.")
    line = parse_imap_line(b"a2 OK Logout completed.")
    assert (line.tag, line.status, line.text) == ("a2", "OK", "Logout completed.")
    assert parse_imap_line(b"* BYE").status == "BYE"
    assert imap_capabilities("IMAP4rev1 starttls LOGINDISABLED") == {"IMAP4REV1", "STARTTLS", "LOGINDISABLED"}
    assert imap_capabilities("[CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.") == {"IMAP4REV1", "STARTTLS"}
    assert imap_capabilities("[ALERT] hello") == set()


def test_imap_greeting_then_logout() -> None:
    d = ImapDialogue()
    sent, verdict = run(d, b"* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS] Dovecot ready.\r\n")
    assert sent == [b"a2 LOGOUT\r\n"]
    assert verdict is None
    assert d.waiting_for == "the LOGOUT answer"
    sent, verdict = run(d, b"* BYE Logging out\r\n", b"a2 OK Logout completed (0.001 + 0.000 secs).\r\n")
    assert sent == []
    assert verdict == Verdict(True, "L7OK", "IMAP * OK Dovecot ready.")


def test_exchange_greetings_name_their_server() -> None:
    tag = base64.b64encode("MB1.alwayshotcafe.com".encode("utf-16-le")).decode()
    assert (
        exchange_server(f"+OK The Microsoft Exchange POP3 service is ready. [{tag}]")
        == "MB1.alwayshotcafe.com"
    )
    for text in ("* OK Dovecot ready.", "* OK [QQ==]", "* OK [not base64]", "* OK [" + "AAAA" + "]"):
        assert exchange_server(text) is None
    d = Pop3Dialogue()
    run(d, f"+OK The Microsoft Exchange POP3 service is ready. [{tag}]\r\n".encode(), b"+OK bye\r\n")
    assert d.verdict == Verdict(
        True, "L7OK", "POP3 +OK The Microsoft Exchange POP3 service is ready. [MB1.alwayshotcafe.com]"
    )


def test_imap_one_byte_at_a_time() -> None:
    d = ImapDialogue()
    sent, verdict = run(d, *bytewise(b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n"))
    assert sent == [b"a2 LOGOUT\r\n"]
    assert verdict is None
    _, verdict = run(
        d,
        *bytewise(
            b"* BYE Microsoft Exchange Server IMAP4 server signing off.\r\na2 OK LOGOUT completed.\r\n"
        ),
    )
    assert verdict is not None
    assert verdict.ok
    assert verdict.reason == "IMAP * OK The Microsoft Exchange IMAP4 service is ready."


@pytest.mark.parametrize(
    ("greeting", "shown_as"),
    [
        (b"* BYE server shutting down\r\n", "* BYE server shutting down"),
        (b"* PREAUTH IMAP4rev1 server logged in as alice\r\n", "* PREAUTH IMAP4rev1"),
        (b"HTTP/1.1 400 Bad Request\r\n", "HTTP/1.1 400 Bad Request"),
        (b"+OK Dovecot ready.\r\n", "+OK Dovecot ready."),
        (b"a1 OK\r\n", "a1 OK"),
    ],
)
def test_imap_bad_greetings_fail_with_the_banner(greeting: bytes, shown_as: str) -> None:
    sent, verdict = run(ImapDialogue(), greeting)
    assert sent == []
    assert verdict is not None
    assert not verdict.ok
    assert verdict.code == "L7RSP"
    assert "IMAP greeting is not '* OK'" in verdict.reason
    assert shown_as in verdict.reason


def test_imap_starttls_check() -> None:
    d = ImapDialogue(starttls_check=True)
    sent, _ = run(d, b"* OK ready\r\n")
    assert sent == [b"a1 CAPABILITY\r\n"]
    sent, verdict = run(d, b"* CAPABILITY IMAP4rev1 ", b"STARTTLS AUTH=PLAIN\r\na1 OK done\r\n")
    assert sent == [b"a2 LOGOUT\r\n"]
    assert verdict is None
    _, verdict = run(d, b"* BYE bye\r\na2 OK bye\r\n")
    assert verdict is not None
    assert verdict.ok


def test_imap_starttls_missing_fails() -> None:
    d = ImapDialogue(starttls_check=True)
    run(d, b"* OK ready\r\n")
    sent, verdict = run(d, b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n* OK still here\r\na1 OK done\r\n")
    assert sent == []
    assert verdict == Verdict(False, "L7RSP", "IMAP STARTTLS not advertised (greeting '* OK ready')")


def test_imap_capability_refused_fails() -> None:
    d = ImapDialogue(starttls_check=True)
    run(d, b"* OK ready\r\n")
    _, verdict = run(d, b"a1 BAD unknown command\r\n")
    assert verdict is not None
    assert verdict.reason == "IMAP CAPABILITY answered 'a1 BAD unknown command'"


def test_imap_logout_answers() -> None:
    d = ImapDialogue()
    run(d, b"* OK ready\r\n")
    _, verdict = run(d, b"a2 NO not now\r\n")
    assert verdict == Verdict(False, "L7RSP", "IMAP LOGOUT answered 'a2 NO not now'")
    # BYE and then a close without the tagged OK: the service was there.
    d = ImapDialogue()
    run(d, b"* OK ready\r\n", b"* BYE\r\n")
    assert d.connection_closed().ok


def test_imap_closed_or_silent() -> None:
    d = ImapDialogue()
    assert d.connection_closed() == Verdict(
        False, "L7RSP", "IMAP connection closed while waiting for the greeting"
    )
    d = ImapDialogue()
    run(d, b"* OK rea")
    assert (
        d.connection_closed().reason
        == "IMAP connection closed while waiting for the greeting after '* OK rea'"
    )
    d = ImapDialogue()
    run(d, b"* OK ready\r\n")
    assert d.timed_out() == Verdict(False, "L7TOUT", "IMAP timeout waiting for the LOGOUT answer")
    assert d.receive_data(b"a2 OK\r\n") == []  # decided: later bytes change nothing


def test_endless_line_fails() -> None:
    _, verdict = run(ImapDialogue(), b"* OK " + b"x" * MAX_LINE)
    assert verdict is not None
    assert verdict.code == "L7RSP"
    assert "longer than" in verdict.reason
    assert "the greeting" in verdict.reason


# -- POP3 ------------------------------------------------------------------------------------------


def test_pop3_greeting_quit() -> None:
    d = Pop3Dialogue()
    sent, verdict = run(d, b"+OK Dovecot ready.\r", b"\n")
    assert sent == [b"QUIT\r\n"]
    assert verdict is None
    _, verdict = run(d, b"+OK Logging out.\r\n")
    assert verdict == Verdict(True, "L7OK", "POP3 +OK Dovecot ready.")


@pytest.mark.parametrize(
    "greeting",
    [b"-ERR [SYS/TEMP] service unavailable\r\n", b"+OKAY\r\n", b"* OK IMAP here\r\n", b"220 smtp\r\n"],
)
def test_pop3_bad_greetings(greeting: bytes) -> None:
    sent, verdict = run(Pop3Dialogue(), greeting)
    assert sent == []
    assert verdict is not None
    assert verdict.code == "L7RSP"
    assert verdict.reason.startswith("POP3 greeting is not '+OK': ")
    assert shown(greeting.strip()) in verdict.reason


def test_pop3_capa_stls() -> None:
    d = Pop3Dialogue(starttls_check=True)
    sent, _ = run(d, b"+OK\r\n")
    assert sent == [b"CAPA\r\n"]
    sent, verdict = run(
        d, b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nst", b"ls\r\nSASL PLAIN\r\n.", b"\r\n"
    )
    assert sent == [b"QUIT\r\n"]
    assert verdict is None
    _, verdict = run(d, b"+OK bye\r\n")
    assert verdict == Verdict(True, "L7OK", "POP3 +OK")


def test_pop3_capa_without_stls_or_refused() -> None:
    d = Pop3Dialogue(starttls_check=True)
    _, verdict = run(d, b"+OK hi\r\n", b"+OK\r\nUSER\r\n..STLS-LOOKALIKE\r\n.\r\n")
    assert verdict == Verdict(False, "L7RSP", "POP3 STLS not advertised (greeting '+OK hi')")
    d = Pop3Dialogue(starttls_check=True)
    _, verdict = run(d, b"+OK hi\r\n", b"-ERR unknown command\r\n")
    assert verdict is not None
    assert verdict.reason == "POP3 STLS not advertised (CAPA answered '-ERR unknown command')"


def test_pop3_quit_refused_or_closed() -> None:
    d = Pop3Dialogue()
    _, verdict = run(d, b"+OK hi\r\n", b"-ERR no\r\n")
    assert verdict == Verdict(False, "L7RSP", "POP3 QUIT answered '-ERR no'")
    d = Pop3Dialogue()
    run(d, b"+OK hi\r\n")
    assert d.connection_closed().reason == "POP3 connection closed while waiting for the QUIT answer"


# -- SMTP ------------------------------------------------------------------------------------------


def test_parse_smtp_line() -> None:
    line = parse_smtp_line(b"250-STARTTLS")
    assert line is not None
    assert (line.code, line.more, line.text) == (250, True, "STARTTLS")
    line = parse_smtp_line(b"221")
    assert line is not None
    assert (line.code, line.more, line.text) == (221, False, "")
    for bad in (b"25", b"2500 x", b"abc ok", b"650 x", b"+OK", b""):
        assert parse_smtp_line(bad) is None


def test_smtp_reply_multiline() -> None:
    reply = SmtpReply()
    assert not reply.add(b"250-mx.example Hello")
    assert not reply.add(b"250-PIPELINING")
    assert not reply.add(b"250-starttls")
    assert reply.add(b"250 8BITMIME")
    assert reply.code == 250
    assert reply.first == b"250-mx.example Hello"
    assert reply.keywords() == {"PIPELINING", "STARTTLS", "8BITMIME"}
    broken = SmtpReply()
    broken.add(b"250-a")
    with pytest.raises(ValueError, match="changed from 250 to 220"):
        broken.add(b"220 b")
    with pytest.raises(ValueError, match="not an SMTP reply line"):
        SmtpReply().add(b"hello")


def test_smtp_greeting_ehlo_quit() -> None:
    d = SmtpDialogue()
    sent, verdict = run(d, b"220-mx1.alwayshotcafe.com ESMTP\r\n220-second line\r", b"\n220 ready\r\n")
    assert sent == [b"EHLO casarray-check\r\n"]
    assert verdict is None
    sent, verdict = run(d, *bytewise(b"250-mx1 Hello\r\n250-SIZE 10240000\r\n250 PIPELINING\r\n"))
    assert sent == [b"QUIT\r\n"]
    assert verdict is None
    _, verdict = run(d, b"221 2.0.0 Bye\r\n")
    assert verdict == Verdict(True, "L7OK", "SMTP 220-mx1.alwayshotcafe.com ESMTP")


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"554 5.3.2 no service here\r\n", "SMTP greeting is not 220: '554 5.3.2 no service here'"),
        (b"421 4.3.2 shutting down\r\n", "SMTP greeting is not 220: '421 4.3.2 shutting down'"),
        (b"220-a\r\n250 b\r\n", "reply code changed from 220 to 250"),
        (b"* OK IMAP\r\n", "not an SMTP reply line: '* OK IMAP'"),
    ],
)
def test_smtp_bad_greetings(greeting: bytes, reason: str) -> None:
    sent, verdict = run(SmtpDialogue(), greeting)
    assert sent == []
    assert verdict is not None
    assert verdict.code == "L7RSP"
    assert reason in verdict.reason


def test_smtp_starttls_check() -> None:
    d = SmtpDialogue(starttls_check=True)
    run(d, b"220 mx ESMTP\r\n")
    sent, verdict = run(d, b"250-mx\r\n250-STARTTLS\r\n250 SIZE\r\n")
    assert sent == [b"QUIT\r\n"]
    assert verdict is None
    d = SmtpDialogue(starttls_check=True)
    run(d, b"220 mx ESMTP\r\n")
    _, verdict = run(d, b"250-mx STARTTLS\r\n250 SIZE\r\n")  # in the greeting line it is no keyword
    assert verdict == Verdict(False, "L7RSP", "SMTP STARTTLS not advertised (greeting '220 mx ESMTP')")


def test_smtp_ehlo_and_quit_answers() -> None:
    d = SmtpDialogue()
    _, verdict = run(d, b"220 mx\r\n", b"502 5.5.1 EHLO not implemented\r\n")
    assert verdict == Verdict(False, "L7RSP", "SMTP EHLO answered '502 5.5.1 EHLO not implemented'")
    d = SmtpDialogue()
    _, verdict = run(d, b"220 mx\r\n", b"250 mx\r\n", b"250 ok\r\n")
    assert verdict == Verdict(False, "L7RSP", "SMTP QUIT answered '250 ok'")
    d = SmtpDialogue()
    run(d, b"220 mx\r\n")
    assert d.timed_out().reason == "SMTP timeout waiting for the EHLO answer"


def test_dialogue_for() -> None:
    assert isinstance(dialogue_for("imap"), ImapDialogue)
    assert isinstance(dialogue_for("pop3", True), Pop3Dialogue)
    assert dialogue_for("smtp", True).starttls_check
    with pytest.raises(ValueError, match="unknown mail protocol"):
        dialogue_for("nntp")  # type: ignore[arg-type]
