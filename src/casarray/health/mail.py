"""Health checks for the mail protocols: IMAP4, POP3 and SMTP greetings and a clean goodbye.

Exchange has no healthcheck.htm for these: when ImapProxy or PopProxy is set Inactive (directly, or by
ServerWideOffline during maintenance) the IMAP4/POP3 front-end services stop, so the banner disappears
and the port refuses or drops connections. The check therefore talks the protocol itself, as HAProxy's
`expect string +OK` / `220` checks do, a little further: greeting, an optional STARTTLS capability check
on the plain ports, then a polite LOGOUT / QUIT so the server logs a normal disconnect, not an error.

Two layers, like the HTTPS check: `Dialogue` subclasses are sans-I/O cores (bytes in, `Send` and
`Verdict` actions out; no sockets, no clocks), and `probe_mail` is the asyncio shell that connects (L4),
does the TLS handshake on the implicit-TLS ports (L6) and runs the dialogue (L7) within one timeout.

Result codes are HAProxy's: L4CON/L4TOUT, L6TOUT/L6RSP, L7OK, L7RSP (a wrong or missing answer, a
closed connection), L7TOUT (no complete answer in time).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from dataclasses import dataclass
from typing import Final, Literal, cast

from casarray.health.layers import Failed, open_layers
from casarray.health.state import CheckResult

MailProtocolName = Literal["imap", "pop3", "smtp"]

# Longer lines are refused. RFC 5321 §4.5.3.1.5 caps an SMTP reply line at 512 octets and RFC 1939 §3
# a POP3 response at 512; IMAP has no cap (RFC 9051 §4) but a greeting or CAPABILITY line is short.
MAX_LINE: Final = 8192
SHOWN: Final = 100  # characters of a server line kept in a reason

CHECK_HELO: Final = "casarray-check"
_TITLE: Final = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}


# ---------------------------------------------------------------------------------------------------
# Lines


class LineTooLong(ValueError):
    """A server line exceeded MAX_LINE without its line end."""


class LineReader:
    """Splits a byte stream into lines. The mail protocols end lines with CRLF (RFC 3501 §2.2, RFC 1939
    §3, RFC 5321 §2.3.8); a bare LF is accepted too, and a CRLF split across two reads is joined."""

    __slots__ = ("_buf", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = b""
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete lines they finish, without their line end."""
        buf = self._buf + data
        lines: list[bytes] = []
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = buf[start:end]
            if len(line) > self.max_line:
                raise LineTooLong(f"a line longer than {self.max_line} bytes")
            lines.append(line[:-1] if line.endswith(b"\r") else line)
            start = end + 1
        self._buf = buf[start:]
        if len(self._buf) > self.max_line:
            raise LineTooLong(f"a line longer than {self.max_line} bytes")
        return lines

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished line (shown when the server closes in the middle of one)."""
        return self._buf


def exchange_server(text: str) -> str | None:
    """The server FQDN at the end of an Exchange IMAP4/POP3 greeting (`… is ready. [<tag>]`, the tag
    being the FQDN in UTF-16LE, base64), or None when the text carries none."""
    start, end = text.rfind("["), text.rfind("]")
    if start < 0 or end < start or end - start < 5:
        return None
    try:
        name = base64.b64decode(text[start + 1 : end], validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return name if name and all(c.isalnum() or c in ".-_" for c in name) else None


def _readable_greeting(line: bytes) -> str:
    """A greeting for a reason: Exchange's base64 server tag decoded, IMAP's capability list dropped."""
    text = shown(_drop_imap_code(line))
    server = exchange_server(line.decode("latin-1"))
    if server is not None:
        text = text[: text.rfind("[")] + f"[{server}]" if "[" in text else text
    return text


def shown(line: bytes) -> str:
    """A server line as a reason shows it: decoded leniently, control characters dropped, cut short."""
    text = line.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


# ---------------------------------------------------------------------------------------------------
# Per-protocol parsing of single lines (pure functions).


@dataclass(frozen=True, slots=True)
class ImapLine:
    """One IMAP response line: `tag` is "*" for untagged data, "+" for a continuation, else the
    command tag; `status` is OK/NO/BAD/PREAUTH/BYE (upper case) or the data name (CAPABILITY…)."""

    tag: str
    status: str
    text: str  # what follows the status word


def parse_imap_line(line: bytes) -> ImapLine:
    """RFC 9051 §7 (RFC 3501 §7): `tag SP status [SP text]`; anything else gives an empty status."""
    text = line.decode("utf-8", "replace")
    tag, _, rest = text.partition(" ")
    status, _, after = rest.partition(" ")
    return ImapLine(tag, status.upper(), after)


def imap_capabilities(text: str) -> set[str]:
    """Capability names (upper case) from the text of `* CAPABILITY …` or of a `[CAPABILITY …]`
    response code (RFC 9051 §7.2.2, RFC 3501 §7.2.1 and §7.1)."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
        name, _, text = text.partition(" ")
        if name.upper() != "CAPABILITY":
            return set()
    return {word.upper() for word in text.split()}


