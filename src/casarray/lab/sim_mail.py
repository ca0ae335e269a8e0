"""The simulated server's mail front ends: IMAP4, POP3 and SMTP, plain (with STARTTLS) and implicit TLS.

Enough of each protocol for a balancer's checks and a client's log-in and goodbye, shaped like
Exchange's front-end services so what a check or a person sees matches the real thing:
- greetings as Exchange sends them: `* OK The Microsoft Exchange IMAP4 service is ready. [<tag>]`,
  `+OK The Microsoft Exchange POP3 service is ready. [<tag>]`, where the tag is the answering server's
  FQDN in base64 of UTF-16LE (`banner_server` reads it back: it is how a test sees who answered), and
  `220 MB1.<domain> Microsoft ESMTP MAIL Service ready at <date>`;
- Exchange's default SecureLogin: no password before TLS (IMAP LOGINDISABLED, RFC 9051 §6.2.3; POP3
  USER refused before STLS; SMTP AUTH only after STARTTLS, and the submission port, like Exchange's
  Client Frontend connector on 587, takes mail only after AUTH);
- ImapProxy/PopProxy/FrontendTransport set Inactive stop the service: a protocol set `down` stops
  listening (connections are refused) and drops its sessions; `broken` keeps the port but greets with
  a refusal (`* BYE`, `-ERR`, `554`) and hangs up — what a check must catch.

The sessions are sans-I/O cores (a line in, a `Reply` out); `SimMail` is the asyncio shell (streams: a
test server, not the hot path), and `MailSimCas` adds the mail controls to a `SimCas`. See docs/lab.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from aiohttp import web

from casarray.health.mail import exchange_server
from casarray.lab import LabError
from casarray.lab.pki import DEFAULT_DOMAIN
from casarray.lab.sim import CONTROL_PREFIX, SimCas, control_host_allowed
from casarray.lab.users import Credentials

MailKind = Literal["imap", "pop3", "smtp"]
MailMode = Literal["up", "down", "broken"]
MAIL_KINDS: Final[tuple[MailKind, ...]] = get_args(MailKind)
MAIL_MODES: Final[tuple[MailMode, ...]] = get_args(MailMode)
MAX_LINE: Final = 64 * 1024  # longer command lines end the session
MAX_MESSAGE: Final = 36 * 1024 * 1024  # Exchange's default receive size is 36 MB (SIZE 37748736)

BROKEN_GREETINGS: Final[Mapping[MailKind, bytes]] = {
    "imap": b"* BYE Service unavailable (simulated broken banner).\r\n",
    "pop3": b"-ERR Service unavailable (simulated broken banner).\r\n",
    "smtp": b"554 5.3.2 Service unavailable (simulated broken banner).\r\n",
}


# ---------------------------------------------------------------------------------------------------
# Pure parts.


def server_tag(fqdn: str) -> str:
    """The `[…]` Exchange puts at the end of its IMAP4/POP3 greeting: the FQDN, UTF-16LE, base64."""
    return base64.b64encode(fqdn.encode("utf-16-le")).decode("ascii")


def banner_server(greeting: str | bytes) -> str | None:
    """The server FQDN hidden in an Exchange IMAP4/POP3 greeting, or None when there is none."""
    return exchange_server(greeting.decode("latin-1") if isinstance(greeting, bytes) else greeting)


@dataclass(frozen=True, slots=True)
class MailPort:
    """One listener of a simulated server: protocol, port, TLS from the first byte or not, and for
    SMTP whether it is a submission port (AUTH required before MAIL)."""

    kind: MailKind
    port: int
    implicit_tls: bool = False
    submission: bool = False

    @property
    def label(self) -> str:
        if self.kind == "smtp" and self.submission and not self.implicit_tls:
            return "submission"
        return self.kind + ("s" if self.implicit_tls else "")


@dataclass(slots=True)
class Reply:
    """What the server does after one line: send `out`, then start TLS and/or close."""

    out: bytes = b""
    starttls: bool = False
    close: bool = False


@dataclass(slots=True)
class Received:
    """A message taken by the SMTP simulation (kept in memory, never delivered)."""

    sender: str
    recipients: list[str]
    size: int
    user: str | None


def parse_astrings(text: str) -> list[str] | None:
    """IMAP arguments as atoms or quoted strings (RFC 9051 §4.3); None for a literal or a bad quote."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        if text[i] == "{":
            return None  # literals are not simulated
        if text[i] == '"':
            i += 1
            value: list[str] = []
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                value.append(text[i])
                i += 1
            if i >= len(text):
                return None
            out.append("".join(value))
            i += 1
            continue
        end = text.find(" ", i)
        end = len(text) if end < 0 else end
        out.append(text[i:end])
        i = end
    return out


class ImapSession:
    """IMAP4rev1 as far as a check and a log-in go: CAPABILITY, NOOP, STARTTLS, LOGIN, AUTHENTICATE
    PLAIN, SELECT/EXAMINE and LIST of an empty INBOX, LOGOUT."""

    def __init__(self, fqdn: str, credentials: Credentials, tls: bool) -> None:
        self.fqdn = fqdn
        self.credentials = credentials
        self.tls = tls
        self.user: str | None = None
        self._authenticating: str | None = None  # the tag of an AUTHENTICATE waiting for its response

    def greeting(self) -> bytes:
        return f"* OK The Microsoft Exchange IMAP4 service is ready. [{server_tag(self.fqdn)}]\r\n".encode()

    def capabilities(self) -> str:
        words = "IMAP4 IMAP4rev1 AUTH=PLAIN UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
        # RFC 9051 §6.2.1: STARTTLS only before TLS; RFC 9051 §6.2.3: LOGINDISABLED while LOGIN is refused.
        return words if self.tls else words + " STARTTLS LOGINDISABLED"

    def handle(self, line: bytes) -> Reply:
        text = line.decode("utf-8", "replace")
        if self._authenticating is not None:
            return self._sasl_plain(self._authenticating, text.strip())
        tag, _, rest = text.partition(" ")
        command, _, arguments = rest.partition(" ")
        command = command.upper()
        if not tag or not command:
            return Reply(b"* BAD Command Error. 10\r\n")

        def done(status: str, what: str) -> Reply:
            return Reply(f"{tag} {status} {what}\r\n".encode())

        if command == "CAPABILITY":
            return Reply(f"* CAPABILITY {self.capabilities()}\r\n{tag} OK CAPABILITY completed.\r\n".encode())
        if command == "NOOP":
            return done("OK", "NOOP completed.")
        if command == "LOGOUT":
            # RFC 9051 §6.1.3: BYE first, then the tagged OK, then the server closes.
            bye = "* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n"
            return Reply(f"{bye}{tag} OK LOGOUT completed.\r\n".encode(), close=True)
        if command == "STARTTLS":
            if self.tls:
                return done("BAD", "Command received in Invalid state.")
            return Reply(f"{tag} OK Begin TLS negotiation now.\r\n".encode(), starttls=True)
        if command == "LOGIN":
            args = parse_astrings(arguments)
            if args is None or len(args) != 2:
                return done("BAD", "Command Argument Error. 11")
            if not self.tls:
                return done("NO", "[PRIVACYREQUIRED] LOGIN needs TLS: STARTTLS first.")
            if self.user is not None or not self.credentials.check(args[0], args[1]):
                return done("NO", "LOGIN failed.")
            self.user = args[0]
            return done("OK", "LOGIN completed.")
        if command == "AUTHENTICATE":
            mechanism, _, initial = arguments.partition(" ")
            if mechanism.upper() != "PLAIN":
                return done("NO", "Unsupported authentication mechanism.")
            if not self.tls or self.user is not None:
                return done("BAD", "Command received in Invalid state.")
            if initial:
                return self._sasl_plain(tag, initial)
            # RFC 9051 §6.2.2: an empty continuation asks for the client's response.
            self._authenticating = tag
            return Reply(b"+ \r\n")
        if command in ("SELECT", "EXAMINE", "LIST") and self.user is None:
            return done("BAD", "Command received in Invalid state.")
        if command in ("SELECT", "EXAMINE"):
            access = "READ-ONLY" if command == "EXAMINE" else "READ-WRITE"
            lines = [
                "* 0 EXISTS",
                "* 0 RECENT",
                "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)",
                "* OK [UIDVALIDITY 1] UIDVALIDITY value",
                f"{tag} OK [{access}] {command} completed.",
            ]
            return Reply(("\r\n".join(lines) + "\r\n").encode())
        if command == "LIST":
            return Reply(f'* LIST (\\HasNoChildren) "/" INBOX\r\n{tag} OK LIST completed.\r\n'.encode())
        return done("BAD", "Command not supported by the simulated server.")

    def _sasl_plain(self, tag: str, response: str) -> Reply:
        """RFC 4616: base64 of `authzid NUL user NUL password`; `*` cancels (RFC 9051 §6.2.2)."""
        self._authenticating = None
        if response == "*":
            return Reply(f"{tag} BAD AUTHENTICATE cancelled.\r\n".encode())
        value = _b64(response)
        parts = value.split("\0") if value is not None else []
        if len(parts) != 3 or not self.credentials.check(parts[1], parts[2]):
            return Reply(f"{tag} NO AUTHENTICATE failed.\r\n".encode())
        self.user = parts[1]
        return Reply(f"{tag} OK AUTHENTICATE completed.\r\n".encode())


class Pop3Session:
    """POP3 as far as a check and a log-in go: CAPA, STLS, USER/PASS, STAT/LIST/UIDL of an empty
    mailbox, NOOP, RSET, QUIT."""

    def __init__(self, fqdn: str, credentials: Credentials, tls: bool) -> None:
        self.fqdn = fqdn
        self.credentials = credentials
        self.tls = tls
        self.user: str | None = None  # after USER
        self.logged_in = False

    def greeting(self) -> bytes:
        return f"+OK The Microsoft Exchange POP3 service is ready. [{server_tag(self.fqdn)}]\r\n".encode()

    def handle(self, line: bytes) -> Reply:
        text = line.decode("utf-8", "replace")
        command, _, argument = text.partition(" ")
        command = command.upper()
        invalid = Reply(b"-ERR Command is not valid in this state.\r\n")
        if command == "CAPA":
            # RFC 2449 §5: a multi-line list; RFC 2595 §4: STLS while the session is not yet TLS.
            words = ["TOP", "UIDL", "USER", *([] if self.tls else ["STLS"])]  # USER/PASS only
            return Reply(("+OK\r\n" + "".join(w + "\r\n" for w in words) + ".\r\n").encode())
        if command == "QUIT":
            return Reply(b"+OK Microsoft Exchange Server POP3 server signing off.\r\n", close=True)
        if command == "NOOP":
            return Reply(b"+OK\r\n")
        if command == "STLS":
            if self.tls or self.logged_in:
                return invalid
            return Reply(b"+OK Begin TLS negotiation.\r\n", starttls=True)
        if command == "USER":
            if not self.tls or self.logged_in or not argument:
                return invalid  # Exchange's SecureLogin: no user name in clear text
            self.user = argument
            return Reply(b"+OK\r\n")
        if command == "PASS":
            if self.user is None or self.logged_in:
                return invalid
            if not self.credentials.check(self.user, argument):
                self.user = None
                return Reply(b"-ERR Logon failure: unknown user name or bad password.\r\n")
            self.logged_in = True
            return Reply(b"+OK User successfully logged on.\r\n")
        if command in ("STAT", "LIST", "UIDL", "RSET") and not self.logged_in:
            return invalid
        if command == "STAT":
            return Reply(b"+OK 0 0\r\n")
        if command in ("LIST", "UIDL"):
            return Reply(b"+OK\r\n.\r\n")
        if command == "RSET":
            return Reply(b"+OK\r\n")
        return Reply(b"-ERR Protocol error. 14\r\n")


class SmtpSession:
    """SMTP as far as a check, a log-in and one message go: EHLO/HELO, STARTTLS, AUTH LOGIN/PLAIN,
    MAIL, RCPT, DATA (kept in memory), RSET, NOOP, QUIT."""

    def __init__(
        self, fqdn: str, credentials: Credentials, tls: bool, submission: bool, peer: str, now: float
    ) -> None:
        self.fqdn = fqdn
        self.credentials = credentials
        self.tls = tls
        self.submission = submission
        self.peer = peer
        self.now = now
        self.user: str | None = None
        self.received: list[Received] = []
        self._helo = False
        self._sender: str | None = None
        self._recipients: list[str] = []
        self._auth: str | None = None  # "login-user", "login-pass", "plain" while AUTH is in progress
        self._auth_user = ""
        self._data: int | None = None  # bytes of the message while in DATA

    def greeting(self) -> bytes:
        date = email.utils.formatdate(self.now, localtime=False)
        return f"220 {self.fqdn} Microsoft ESMTP MAIL Service ready at {date}\r\n".encode()

    def _reset(self) -> None:
        self._sender, self._recipients = None, []

    def handle(self, line: bytes) -> Reply:
        if self._data is not None:
            return self._data_line(line)
        if self._auth is not None:
            return self._auth_line(line.decode("utf-8", "replace").strip())
        text = line.decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            # RFC 5321 §4.1.1.1: a greeting line, then one extension per line; RFC 3207 §4: STARTTLS.
            self._helo = True
            self._reset()
            words = [f"{self.fqdn} Hello [{self.peer}]", "SIZE 37748736", "PIPELINING", "DSN",
                     "ENHANCEDSTATUSCODES"]  # fmt: skip
            words += ["AUTH LOGIN PLAIN"] if self.tls else ["STARTTLS"]
            words += ["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"]
            lines = [f"250-{w}" for w in words[:-1]] + [f"250 {words[-1]}"]
            return Reply(("\r\n".join(lines) + "\r\n").encode())
        if verb == "HELO":
            self._helo = True
            self._reset()
            return Reply(f"250 {self.fqdn} Hello [{self.peer}]\r\n".encode())
        if verb == "QUIT":
            return Reply(b"221 2.0.0 Service closing transmission channel\r\n", close=True)
        if verb == "NOOP":
            return Reply(b"250 2.0.0 OK\r\n")
        if verb == "RSET":
            self._reset()
            return Reply(b"250 2.0.0 Resetting\r\n")
        if verb == "STARTTLS":
            if self.tls:
                return Reply(b"503 5.5.1 TLS already active\r\n")
            # RFC 3207 §4.2: after TLS the client starts over with EHLO; the server forgets all.
            self._helo = False
            self._reset()
            return Reply(b"220 2.0.0 SMTP server ready\r\n", starttls=True)
        if verb == "AUTH":
            return self._auth_start(argument)
        if verb == "MAIL":
            if not self._helo:
                return Reply(b"503 5.5.2 Send hello first\r\n")
            if self.submission and self.user is None:
                return Reply(b"530 5.7.57 Client not authenticated to send mail\r\n")
            if self._sender is not None:
                return Reply(b"503 5.5.2 Sender already specified\r\n")
            self._sender = _path(argument, "FROM:")
            return Reply(b"250 2.1.0 Sender OK\r\n")
        if verb == "RCPT":
            if self._sender is None:
                return Reply(b"503 5.5.2 Need mail command\r\n")
            self._recipients.append(_path(argument, "TO:"))
            return Reply(b"250 2.1.5 Recipient OK\r\n")
        if verb == "DATA":
            if not self._recipients:
                return Reply(b"503 5.5.2 Need rcpt command\r\n")
            self._data = 0
            return Reply(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")
        return Reply(b"500 5.3.3 Unrecognized command\r\n")

    def _data_line(self, line: bytes) -> Reply:
        assert self._data is not None
        if line != b".":
            # RFC 5321 §4.5.2: a leading dot was doubled by the client.
            self._data += len(line[1:] if line.startswith(b"..") else line) + 2
            return Reply()
        size, self._data = self._data, None
        if size > MAX_MESSAGE:
            self._reset()
            return Reply(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
        assert self._sender is not None
        self.received.append(Received(self._sender, list(self._recipients), size, self.user))
        self._reset()
        return Reply(f"250 2.6.0 <{len(self.received)}@{self.fqdn}> Queued mail for delivery\r\n".encode())

    def _auth_start(self, argument: str) -> Reply:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if not self.tls or mechanism not in ("LOGIN", "PLAIN"):
            return Reply(b"504 5.7.4 Unrecognized authentication type\r\n")
        if self.user is not None:
            return Reply(b"503 5.5.1 Already authenticated\r\n")
        if mechanism == "PLAIN":
            if initial:
                return self._plain(initial)
            self._auth = "plain"
            return Reply(b"334 \r\n")
        if initial:
            self._auth_user = _b64(initial) or ""
            self._auth = "login-pass"
            return Reply(b"334 UGFzc3dvcmQ6\r\n")  # "Password:"
        self._auth = "login-user"
        return Reply(b"334 VXNlcm5hbWU6\r\n")  # "Username:"

    def _auth_line(self, text: str) -> Reply:
        state, self._auth = self._auth, None
        if text == "*":
            return Reply(b"501 5.0.0 Authentication cancelled\r\n")
        if state == "plain":
            return self._plain(text)
        value = _b64(text)
        if value is None:
            return Reply(b"501 5.5.2 Cannot Base64-decode Client responses\r\n")
        if state == "login-user":
            self._auth_user = value
            self._auth = "login-pass"
            return Reply(b"334 UGFzc3dvcmQ6\r\n")
        return self._authenticated(self._auth_user, value)

    def _plain(self, text: str) -> Reply:
        value = _b64(text)
        parts = value.split("\0") if value is not None else []
        if len(parts) != 3:
            return Reply(b"501 5.5.2 Cannot Base64-decode Client responses\r\n")
        return self._authenticated(parts[1], parts[2])

    def _authenticated(self, user: str, password: str) -> Reply:
        if not self.credentials.check(user, password):
            return Reply(b"535 5.7.3 Authentication unsuccessful\r\n")
        self.user = user
        return Reply(b"235 2.7.0 Authentication successful\r\n")


def _path(argument: str, prefix: str) -> str:
    """`FROM:<a@b> SIZE=1` → `a@b` (RFC 5321 §4.1.2; the simulation is lenient about the rest)."""
    text = argument.strip()
    if text.upper().startswith(prefix):
        text = text[len(prefix) :].strip()
    return text.split(" ", 1)[0].strip("<>")


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


Session = ImapSession | Pop3Session | SmtpSession


# ---------------------------------------------------------------------------------------------------
# State the controls change and read.


@dataclass(slots=True)
class MailState:
    """Per protocol: up, down or broken; and what the simulated servers saw."""

    modes: dict[MailKind, MailMode] = field(default_factory=lambda: dict.fromkeys(MAIL_KINDS, "up"))
    sessions_open: int = 0
    sessions_total: int = 0
    logins: int = 0
    received: list[Received] = field(default_factory=list)

    def set(self, kind: MailKind | None, mode: MailMode) -> None:
        for k in MAIL_KINDS if kind is None else (kind,):
            self.modes[k] = mode


def mail_ssl_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2 with the server's certificate (no ALPN: the mail protocols do not negotiate one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise LabError(f"cannot load the mail certificate and key: {exc}", f"{certificate}, {key}") from exc
    return ctx


# ---------------------------------------------------------------------------------------------------
# The asyncio shell.


class SimMail:
    """The mail listeners of one simulated server. `await start()`; `await set_mode(...)`; `await stop()`."""

    def __init__(
        self,
        name: str,
        *,
        certificate: Path,
        key: Path,
        ports: Sequence[MailPort],
        host: str = "127.0.0.1",
        domain: str = DEFAULT_DOMAIN,
        credentials: Credentials | None = None,
    ) -> None:
        self.name = name.upper()
        self.fqdn = f"{self.name}.{domain}"  # Exchange shows the FQDN with the name as configured
        self.host = host
        self.ports = list(ports)
        self.certificate = certificate
        self.key = key
        self.credentials = credentials or Credentials(domain=domain)
        self.state = MailState()
        self._ctx: ssl.SSLContext | None = None
        self._servers: dict[MailPort, asyncio.Server] = {}
        self._sessions: dict[asyncio.StreamWriter, MailKind] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ctx = mail_ssl_context(self.certificate, self.key)
        try:
            for spec in self.ports:
                await self._listen(spec)
        except LabError:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for writer in list(self._sessions):
            writer.transport.abort()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def set_mode(self, kind: MailKind | None, mode: MailMode) -> None:
        """down: stop listening and drop the sessions (a stopped Exchange service); up/broken: listen."""
        self.state.set(kind, mode)
        for spec in self.ports:
            if kind is not None and spec.kind != kind:
                continue
            server = self._servers.get(spec)
            if mode == "down" and server is not None:
                del self._servers[spec]
                server.close()
                for writer, session_kind in list(self._sessions.items()):
                    if session_kind == spec.kind:
                        writer.transport.abort()
                await server.wait_closed()
            elif mode != "down" and server is None:
                await self._listen(spec)

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        return {
            "protocols": {
                kind: {
                    "state": state.modes[kind],
                    "ports": {s.label: s.port for s in self.ports if s.kind == kind},
                }
                for kind in MAIL_KINDS
                if any(s.kind == kind for s in self.ports)
            },
            "sessions": {"open": state.sessions_open, "total": state.sessions_total},
            "logins": state.logins,
            "received": len(state.received),
        }

    async def _listen(self, spec: MailPort) -> None:
        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._serve(spec, reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            server = await asyncio.start_server(
                handler,
                self.host,
                spec.port,
                ssl=self._ctx if spec.implicit_tls else None,
                limit=MAX_LINE,
            )
        except OSError as exc:
            raise LabError(
                f"cannot listen on {self.host}:{spec.port} ({spec.label}): {exc.strerror or exc}",
                f"sim-cas {self.name}",
            ) from exc
        self._servers[spec] = server

    def _session(self, spec: MailPort, peer: str) -> Session:
        if spec.kind == "imap":
            return ImapSession(self.fqdn, self.credentials, spec.implicit_tls)
        if spec.kind == "pop3":
            return Pop3Session(self.fqdn, self.credentials, spec.implicit_tls)
        return SmtpSession(self.fqdn, self.credentials, spec.implicit_tls, spec.submission, peer, time.time())

    async def _serve(
        self, spec: MailPort, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        state = self.state
        self._sessions[writer] = spec.kind
        state.sessions_open += 1
        state.sessions_total += 1
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        try:
            if state.modes[spec.kind] == "broken":
                writer.write(BROKEN_GREETINGS[spec.kind])
                await writer.drain()
                return
            session = self._session(spec, peer)
            writer.write(session.greeting())
            await writer.drain()
            logged_in = False
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break  # the client closed in the middle of a line
                reply = session.handle(line.rstrip(b"\r\n"))
                if session.user is not None and not logged_in:
                    logged_in = True
                    state.logins += 1
                if reply.out:
                    writer.write(reply.out)
                    await writer.drain()
                if reply.starttls:
                    assert self._ctx is not None
                    await writer.start_tls(self._ctx)
                    session.tls = True
                if reply.close:
                    break
            if isinstance(session, SmtpSession):
                state.received += session.received
        except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent garbage: end the session as a server would
        finally:
            state.sessions_open -= 1
            self._sessions.pop(writer, None)
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close politely (TLS close_notify) but never wait long for a client that does not answer."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


# ---------------------------------------------------------------------------------------------------
# The simulated server with its mail front ends and their controls.


class MailSimCas(SimCas):
    """A SimCas that also runs mail listeners. Controls (direct only, like the others):
    `POST /_sim/mail/<imap|pop3|smtp>/<up|down|broken>`, `POST /_sim/mail/<up|down|broken>` (every
    protocol); `/_sim/state` shows them under "mail"; `/_sim/reset` and `/_sim/server/up|down` (the
    ServerWideOffline component takes ImapProxy, PopProxy and FrontendTransport with it) apply too."""

    def __init__(self, name: str, *, mail: SimMail, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.mail = mail

    async def start(self) -> None:
        await self.mail.start()  # first: once HTTPS answers, a readiness probe may count on the rest
        try:
            await super().start()
        except LabError:
            await self.mail.stop()
            raise

    async def stop(self) -> None:
        await self.mail.stop()
        await super().stop()

    def snapshot(self) -> dict[str, Any]:
        data = super().snapshot()
        data["mail"] = self.mail.snapshot()
        return data

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = [p for p in request.path[len(CONTROL_PREFIX) :].split("/") if p]
        if parts[:1] == ["mail"]:
            return await self._mail_control(request, parts[1:])
        response = await super()._control(request)
        if response.status == 200 and request.method == "POST":
            match parts:
                case ["reset"] | ["server", "up"]:
                    await self.mail.set_mode(None, "up")
                case ["server", "down"]:
                    await self.mail.set_mode(None, "down")
                case _:
                    return response  # nothing of the mail side changed (settings, latency, …)
            if isinstance(response, web.Response):
                return self._json(self.snapshot())  # show the mail side as changed, too
        return response

    async def _mail_control(self, request: web.BaseRequest, parts: list[str]) -> web.StreamResponse:
        await request.read()
        if not control_host_allowed(request.headers.get("Host"), self.fqdn):
            return self._json({"error": f"controls answer only on {self.fqdn} or an IP address"}, 403)
        kind: MailKind | None = None
        if len(parts) == 2 and parts[0] in MAIL_KINDS:
            kind = next(k for k in MAIL_KINDS if k == parts[0])
            parts = parts[1:]
        if len(parts) != 1 or parts[0] not in MAIL_MODES:
            return self._json(
                {"error": "expected /_sim/mail/[imap|pop3|smtp/](up|down|broken)", "protocols": MAIL_KINDS},
                404,
            )
        if request.method != "POST":
            return self._json({"error": f"method {request.method} not allowed here"}, 405)
        mode = next(m for m in MAIL_MODES if m == parts[0])
        try:
            await self.mail.set_mode(kind, mode)
        except LabError as exc:
            return self._json({"error": str(exc)}, 409)
        return self._json(self.snapshot())
