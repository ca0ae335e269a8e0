"""IMAP, POP3 and SMTP through casarray, against real Dovecot and Postfix instances.

Three "Exchange servers" MB1–MB3 on 127.0.0.2–4, each with its own Dovecot (IMAP 143/993, POP3
110/995 on high ports) and Postfix (SMTP 25, submission 587 with STARTTLS + AUTH through Dovecot,
SMTPS 465), configured in a temporary directory with the lab certificate, plus a sim-cas for the
HTTPS side. Every instance keeps its own Maildir, with messages that name the server, so a client sees
who answered. casarray listens on 127.0.0.1: high ports for the plain protocols, 993/995/465 for the
implicit-TLS ones (the VIP port tells a check to start with TLS).

Dovecot and Postfix drop privileges to their own users, so the module needs root (as CI has).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from casarray.health.mail import MailProbe, MailProtocolName, probe_mail
from casarray.health.state import CheckResult
from casarray.lab.pki import CertFiles, make_lab_pki
from tests.support import NAMESPACE, LoopThread, Proc, casarray, free_port, wait_until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
ADDRESSES = {"MB1": "127.0.0.2", "MB2": "127.0.0.3", "MB3": "127.0.0.4"}
USER, PASSWORD = "alice", "Passw0rd!"
MAIL_UID = 65534  # nobody: Dovecot never gives mail access to uid 0
VIP = "127.0.0.1"
# The implicit-TLS VIP ports: the engine knows them by number (catalog.IMPLICIT_TLS_PORTS).
IMAPS, POP3S, SMTPS = 993, 995, 465
NOT_WIRED = "mail listeners are not available in this version"


def _missing() -> str | None:
    if not Path(DOVECOT).is_file():
        return (
            "Dovecot is not installed (Debian: apt-get install dovecot-imapd dovecot-pop3d; `make test` does)"
        )
    if not Path(POSTFIX).is_file():
        return "Postfix is not installed (Debian: apt-get install postfix; `make test` does)"
    if os.geteuid() != 0:
        return "needs root: Dovecot and Postfix switch to their own users (CI runs as root)"
    for user in ("dovecot", "dovenull", "postfix"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} is missing (the Debian packages create it)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing() is not None, reason=_missing() or ""),
    pytest.mark.timeout(90),
]


# ---------------------------------------------------------------------------------------------------
# One mail server: Dovecot + Postfix in a directory of their own.


@dataclass
class MailServer:
    name: str
    address: str
    root: Path
    pki: CertFiles
    ports: dict[str, int] = field(default_factory=dict)  # imap, imaps, pop3, pop3s, smtp, submission, smtps
    dovecot: Proc | None = None
    # When set, Dovecot's plain IMAP listens here and a BannerFront on ports["imap"] relays to it.
    dovecot_imap: int | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def maildir(self) -> Path:
        return self.home / USER / "Maildir"

    def prepare(self, messages: int = 3, imap_front: bool = False) -> None:
        for kind in ("imap", "imaps", "pop3", "pop3s", "smtp", "submission", "smtps"):
            self.ports[kind] = free_port(self.address)
        if imap_front:
            self.dovecot_imap = free_port(self.address)
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(1, messages + 1):
            message = EmailMessage()
            message["From"] = f"postmaster@{self.name.lower()}.alwayshotcafe.com"
            message["To"] = f"{USER}@alwayshotcafe.com"
            message["Subject"] = f"message {i} on {self.name}"
            message["Message-ID"] = f"<{i}.{self.name}@alwayshotcafe.com>"
            message.set_content(f"This message lives on {self.name}.\n")
            name = f"{1700000000 + i}.M{i}P1.{self.name.lower()}:2,S"
            (self.maildir / "cur" / name).write_bytes(bytes(message))
        for path in [self.home, *self.home.rglob("*")]:
            os.chown(path, MAIL_UID, MAIL_UID)
        (self.root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        (self.root / "dovecot.conf").write_text(self._dovecot_conf())
        etc = self.root / "postfix"
        etc.mkdir()
        (etc / "main.cf").write_text(self._postfix_main())
        (etc / "master.cf").write_text(self._postfix_master())
        (etc / "vmailbox").write_text(f"{USER}@alwayshotcafe.com {USER}/Maildir/\n")
        (self.root / "queue").mkdir()
        data = self.root / "postfix-data"
        data.mkdir()
        os.chown(data, pwd.getpwnam("postfix").pw_uid, -1)

    def _dovecot_conf(self) -> str:
        imap_port = self.dovecot_imap or self.ports["imap"]
        return textwrap.dedent(f"""\
            base_dir = {self.root}/dovecot-run
            state_dir = {self.root}/dovecot-state
            log_path = {self.root}/dovecot.log
            instance_name = casarray-{self.name.lower()}
            protocols = imap pop3
            listen = {self.address}
            login_greeting = {self.name} Dovecot ready.
            ssl = required
            ssl_cert = <{self.pki.certificate}
            ssl_key = <{self.pki.key}
            ssl_dh = </usr/share/dovecot/dh.pem
            auth_mechanisms = plain login
            passdb {{
              driver = passwd-file
              args = scheme=PLAIN {self.root}/users
            }}
            userdb {{
              driver = static
              args = uid={MAIL_UID} gid={MAIL_UID} home={self.home}/%u
            }}
            mail_location = maildir:~/Maildir
            service imap-login {{
              inet_listener imap {{
                port = {imap_port}
              }}
              inet_listener imaps {{
                port = {self.ports["imaps"]}
                ssl = yes
              }}
            }}
            service pop3-login {{
              inet_listener pop3 {{
                port = {self.ports["pop3"]}
              }}
              inet_listener pop3s {{
                port = {self.ports["pop3s"]}
                ssl = yes
              }}
            }}
            service auth {{
              unix_listener postfix-auth {{
                mode = 0660
                user = postfix
              }}
            }}
            """)

    def _postfix_main(self) -> str:
        return textwrap.dedent(f"""\
            compatibility_level = 3.6
            queue_directory = {self.root}/queue
            data_directory = {self.root}/postfix-data
            mail_owner = postfix
            myhostname = {self.name.lower()}.alwayshotcafe.com
            mydestination =
            inet_interfaces = all
            inet_protocols = ipv4
            mynetworks = 127.0.0.0/8
            maillog_file_prefixes = {self.root}
            maillog_file = {self.root}/postfix.log
            smtpd_banner = $myhostname ESMTP Postfix ({self.name})
            alias_maps =
            alias_database =
            virtual_mailbox_domains = alwayshotcafe.com
            virtual_mailbox_base = {self.home}
            virtual_mailbox_maps = texthash:{self.root}/postfix/vmailbox
            virtual_uid_maps = static:{MAIL_UID}
            virtual_gid_maps = static:{MAIL_UID}
            smtpd_tls_cert_file = {self.pki.certificate}
            smtpd_tls_key_file = {self.pki.key}
            smtpd_tls_security_level = may
            smtpd_sasl_type = dovecot
            smtpd_sasl_path = {self.root}/dovecot-run/postfix-auth
            smtpd_relay_restrictions = permit_sasl_authenticated reject_unauth_destination
            smtp_dns_support_level = disabled
            """)

    def _postfix_master(self) -> str:
        a, p = self.address, self.ports
        services = [
            f"{a}:{p['smtp']} inet n - n - - smtpd",
            f"{a}:{p['submission']} inet n - n - - smtpd",
            "  -o smtpd_tls_security_level=encrypt",
            "  -o smtpd_sasl_auth_enable=yes",
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
            f"{a}:{p['smtps']} inet n - n - - smtpd",
            "  -o smtpd_tls_wrappermode=yes",
            "  -o smtpd_sasl_auth_enable=yes",
        ]
        internal = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services + internal) + "\n"

    # -- processes ----------------------------------------------------------------------------------

    def start_dovecot(self) -> None:
        self.dovecot = Proc([DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")], self.root / "dovecot.out")
        for port in (self.dovecot_imap or self.ports["imap"], self.ports["pop3s"]):
            wait_until(lambda p=port: _accepts(self.address, p), 10, what=f"{self.name} Dovecot on {port}")

    def stop_dovecot(self) -> None:
        if self.dovecot is not None:
            self.dovecot.stop()
            self.dovecot = None

    def postfix(self, verb: str) -> None:
        subprocess.run(
            [POSTFIX, "-c", str(self.root / "postfix"), verb],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )

    def start_postfix(self) -> None:
        self.postfix("start")
        wait_until(lambda: _accepts(self.address, self.ports["smtp"]), 10, what=f"{self.name} Postfix")

    def stop_postfix(self) -> None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        with contextlib.suppress(subprocess.CalledProcessError):
            self.postfix("stop")
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, what=f"{self.name} Postfix to stop")

    def start(self) -> None:
        self.start_dovecot()  # first: Postfix authenticates through Dovecot's socket
        self.start_postfix()

    def stop(self) -> None:
        self.stop_postfix()
        self.stop_dovecot()

    def log(self, program: str) -> str:
        path = self.root / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# A front that passes Dovecot's IMAP through, or greets `* BYE` when broken.


class BannerFront:
    """Sits on a server's IMAP port and relays to Dovecot; `broken = True` makes it greet
    `* BYE` and hang up instead (a server refusing service, RFC 9051 §7.1.5)."""

    def __init__(self, loop: LoopThread, address: str, port: int, target: int) -> None:
        self.loop = loop
        self.address, self.port, self.target = address, port, target
        self.broken = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, self.address, self.port)

        self.loop.run(start())

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            if self._server is not None:
                await self._server.wait_closed()

        self.loop.run(stop())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.broken:
                writer.write(b"* BYE Server shutting down.\r\n")
                await writer.drain()
                return
            up_reader, upstream = await asyncio.open_connection(self.address, self.target)
            self._writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer), return_exceptions=True)
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


# ---------------------------------------------------------------------------------------------------
# Fixtures: the servers (module scope) and casarray in front of them.


@dataclass
class Array:
    servers: dict[str, MailServer]
    pki: CertFiles
    root: Path
    loop: LoopThread
    front: BannerFront
    sims: list[Proc] = field(default_factory=list)
    sim_ports: dict[str, int] = field(default_factory=dict)
    vip: dict[str, int] = field(default_factory=dict)  # imap, pop3, smtp, submission → VIP port

    def ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca))


@pytest.fixture(scope="module")
def array() -> Iterator[Array]:
    root = Path(tempfile.mkdtemp(prefix="casarray-mail-"))
    root.chmod(0o755)  # Dovecot's and Postfix's own users must reach their files
    pki = make_lab_pki(root / "pki")
    servers = {
        name: MailServer(name, address, root / name.lower(), pki) for name, address in ADDRESSES.items()
    }
    loop = LoopThread()
    front: BannerFront | None = None
    started: list[MailServer] = []
    sims: list[Proc] = []
    try:
        for server in servers.values():
            server.root.mkdir()
            server.prepare(imap_front=server.name == "MB3")
        mb3 = servers["MB3"]
        assert mb3.dovecot_imap is not None
        front = BannerFront(loop, mb3.address, mb3.ports["imap"], mb3.dovecot_imap)
        front.start()
        started.extend(servers.values())
        with ThreadPoolExecutor() as pool:  # each takes a moment: start (and stop) them side by side
            list(pool.map(MailServer.start, servers.values()))
        array = Array(servers, pki, root, loop, front)
        for name, server in servers.items():
            port = free_port(server.address)
            proc = Proc(
                casarray("sim-cas", "--name", name, "--listen", f"{server.address}:{port}",
                         "--cert", str(pki.certificate), "--key", str(pki.key)),
                root / f"sim-{name}.log",
            )  # fmt: skip
            sims.append(proc)
            array.sim_ports[name] = port
        for proc in sims:
            proc.wait_log("listening on")
        array.sims = sims
        yield array
    finally:
        for proc in sims:
            proc.stop()
        with ThreadPoolExecutor() as pool:
            list(pool.map(MailServer.stop, started))
        if front is not None:
            front.stop()
        loop.close()
        shutil.rmtree(root, ignore_errors=True)


def balancer_config(array: Array) -> str:
    vip = array.vip
    for kind in ("imap", "pop3", "smtp", "submission"):
        vip[kind] = free_port(VIP)
    mapping = {
        vip["imap"]: "imap", IMAPS: "imaps", vip["pop3"]: "pop3", POP3S: "pop3s",
        vip["smtp"]: "smtp", vip["submission"]: "submission", SMTPS: "smtps",
    }  # fmt: skip
    lines = [
        f"namespace: {NAMESPACE}",
        "mode: l4",
        f"listen: {{address: {VIP}, https_port: {free_port(VIP)}}}",
        f"upstream_tls: {{ca: {array.pki.ca}}}",
        "services: [owa]",
        "health: {interval: 200ms, timeout: 1s, rise: 1, fall: 2}",  # one slow check under load must not flip a member
        "servers:",
    ]
    for name, server in array.servers.items():
        ports = ", ".join(f"{v}: {server.ports[kind]}" for v, kind in mapping.items())
        lines.append(
            f"  - {{name: {name}, address: {server.address}, port: {array.sim_ports[name]}, "
            f"mail_ports: {{{ports}}}}}"
        )
    lines += [
        "mail:",
        f"  imap: {{ports: [{vip['imap']}, {IMAPS}], require_starttls: true}}",
        f"  pop3: {{ports: [{vip['pop3']}, {POP3S}], require_starttls: true}}",
        f"  smtp: {{ports: [{vip['smtp']}, {vip['submission']}, {SMTPS}]}}",
    ]
    return "\n".join(lines) + "\n"


def member_ports(array: Array) -> list[str]:
    """`<proto>:<VIP port>`: the member service names the balancer logs."""
    v = array.vip
    return [
        f"imap:{v['imap']}", f"imap:{IMAPS}", f"pop3:{v['pop3']}", f"pop3:{POP3S}",
        f"smtp:{v['smtp']}", f"smtp:{v['submission']}", f"smtp:{SMTPS}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def balancer(array: Array) -> Iterator[Proc]:
    busy = [port for port in (IMAPS, POP3S, SMTPS) if not _port_free(VIP, port)]
    if busy:
        pytest.skip(f"the implicit-TLS VIP ports {busy} are in use on {VIP}")
    path = array.root / "casarray.yaml"
    path.write_text(balancer_config(array))
    proc = Proc(casarray("run", "-c", str(path)), array.root / "casarray.log")
    try:
        wait_until(
            lambda: "listening on" in proc.log or proc.popen.poll() is not None,
            20,
            what="casarray to start",
        )
        if NOT_WIRED in proc.log:
            pytest.skip(f"this casarray refuses the mail: section ({NOT_WIRED!r})")
        assert proc.popen.poll() is None, proc.log
        for name in array.servers:
            for member in member_ports(array):
                proc.wait_log(f"health {name}/{member} init -> up L7OK")
        yield proc
    finally:
        proc.stop()


# ---------------------------------------------------------------------------------------------------
# The checks against the real servers (no balancer).


def probe(
    array: Array,
    server: MailServer,
    protocol: MailProtocolName,
    kind: str,
    *,
    implicit_tls: bool | None = None,
    timeout: float = 2.0,
    require_starttls: bool = False,
) -> CheckResult:
    tls = kind in ("imaps", "pop3s", "smtps") if implicit_tls is None else implicit_tls
    check = MailProbe(
        protocol, server.address, server.ports[kind], tls, NAMESPACE, array.ctx(), timeout, require_starttls
    )
    return asyncio.run(probe_mail(check))


def test_checks_pass_on_dovecot_and_postfix(array: Array) -> None:
    mb1 = array.servers["MB1"]
    cases: list[tuple[MailProtocolName, str, bool, str]] = [
        ("imap", "imap", True, "IMAP * OK MB1 Dovecot ready."),
        ("imap", "imaps", False, "IMAP * OK MB1 Dovecot ready."),
        ("pop3", "pop3", True, "POP3 +OK MB1 Dovecot ready."),
        ("pop3", "pop3s", False, "POP3 +OK MB1 Dovecot ready."),
        ("smtp", "smtp", True, "SMTP 220 mb1.alwayshotcafe.com ESMTP Postfix (MB1)"),
        ("smtp", "submission", True, "SMTP 220 mb1.alwayshotcafe.com ESMTP Postfix (MB1)"),
        ("smtp", "smtps", False, "SMTP 220 mb1.alwayshotcafe.com ESMTP Postfix (MB1)"),
    ]
    for protocol, kind, starttls, reason in cases:
        result = probe(array, mb1, protocol, kind, require_starttls=starttls)
        assert (result.ok, result.code, result.reason) == (True, "L7OK", reason), kind
        assert result.duration < 1.0
    # The checks say goodbye (LOGOUT / QUIT): the servers log a normal end, not a dropped client.
    wait_until(lambda: mb1.log("dovecot").count("Aborted login by logging out") >= 4, 5, what="Dovecot's log")
    assert "ehlo=1 quit=1 commands=2" in mb1.log("postfix")


def test_checks_fail_on_the_wrong_answers(array: Array) -> None:
    mb2 = array.servers["MB2"]
    wrong = probe(array, mb2, "pop3", "imap")
    assert (wrong.ok, wrong.code) == (False, "L7RSP")
    assert "POP3 greeting is not '+OK'" in wrong.reason
    assert "* OK [CAPABILITY IMAP4rev1" in wrong.reason
    silent = probe(array, mb2, "imap", "imaps", implicit_tls=False, timeout=0.5)  # TLS port, plain check
    assert (silent.ok, silent.code, silent.reason) == (
        False,
        "L7TOUT",
        "IMAP timeout waiting for the greeting",
    )
    plain = probe(array, mb2, "smtp", "smtp", implicit_tls=True)  # plain port, TLS check
    assert (plain.ok, plain.code) == (False, "L6RSP")
    # Implicit TLS verifies the certificate against the namespace, like the HTTPS checks.
    other = ssl.create_default_context()  # the system store does not know the lab CA
    result = asyncio.run(
        probe_mail(MailProbe("imap", mb2.address, mb2.ports["imaps"], True, NAMESPACE, other, 2.0))
    )
    assert (result.ok, result.code) == (False, "L6RSP")
    assert "certificate" in result.reason
    closed = asyncio.run(
        probe_mail(MailProbe("imap", mb2.address, free_port(mb2.address), False, NAMESPACE, other, 2.0))
    )
    assert (closed.ok, closed.code, closed.reason) == (False, "L4CON", "connect refused")


# ---------------------------------------------------------------------------------------------------
# Clients through casarray.


def imap_session(array: Array, *, tls: bool) -> tuple[str, bytes]:
    """Log in through the VIP (STARTTLS on the plain port, or implicit TLS), read message 1; returns
    the greeting and the message."""
    ctx = array.ctx()
    client: imaplib.IMAP4
    if tls:
        client = imaplib.IMAP4_SSL(VIP, IMAPS, ssl_context=ctx, timeout=10)
    else:
        client = imaplib.IMAP4(VIP, array.vip["imap"], timeout=10)
        assert "LOGINDISABLED" in client.capabilities  # ssl = required: no password in clear text
        client.starttls(ssl_context=ctx)
    try:
        greeting = client.welcome.decode()
        client.login(USER, PASSWORD)
        status, data = client.select("INBOX", readonly=True)
        assert status == "OK"
        assert int(data[0] or 0) >= 3
        status, fetched = client.fetch("1", "(RFC822)")
        assert status == "OK"
        first = fetched[0]
        assert isinstance(first, tuple)
        client.logout()
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()
    return greeting, first[1]


def pop3_session(array: Array, *, tls: bool) -> tuple[str, bytes]:
    ctx = array.ctx()
    client: poplib.POP3
    if tls:
        client = poplib.POP3_SSL(VIP, POP3S, context=ctx, timeout=10)
    else:
        client = poplib.POP3(VIP, array.vip["pop3"], timeout=10)
        assert "STLS" in client.capa()
        client.stls(context=ctx)
    try:
        greeting = client.getwelcome().decode()
        client.user(USER)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        assert count >= 3
        _, lines, _ = client.retr(1)
        client.quit()
    finally:
        client.close()
    return greeting, b"\r\n".join(lines)


def who(greeting: str) -> str:
    return next(name for name in ADDRESSES if name in greeting)


def test_imap_and_pop3_through_casarray(array: Array, balancer: Proc) -> None:
    seen: set[str] = set()
    for tls in (False, True, False, True, False, True):
        greeting, message = imap_session(array, tls=tls)
        server = who(greeting)
        assert f"This message lives on {server}.".encode() in message  # the same server all along
        seen.add(server)
    assert len(seen) >= 2  # leastconn spreads sequential sessions
    for tls in (False, True):
        greeting, message = pop3_session(array, tls=tls)
        assert f"This message lives on {who(greeting)}.".encode() in message


def test_smtp_through_casarray(array: Array, balancer: Proc) -> None:
    ctx = array.ctx()
    subjects = [f"via casarray {uuid.uuid4().hex}" for _ in range(3)]

    def message(subject: str) -> EmailMessage:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = f"{USER}@alwayshotcafe.com", f"{USER}@alwayshotcafe.com", subject
        m.set_content("sent through the balancer\n")
        return m

    # Port 25: no authentication for the local domain. The client binds 127.0.0.9 so the server's
    # log shows whom Postfix believes it talks to.
    with smtplib.SMTP(VIP, array.vip["smtp"], timeout=10, source_address=("127.0.0.9", 0)) as smtp:
        assert "STARTTLS" in smtp.ehlo()[1].decode().upper()
        smtp.starttls(context=ctx)
        smtp.send_message(message(subjects[0]))
    # Submission (587): STARTTLS required before AUTH; Postfix asks Dovecot for the password.
    with smtplib.SMTP(VIP, array.vip["submission"], timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(USER, PASSWORD)
        smtp.send_message(message(subjects[1]))
    with smtplib.SMTP_SSL(VIP, SMTPS, context=ctx, timeout=10) as smtp:
        smtp.login(USER, PASSWORD)
        smtp.send_message(message(subjects[2]))

    def delivered(subject: str) -> bool:
        for server in array.servers.values():
            for path in (server.maildir / "new").iterdir():
                if subject.encode() in path.read_bytes():
                    return True
        return False

    for subject in subjects:
        wait_until(lambda s=subject: delivered(s), 10, what=f"delivery of {subject!r}")
    postfix_logs = "".join(s.log("postfix") for s in array.servers.values())
    # Exchange's caveat too (research §1.9): the server sees the balancer's address, not the client's.
    assert "[127.0.0.1]" in postfix_logs
    assert "127.0.0.9" not in postfix_logs


def test_stopped_dovecot_sends_its_clients_elsewhere(array: Array, balancer: Proc) -> None:
    mb1 = array.servers["MB1"]
    mb1.stop_dovecot()
    try:
        deadline = time.monotonic() + 1.5  # the window before the checks notice, and after
        sessions = 0
        while time.monotonic() < deadline or sessions < 6:
            greeting, _ = imap_session(array, tls=sessions % 2 == 1)  # each one must succeed
            assert who(greeting) != "MB1"
            greeting, _ = pop3_session(array, tls=True)
            assert who(greeting) != "MB1"
            sessions += 1
        # A Dovecot on its way out resets connections (L7RSP, or L6RSP on a TLS port); once gone its
        # port refuses them (L4CON). Either way the check takes MB1 out.
        balancer.wait_log(f"health MB1/imap:{array.vip['imap']} up -> down L")
        balancer.wait_log(f"health MB1/pop3:{POP3S} up -> down L")
        assert f"health MB1/smtp:{SMTPS} up -> down" not in balancer.log  # Postfix is still there
    finally:
        mb1.start_dovecot()
    balancer.wait_log(f"health MB1/imap:{array.vip['imap']} down -> up L7OK")
    balancer.wait_log(f"health MB1/pop3:{POP3S} down -> up L7OK")


def test_broken_banner_is_taken_out(array: Array, balancer: Proc) -> None:
    array.front.broken = True
    try:
        balancer.wait_log(
            f"health MB3/imap:{array.vip['imap']} up -> down L7RSP "
            "\"IMAP greeting is not '* OK': '* BYE Server shutting down.'\""
        )
        for _ in range(6):
            greeting, _ = imap_session(array, tls=False)
            assert who(greeting) != "MB3"
        assert f"health MB3/imap:{IMAPS} up -> down" not in balancer.log  # its own member, still up
    finally:
        array.front.broken = False
    balancer.wait_log(f"health MB3/imap:{array.vip['imap']} down -> up L7OK")