@dataclass(frozen=True, slots=True)
class SmtpLine:
    """One SMTP reply line (RFC 5321 §4.2): a three-digit code, `more` for the `-` continuation mark of
    a multi-line reply (§4.2.1), and the text."""

    code: int
    more: bool
    text: str


def parse_smtp_line(line: bytes) -> SmtpLine | None:
    """`NNN[ -]text` or a bare `NNN`; None when the line is not an SMTP reply line."""
    if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
        return None
    mark = line[3:4]
    if mark not in (b"", b" ", b"-"):
        return None
    return SmtpLine(int(line[:3]), mark == b"-", line[4:].decode("utf-8", "replace"))


class SmtpReply:
    """Collects the lines of one (possibly multi-line) SMTP reply. RFC 5321 §4.2.1: every line but the
    last has `-` after the code, the last has SP, and all carry the same code."""

    __slots__ = ("code", "first", "lines")

    def __init__(self) -> None:
        self.code: int | None = None
        self.lines: list[str] = []
        self.first = b""

    def add(self, raw: bytes) -> bool:
        """Add one line; True when the reply is complete. ValueError for a line that breaks the rules."""
        line = parse_smtp_line(raw)
        if line is None:
            raise ValueError(f"not an SMTP reply line: {shown(raw)!r}")
        if self.code is None:
            self.code, self.first = line.code, raw
        elif line.code != self.code:
            raise ValueError(f"reply code changed from {self.code} to {line.code} inside one reply")
        self.lines.append(line.text)
        return not line.more

    def keywords(self) -> set[str]:
        """EHLO keywords (RFC 5321 §4.1.1.1): the first word of every line after the greeting one."""
        return {text.split(" ", 1)[0].upper() for text in self.lines[1:] if text}


# ---------------------------------------------------------------------------------------------------
# Dialogues: the sans-I/O cores.


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the server."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """The check is decided; close the connection."""

    ok: bool
    code: str
    reason: str


Action = Send | Verdict


class Dialogue:
    """The shared machinery: lines in, actions out, one verdict at most. Subclasses implement `_line`."""

    protocol: MailProtocolName = "imap"

    def __init__(self, starttls_check: bool = False) -> None:
        self.starttls_check = starttls_check
        self.reader = LineReader()
        self.verdict: Verdict | None = None
        self.waiting_for = "the greeting"  # what a timeout interrupted, for its reason
        self.greeting = ""  # the banner as shown in reasons

    @property
    def title(self) -> str:
        return _TITLE[self.protocol]

    def receive_data(self, data: bytes) -> list[Action]:
        """Bytes from the server; the actions they lead to (nothing more once there is a verdict)."""
        if self.verdict is not None:
            return []
        try:
            lines = self.reader.feed(data)
        except LineTooLong as exc:
            return [self._fail(f"{self.title} {exc} while waiting for {self.waiting_for}")]
        actions: list[Action] = []
        for line in lines:
            actions += self._line(line)
            if self.verdict is not None:
                break
        return actions

    def connection_closed(self) -> Verdict:
        """The server closed (or reset) the connection: the verdict, decided now if it was not yet."""
        if self.verdict is None:
            partial = f" after {shown(self.reader.pending)!r}" if self.reader.pending else ""
            self._fail(f"{self.title} connection closed while waiting for {self.waiting_for}{partial}")
        assert self.verdict is not None
        return self.verdict

    def timed_out(self) -> Verdict:
        if self.verdict is None:
            self.verdict = Verdict(False, "L7TOUT", f"{self.title} timeout waiting for {self.waiting_for}")
        return self.verdict

    def _line(self, line: bytes) -> list[Action]:
        raise NotImplementedError

    def _fail(self, reason: str) -> Verdict:
        self.verdict = Verdict(False, "L7RSP", reason)
        return self.verdict

    def _pass(self) -> Verdict:
        self.verdict = Verdict(True, "L7OK", f"{self.title} {self.greeting}".strip())
        return self.verdict


class ImapDialogue(Dialogue):
    """IMAP4rev1/rev2: greeting, [a1 CAPABILITY → STARTTLS], a2 LOGOUT → * BYE, a2 OK."""

    protocol: MailProtocolName = "imap"

    def __init__(self, starttls_check: bool = False) -> None:
        super().__init__(starttls_check)
        self._state = "greeting"
        self._capabilities: set[str] = set()
        self._bye = False

    def _line(self, line: bytes) -> list[Action]:
        parsed = parse_imap_line(line)
        if self._state == "greeting":
            return self._greeting(line, parsed)
        if parsed.tag == "*":
            # Untagged data may come before any tagged completion (RFC 9051 §7; RFC 3501 §2.2.2).
            if parsed.status == "CAPABILITY":
                self._capabilities |= imap_capabilities(parsed.text)
            elif parsed.status == "BYE":
                self._bye = True
            return []
        if self._state == "capability" and parsed.tag == "a1":
            if parsed.status != "OK":
                return [self._fail(f"IMAP CAPABILITY answered {shown(line)!r}")]
            # RFC 9051 §6.2.1 / RFC 3501 §6.2.1: STARTTLS is advertised as a capability.
            if "STARTTLS" not in self._capabilities:
                return [self._fail(f"IMAP STARTTLS not advertised (greeting {self.greeting!r})")]
            return self._logout()
        if self._state == "logout" and parsed.tag == "a2":
            # RFC 9051 §6.1.3 / RFC 3501 §6.1.3: the server sends BYE, then the tagged OK.
            if parsed.status != "OK":
                return [self._fail(f"IMAP LOGOUT answered {shown(line)!r}")]
            return [self._pass()]
        return []  # a continuation or another tag: not ours, keep waiting

    def _greeting(self, line: bytes, parsed: ImapLine) -> list[Action]:
        # RFC 9051 §7.1 / RFC 3501 §7.1: the greeting is `* OK`, `* PREAUTH` or `* BYE`. BYE means the
        # server refuses service; PREAUTH skips authentication, which an Exchange front end never does,
        # so it means something else answers on the port.
        self.greeting = _readable_greeting(line)
        if parsed.tag != "*" or parsed.status != "OK":
            return [self._fail(f"IMAP greeting is not '* OK': {shown(line)!r}")]
        self._capabilities = imap_capabilities(parsed.text)
        if self.starttls_check:
            self._state = "capability"
            self.waiting_for = "the CAPABILITY answer"
            return [Send(b"a1 CAPABILITY\r\n")]
        return self._logout()

    def connection_closed(self) -> Verdict:
        if self.verdict is None and self._state == "logout" and self._bye:
            # Some servers close right after BYE without the tagged OK: the service was there.
            return self._pass()
        return super().connection_closed()

    def _logout(self) -> list[Action]:
        self._state = "logout"
        self.waiting_for = "the LOGOUT answer"
        return [Send(b"a2 LOGOUT\r\n")]


def _drop_imap_code(line: bytes) -> bytes:
    """`* OK [CAPABILITY …] Dovecot ready.` → `* OK Dovecot ready.` (the list is long and says little)."""
    start = line.find(b"[")
    end = line.find(b"]", start)
    if start >= 0 and end > start and line[start + 1 : start + 11].upper() == b"CAPABILITY":
        return (line[:start] + line[end + 1 :].lstrip()).rstrip()
    return line


class Pop3Dialogue(Dialogue):
    """POP3: +OK greeting, [CAPA → STLS], QUIT → +OK."""

    protocol: MailProtocolName = "pop3"

    def __init__(self, starttls_check: bool = False) -> None:
        super().__init__(starttls_check)
        self._state = "greeting"
        self._capabilities: set[str] = set()

    def _line(self, line: bytes) -> list[Action]:
        if self._state == "greeting":
            # RFC 1939 §4: the server greets with a positive response (`+OK`); `-ERR` is a refusal.
            self.greeting = _readable_greeting(line)
            if not _pop3_ok(line):
                return [self._fail(f"POP3 greeting is not '+OK': {shown(line)!r}")]
            if self.starttls_check:
                self._state = "capa"
                self.waiting_for = "the CAPA answer"
                return [Send(b"CAPA\r\n")]
            return self._quit()
        if self._state == "capa":
            # RFC 2449 §5: CAPA answers +OK and a multi-line list; a server without CAPA answers -ERR
            # and so advertises nothing (no STLS either).
            if not _pop3_ok(line):
                return [self._fail(f"POP3 STLS not advertised (CAPA answered {shown(line)!r})")]
            self._state = "capa-list"
            return []
        if self._state == "capa-list":
            if line == b".":  # the end of a multi-line response (RFC 1939 §3)
                # RFC 2595 §4: STLS is the capability of POP3 STARTTLS.
                if "STLS" not in self._capabilities:
                    return [self._fail(f"POP3 STLS not advertised (greeting {self.greeting!r})")]
                return self._quit()
            word = line[1:] if line.startswith(b"..") else line  # RFC 1939 §3 byte-stuffing
            self._capabilities.add(word.decode("utf-8", "replace").split(" ", 1)[0].upper())
            return []
        # RFC 1939 §6: QUIT in the AUTHORIZATION state answers +OK and closes.
        if not _pop3_ok(line):
            return [self._fail(f"POP3 QUIT answered {shown(line)!r}")]
        return [self._pass()]

    def _quit(self) -> list[Action]:
        self._state = "quit"
        self.waiting_for = "the QUIT answer"
        return [Send(b"QUIT\r\n")]


def _pop3_ok(line: bytes) -> bool:
    """RFC 1939 §3: a positive status indicator is `+OK`, alone or followed by a space and text."""
    return line == b"+OK" or line.startswith(b"+OK ")


class SmtpDialogue(Dialogue):
    """SMTP: 220 greeting (multi-line allowed), EHLO → 250 [STARTTLS], QUIT → 221."""

    protocol: MailProtocolName = "smtp"

    def __init__(self, starttls_check: bool = False) -> None:
        super().__init__(starttls_check)
        self._state = "greeting"
        self._reply = SmtpReply()

    def _line(self, line: bytes) -> list[Action]:
        try:
            complete = self._reply.add(line)
        except ValueError as exc:
            if self._state == "greeting" and self._reply.code is None:
                self.greeting = shown(line)
            return [self._fail(f"SMTP {exc} while waiting for {self.waiting_for}")]
        if not complete:
            return []
        reply, self._reply = self._reply, SmtpReply()
        if self._state == "greeting":
            # RFC 5321 §4.3.1 and §3.1: 220 is service ready; 554 (no service) or 421 refuse it.
            self.greeting = shown(reply.first)
            if reply.code != 220:
                return [self._fail(f"SMTP greeting is not 220: {shown(reply.first)!r}")]
            self._state = "ehlo"
            self.waiting_for = "the EHLO answer"
            return [Send(f"EHLO {CHECK_HELO}\r\n".encode("ascii"))]
        if self._state == "ehlo":
            # RFC 5321 §4.1.1.1: EHLO answers 250, one extension keyword per further line.
            if reply.code != 250:
                return [self._fail(f"SMTP EHLO answered {shown(reply.first)!r}")]
            # RFC 3207 §4: the STARTTLS keyword in the EHLO answer advertises STARTTLS.
            if self.starttls_check and "STARTTLS" not in reply.keywords():
                return [self._fail(f"SMTP STARTTLS not advertised (greeting {self.greeting!r})")]
            self._state = "quit"
            self.waiting_for = "the QUIT answer"
            return [Send(b"QUIT\r\n")]
        # RFC 5321 §4.1.1.10: the receiver MUST send a 221 reply to QUIT.
        if reply.code != 221:
            return [self._fail(f"SMTP QUIT answered {shown(reply.first)!r}")]
        return [self._pass()]


def dialogue_for(protocol: MailProtocolName, starttls_check: bool = False) -> Dialogue:
    """A fresh core for one check."""
    if protocol == "imap":
        return ImapDialogue(starttls_check)
    if protocol == "pop3":
        return Pop3Dialogue(starttls_check)
    if protocol == "smtp":
        return SmtpDialogue(starttls_check)
    raise ValueError(f"unknown mail protocol {protocol!r}; expected imap, pop3 or smtp")


# ---------------------------------------------------------------------------------------------------
# The asyncio shell.


@dataclass(frozen=True, slots=True)
class MailProbe:
    """Where and how to probe one mail port of one server. `implicit_tls` (993, 995, 465): TLS first,
    with SNI `server_name` verified by `ssl_context`. `require_starttls`: on a plain port, STARTTLS
    (STLS for POP3) must be advertised too."""

    protocol: MailProtocolName
    address: str
    port: int
    implicit_tls: bool
    server_name: str
    ssl_context: ssl.SSLContext
    timeout: float
    require_starttls: bool = False


class _MailClient(asyncio.Protocol):
    """Feeds the dialogue and carries out its actions. With implicit TLS the writes wait until the
    handshake is done and `attach` hands over the TLS transport."""

    def __init__(self, dialogue: Dialogue, implicit_tls: bool) -> None:
        self.dialogue = dialogue
        self.verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        # A failed handshake also ends here; the caller reports it from start_tls, not from this future.
        self.verdict.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._writer: asyncio.Transport | None = None
        self._implicit_tls = implicit_tls
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._implicit_tls:
            self._writer = cast(asyncio.Transport, transport)  # uvloop's are not WriteTransport subclasses

    def attach(self, transport: asyncio.Transport) -> None:
        self._writer = transport
        pending, self._pending = self._pending, []
        for data in pending:
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        for action in self.dialogue.receive_data(data):
            if isinstance(action, Verdict):
                self._settle(action)
            elif self._writer is None:
                self._pending.append(action.data)
            else:
                self._writer.write(action.data)

    def eof_received(self) -> bool:
        self._settle(self.dialogue.connection_closed())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.dialogue.verdict is None and not self.verdict.done():
            self.verdict.set_exception(exc)
        self._settle(self.dialogue.connection_closed())

    def _settle(self, verdict: Verdict) -> None:
        if not self.verdict.done():
            self.verdict.set_result(verdict)


async def probe_mail(probe: MailProbe) -> CheckResult:
    """One check. Connect (L4), TLS handshake on implicit-TLS ports (L6), the dialogue (L7), all within
    probe.timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + probe.timeout
    transport: asyncio.Transport | None = None
    dialogue = dialogue_for(probe.protocol, probe.require_starttls and not probe.implicit_tls)

    def result(ok: bool, code: str, reason: str) -> CheckResult:
        return CheckResult(ok, code, reason, loop.time() - start)

    try:
        opened = await open_layers(
            lambda: _MailClient(dialogue, probe.implicit_tls),
            probe.address,
            probe.port,
            deadline,
            (probe.ssl_context, probe.server_name) if probe.implicit_tls else None,
        )
        if isinstance(opened, Failed):
            return result(False, opened.code, opened.reason)
        transport, protocol = opened
        if probe.implicit_tls:
            protocol.attach(transport)
        try:
            async with asyncio.timeout_at(deadline):
                verdict = await protocol.verdict
        except TimeoutError:
            verdict = dialogue.timed_out()
        except (OSError, ssl.SSLError) as exc:
            verdict = Verdict(False, "L7RSP", f"{dialogue.title} connection error: {exc}")
        return result(verdict.ok, verdict.code, verdict.reason)
    finally:
        if transport is not None:
            transport.abort()
