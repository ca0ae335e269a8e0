"""`casarray lab`: a CA, three simulated Exchange servers on 127.0.0.2–4, a config, and the balancer.

Library code: it writes files and runs child processes, and reports through a `say` callback and its
return value; the CLI prints. Layout of the lab directory:

    ca.pem, ca.key          the lab CA (kept between runs so a trusted root stays valid)
    server.pem, server.key  the certificate every sim and the balancer present (Extended Protection
                            needs the very same certificate on the balancer and the servers)
    ntlm-users.txt          DOMAIN:user:password for the sims' NTLM acceptor (and their mail log-ins)
    alice.password          the lab user's password, for `casarray doctor --user --password-file`
    casarray.yaml           the balancer's config (DESIGN §3)

The lab also answers DNS for its names on udp 127.0.0.1 (lab/dns.py): the namespace and the Autodiscover
name on the VIP, each server's FQDN on its own address, so `casarray doctor --nameserver` resolves what
clients are told as the network would.

With `mail`, every sim also runs IMAP4, POP3 and SMTP front ends (lab/sim_mail.py) on high ports, and
the config gets a `mail:` section. A check knows an implicit-TLS port by its VIP number (993, 995), which
only root may bind: without root the lab leaves implicit TLS out of the balancer (the sims still answer
it directly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from casarray.errors import CasarrayError
from casarray.exchange import catalog
from casarray.exchange.namespace.dns import DnsRecord
from casarray.exchange.namespace.plan import Targets
from casarray.lab import LabError
from casarray.lab.dns import lab_records, serve_dns
from casarray.lab.pki import (
    CA_FILE,
    CERT_FILE,
    DEFAULT_DOMAIN,
    DEFAULT_SERVERS,
    KEY_FILE,
    CertFiles,
    autodiscover_for,
    make_lab_pki,
    namespace_for,
    server_fqdn,
)
from casarray.lab.procedure import APPLY_SCRIPT, ROLLBACK_SCRIPT, apply_namespace

Mode = Literal["l4", "l7"]
Say = Callable[[str], None]

CONFIG_FILE = "casarray.yaml"
USERS_FILE = "ntlm-users.txt"
LAB_USER = ("ALWAYSHOTCAFE", "alice", "Passw0rd!")  # NetBIOS domain, user, password (lab only)
PASSWORD_FILE = f"{LAB_USER[1]}.password"
FIRST_SIM_ADDRESS = 2  # MB1 on 127.0.0.2, MB2 on .3, MB3 on .4; the balancer on 127.0.0.1
HEALTH_INTERVAL = "2s"
START_TIMEOUT = 20.0  # seconds a child may take to accept connections
PROBE_TIMEOUT = 2.0  # seconds one readiness probe may take
STOP_TIMEOUT = 5.0  # seconds a child may take to exit after SIGTERM before it is killed
# Mail ports of every sim (the sim-cas option each one is given with), and the VIP port that leads there.
SIM_MAIL_PORTS: Mapping[str, int] = {
    "imap": 10143, "imaps": 10993, "pop3": 10110, "pop3s": 10995, "smtp": 10025, "submission": 10587,
}  # fmt: skip
VIP_TLS_PORTS: Mapping[str, int] = {"imaps": 993, "pop3s": 995}  # catalog.IMPLICIT_TLS_PORTS
_MAIL_PROTOCOL: Mapping[str, str] = {
    "imap": "imap", "imaps": "imap", "pop3": "pop3", "pop3s": "pop3", "smtp": "smtp", "submission": "smtp",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MailRoute:
    """One mail port through the lab's balancer: VIP port on 127.0.0.1 → port on every sim."""

    protocol: str  # imap, pop3, smtp (the config's mail: keys)
    label: str  # imap, imaps, pop3, pop3s, smtp, submission (the sim-cas option)
    vip_port: int
    sim_port: int


@dataclass(frozen=True, slots=True)
class LabServer:
    name: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class LabPlan:
    """Everything the lab will create and start; built by `plan`, pure data."""

    directory: Path
    port: int  # the balancer's listener on 127.0.0.1
    mode: Mode
    domain: str
    servers: tuple[LabServer, ...]
    ntlm: bool
    mail: bool = False  # sims run IMAP4/POP3/SMTP and the balancer has a mail: section
    mail_tls: bool = False  # the balancer also listens on 993/995 (needs root)
    admin_port: int = 9090  # admin API and dashboard on 127.0.0.1 (0: none)
    # Leave the servers' URLs as Exchange setup does (each on its own name) instead of applying the
    # namespace with the generated apply script.
    as_installed: bool = False
    dns_port: int = 8053  # the lab's DNS server on udp 127.0.0.1 (0: none)
    python: str = field(default=sys.executable)

    @property
    def mail_routes(self) -> tuple[MailRoute, ...]:
        """The mail ports the balancer listens on (none without `mail`)."""
        if not self.mail:
            return ()
        routes = []
        for label, sim_port in SIM_MAIL_PORTS.items():
            vip_port = VIP_TLS_PORTS.get(label, sim_port)
            if label in VIP_TLS_PORTS and not self.mail_tls:
                continue
            routes.append(MailRoute(_MAIL_PROTOCOL[label], label, vip_port, sim_port))
        return tuple(routes)

    @property
    def namespace(self) -> str:
        return namespace_for(self.domain)

    @property
    def autodiscover(self) -> str:
        return autodiscover_for(self.domain)

    @property
    def listen_address(self) -> str:
        return "127.0.0.1"

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def ca(self) -> Path:
        return self.directory / CA_FILE

    @property
    def certificate(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def users(self) -> Path:
        return self.directory / USERS_FILE

    @property
    def password_file(self) -> Path:
        return self.directory / PASSWORD_FILE

    @property
    def user_address(self) -> str:
        """The lab user's e-mail address (and UPN): alice@<domain>."""
        return f"{LAB_USER[1]}@{self.domain}"

    @property
    def targets(self) -> Targets:
        """Where the namespace procedure moves the servers: the lab's names, on the balancer's port."""
        return Targets.build(self.namespace, autodiscover=self.autodiscover, https_port=self.port)

    def namespace_options(self) -> str:
        """The options `casarray namespace plan|script|verify` take for this lab."""
        return f"-n {self.namespace} --autodiscover {self.autodiscover} --https-port {self.port}"


def plan(
    directory: Path,
    *,
    port: int = 8443,
    mode: Mode = "l7",
    sim_port: int = 8443,
    domain: str = DEFAULT_DOMAIN,
    ntlm: bool = True,
    servers: Sequence[str] = DEFAULT_SERVERS,
    mail: bool = False,
    mail_tls: bool | None = None,
    admin_port: int = 9090,
    as_installed: bool = False,
    dns_port: int = 8053,
) -> LabPlan:
    """What the lab will do. `mail_tls` (balancer on 993/995) defaults to whether we run as root."""
    if mode not in ("l4", "l7"):
        raise LabError(f"mode {mode!r}: expected l4 or l7")
    for what, value in (("port", port), ("sim port", sim_port)):
        if not 1 <= value <= 65535:
            raise LabError(f"{what} {value}: expected 1..65535")
    if not 0 <= dns_port <= 65535:
        raise LabError(f"DNS port {dns_port}: expected 1..65535, or 0 for none")
    members = tuple(
        LabServer(name, f"127.0.0.{FIRST_SIM_ADDRESS + i}", sim_port) for i, name in enumerate(servers)
    )
    if mail and sim_port in SIM_MAIL_PORTS.values():
        raise LabError(f"sim port {sim_port}: the sims' mail ports use it; choose another")
    if mail and port in {*SIM_MAIL_PORTS.values(), *VIP_TLS_PORTS.values()}:
        raise LabError(f"port {port}: the balancer's mail listeners use it; choose another")
    tls = (os.geteuid() == 0) if mail_tls is None else mail_tls
    return LabPlan(
        directory, port, mode, domain, members, ntlm, mail, mail and tls, admin_port, as_installed, dns_port
    )


def _q(value: str | Path) -> str:
    """A YAML scalar that stays a string whatever it holds (JSON strings are valid YAML)."""
    return json.dumps(str(value))


def render_config(p: LabPlan) -> str:
    """The balancer's config for the lab (DESIGN §3). Paths are absolute: `run` may start elsewhere."""
    directory = p.directory.resolve()
    lines = [
        "# casarray lab: simulated Exchange servers behind one namespace (written by `casarray lab`).",
        f"namespace: {p.namespace}",
        f"autodiscover: {p.autodiscover}",
        f"mode: {p.mode}",
        "listen:",
        f"  address: {p.listen_address}",
        f"  https_port: {p.port}",
        "tls:  # the servers' own certificate and key: Extended Protection needs the same pair",
        f"  certificate: {_q(directory / CERT_FILE)}",
        f"  key: {_q(directory / KEY_FILE)}",
        "upstream_tls:",
        f"  ca: {_q(directory / CA_FILE)}",
        "  verify: true",
        "servers:",
    ]
    routes = p.mail_routes
    mail_ports = ", ".join(f"{r.vip_port}: {r.sim_port}" for r in routes)
    for s in p.servers:
        extra = f", mail_ports: {{{mail_ports}}}" if routes else ""
        lines.append(f"  - {{name: {s.name}, address: {s.address}, port: {s.port}{extra}}}")
    lines += [f"health: {{interval: {HEALTH_INTERVAL}}}"]
    if p.admin_port:
        lines.append(f"admin: {{listen: '{p.listen_address}:{p.admin_port}'}}  # API, dashboard, /metrics")
    if routes:
        lines.append("mail:  # l4 listeners on the VIP, each with its own pool and greeting check")
        for protocol in ("imap", "pop3", "smtp"):
            ports = ", ".join(str(r.vip_port) for r in routes if r.protocol == protocol)
            lines.append(f"  {protocol}: {{ports: [{ports}]}}")
    return "\n".join([*lines, ""])


def sim_command(p: LabPlan, server: LabServer) -> list[str]:
    command = [
        p.python, "-m", "casarray", "sim-cas",
        "--name", server.name,
        "--listen", f"{server.address}:{server.port}",
        "--domain", p.domain,
        "--cert", str(p.certificate),
        "--key", str(p.key),
    ]  # fmt: skip
    if p.ntlm:
        command += ["--ntlm-users", str(p.users)]
    if p.mail:
        for label, port in SIM_MAIL_PORTS.items():
            command += [f"--{label}", str(port)]
    return command


def balancer_command(p: LabPlan) -> list[str]:
    return [p.python, "-m", "casarray", "run", "-c", str(p.config)]


def prepare(p: LabPlan) -> CertFiles:
    """Write the PKI, the NTLM users file and the config into the lab directory."""
    try:
        files = make_lab_pki(p.directory, domain=p.domain, servers=[s.name for s in p.servers])
        if p.ntlm:
            p.users.write_text(":".join(LAB_USER) + "\n", encoding="utf-8")
            p.password_file.write_text(LAB_USER[2] + "\n", encoding="utf-8")
            p.password_file.chmod(0o600)
        p.config.write_text(render_config(p), encoding="utf-8")
    except OSError as exc:
        raise LabError(f"cannot write the lab files: {exc.strerror or exc}", str(p.directory)) from exc
    return files


def try_lines(p: LabPlan) -> list[str]:
    """What to try once the lab runs: curl command lines with the right --resolve and --cacert."""
    base = f"https://{p.namespace}:{p.port}"
    resolve = f"--resolve {p.namespace}:{p.port}:{p.listen_address}"
    cacert = f"--cacert {shlex.quote(str(p.ca))}"
    second = p.servers[1] if len(p.servers) > 1 else p.servers[0]
    direct = f"https://{second.address}:{second.port}"
    ews = catalog.get("ews")
    owa = catalog.get("owa")
    servers = ", ".join(f"{s.name} {s.address}:{s.port}" for s in p.servers)
    lines = [
        f"lab running: {len(p.servers)} simulated Exchange servers behind casarray ({p.mode}) "
        f"on {p.listen_address}:{p.port}",
        f"  namespace  {base}   servers  {servers}",
        f"  config     {p.config}   CA  {p.ca}",
        "",
    ]
    # What a client sees: a connection stays with the server it reached (in l7 too, until it is idle),
    # and each of the workers (one per CPU by default) takes its own turns, so two connections in a
    # row may reach the same server: the hint promises a spread over a few connections, not a change
    # per request.
    url = f"{base}{owa.health_path}"
    lines += [
        f"Ask the namespace a few times (each curl is a new connection; X-FEServer names the server, "
        f"and they spread over {', '.join(s.name for s in p.servers)}):",
        f"  for i in 1 2 3 4 5 6; do curl -si {resolve} {cacert} {url} | grep -i x-feserver; done",
    ]
    lines += [
        f"Set {ews.title} down on {second.name} directly (its ews member goes down, OWA stays):",
        f"  curl -X POST {cacert} {direct}/_sim/service/{ews.name}/down",
        f"  curl -X POST {cacert} {direct}/_sim/service/{ews.name}/up",
        f"Whole server down / up:  curl -X POST {cacert} {direct}/_sim/server/down   (…/up)",
        f"What {second.name} received:  curl -s {cacert} '{direct}/_sim/requests?kind=vdir'",
    ]
    if p.ntlm:
        domain, user, password = LAB_USER
        credentials = shlex.quote(f"{domain}\\{user}:{password}")
        lines += [
            "Authenticate with NTLM (the server keeps the user on the connection):",
            f"  curl -si --ntlm -u {credentials} {resolve} {cacert} {base}{ews.url_suffix}",
        ]
    if p.mail:
        lines += mail_try_lines(p)
    lines += namespace_try_lines(p)
    lines += doctor_try_lines(p)
    if p.admin_port:
        command = casarray_command(p.python)
        lines += [
            f"Dashboard: http://{p.listen_address}:{p.admin_port}/   (metrics: /metrics; API: /api/status)",
            f"  {command} ctl -c {p.config} status        {command} ctl -c {p.config} drain {second.name}",
        ]
    lines += ["Ctrl-C stops everything."]
    return lines


def casarray_command(python: str) -> str:
    """`casarray` as the admin's shell can run it: `casarray` when the one on the PATH is this one, else
    the path of this one (after `make lab`, `.venv/bin/casarray`: the venv is not on the PATH)."""
    here = Path(python).parent / "casarray"  # the venv's bin/, not resolved: a venv's python is a link
    found = shutil.which("casarray")
    if found is not None and here.is_file() and os.path.samefile(found, here):
        return "casarray"
    if not here.is_file():
        return f"{shlex.quote(python)} -m casarray"
    with contextlib.suppress(ValueError):  # under the working directory: the short path
        return shlex.quote(str(here.absolute().relative_to(Path.cwd())))
    return shlex.quote(str(here))


def namespace_try_lines(p: LabPlan) -> list[str]:
    """The seed's procedure by hand (docs/lab.md): take an inventory, plan, script, apply, verify."""
    command = casarray_command(p.python)
    config = shlex.quote(str(p.config))
    d = p.directory

    def at(name: str) -> str:
        return shlex.quote(str(d / name))

    options = p.namespace_options()
    if not p.as_installed:
        return [
            "The namespace is on every server (the lab ran the generated apply script); check it, or undo it:",
            f"  {command} lab inventory -c {config} -o {at('inventory.json')} && "
            f"{command} namespace verify -i {at('inventory.json')} {options}",
            f"  {command} lab apply -c {config} {at(ROLLBACK_SCRIPT)}     (then: {command} lab apply -c {config} "
            f"{at(APPLY_SCRIPT)})",
        ]
    return [
        "The servers are as installed (every URL on the server's own name). The namespace procedure:",
        f"  {command} lab inventory -c {config} -o {at('inventory.json')}",
        f"  {command} namespace verify -i {at('inventory.json')} {options}      (fails: server names)",
        f"  {command} namespace script -i {at('inventory.json')} {options} -o {at('apply.ps1')} "
        f"--rollback {at('rollback.ps1')}",
        f"  {command} lab apply -c {config} {at('apply.ps1')}",
        f"  {command} lab inventory -c {config} -o {at('inventory-after.json')} && "
        f"{command} namespace verify -i {at('inventory-after.json')} {options}",
    ]


def doctor_try_lines(p: LabPlan) -> list[str]:
    """`casarray doctor` from the balancer's side, then from a client's: what Autodiscover tells the lab
    user through the VIP (docs/lab.md, the seed's third step), names resolved by the lab's DNS."""
    command = casarray_command(p.python)
    nameserver = f" --nameserver {p.listen_address}:{p.dns_port}" if p.dns_port else ""
    doctor = f"{command} doctor -c {shlex.quote(str(p.config))}{nameserver}"
    login = f" --password-file {shlex.quote(str(p.password_file))}" if p.ntlm else ""
    verdict = (
        "fails: every server tells clients its own name; passes after the apply script"
        if p.as_installed
        else "passes: every URL on the namespace, through the VIP"
    )
    return [
        "Check it from the balancer's side, then from a client's (what Autodiscover tells "
        f"{p.user_address} through the VIP):",
        f"  {doctor}",
        f"  {doctor} --user {p.user_address}{login}     ({verdict})",
    ]


def dns_records(p: LabPlan) -> list[DnsRecord]:
    """What the lab's DNS serves: the namespace and Autodiscover on the VIP, each server on its address."""
    servers = [(server_fqdn(s.name, p.domain), s.address) for s in p.servers]
    return lab_records(p.namespace, p.autodiscover, p.listen_address, servers)


def mail_try_lines(p: LabPlan) -> list[str]:
    """openssl and curl lines for the mail listeners (lab user alice; any password without NTLM users)."""
    vip = {r.label: r.vip_port for r in p.mail_routes}
    address = p.listen_address
    cafile = shlex.quote(str(p.ca))
    user = shlex.quote(f"{LAB_USER[1]}:{LAB_USER[2]}" if p.ntlm else f"{LAB_USER[1]}:any")
    second = p.servers[1] if len(p.servers) > 1 else p.servers[0]
    direct = f"https://{second.address}:{second.port}"
    lines = [
        "Mail through the balancer (the [...] of an IMAP/POP3 greeting is the answering server's FQDN,",
        "UTF-16LE in base64, as Exchange sends it):",
        f"  openssl s_client -quiet -starttls imap -connect {address}:{vip['imap']} -CAfile {cafile}",
        f"  curl -v --ssl-reqd --cacert {cafile} -u {user} imap://{address}:{vip['imap']}/",
        f"  curl -v --ssl-reqd --cacert {cafile} -u {user} pop3://{address}:{vip['pop3']}/",
        f"  printf 'Subject: hi\\r\\n\\r\\nhello\\r\\n' | curl -v --ssl-reqd --cacert {cafile} "
        f"--mail-from {LAB_USER[1]}@{p.domain} --mail-rcpt {LAB_USER[1]}@{p.domain} -T - "
        f"smtp://{address}:{vip['smtp']}",
    ]
    if "imaps" in vip:
        lines.append(
            f"  openssl s_client -quiet -connect {address}:{vip['imaps']} -servername {p.namespace} "
            f"-CAfile {cafile}"
        )
    else:
        lines.append(
            f"  (implicit TLS through the balancer needs ports 993/995, so root; directly: "
            f"openssl s_client -quiet -connect {second.address}:{SIM_MAIL_PORTS['imaps']} -CAfile {cafile})"
        )
    lines += [
        f"Break the IMAP banner on {second.name} (its imap members go down), take it down (what ImapProxy",
        "Inactive does: the port refuses), bring it back:",
        f"  curl -X POST --cacert {cafile} {direct}/_sim/mail/imap/broken   (…/down, …/up)",
    ]
    return lines


# ---------------------------------------------------------------------------------------------------
# Running the children.


Probe = Callable[[str, int], Awaitable[bool]]


@dataclass(slots=True)
class _Child:
    label: str  # "sim-cas MB1", "balancer"
    command: list[str]
    address: tuple[str, int]
    probe: Probe
    process: asyncio.subprocess.Process | None = None


async def _accepts(host: str, port: int) -> bool:
    """The balancer is ready when its port accepts a TCP connection."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _sim_probe(ca: Path, name: str) -> Probe:
    """A sim is ready when /_sim/state over TLS names it: a stray listener on its port does not count."""

    async def probe(host: str, port: int) -> bool:
        ctx = ssl.create_default_context(cafile=str(ca))
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        try:
            writer.write(f"GET /_sim/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = await reader.read(-1)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return answer.startswith(b"HTTP/1.1 200") and f'"name": "{name}"'.encode() in answer

    return probe


@dataclass(frozen=True, slots=True)
class LabOutcome:
    """How the lab ended: code 0 after a requested stop, 1 when a child died or failed to start."""

    code: int
    error: str | None = None


async def run_lab(p: LabPlan, say: Say, stop: asyncio.Event) -> LabOutcome:
    """Prepare the directory, start the sims and the balancer, print what to try, then wait for `stop`
    or for a child to die; stop every child in any case."""
    prepare(p)
    say(f"lab files written to {p.directory} (CA {p.ca}, config {p.config})")
    sims = [
        _Child(f"sim-cas {s.name}", sim_command(p, s), (s.address, s.port), _sim_probe(p.ca, s.name))
        for s in p.servers
    ]
    balancer = _Child("balancer (casarray run)", balancer_command(p), (p.listen_address, p.port), _accepts)
    children = [*sims, balancer]
    dns: asyncio.DatagramTransport | None = None
    try:
        if p.dns_port:
            dns, _ = await serve_dns(dns_records(p), p.listen_address, p.dns_port)
            first, last = p.servers[0], p.servers[-1]
            say(
                f"lab DNS listening on udp {p.listen_address}:{p.dns_port}: {p.namespace} and "
                f"{p.autodiscover} -> {p.listen_address}, {server_fqdn(first.name, p.domain)}-"
                f"{server_fqdn(last.name, p.domain)} -> {first.address}-{last.address}"
            )
        for child in sims:
            await _spawn(child)
        await asyncio.gather(*(_wait_accepting(child, stop) for child in sims))
        if stop.is_set():
            return LabOutcome(0)
        if not p.as_installed:
            say(await _apply_namespace(p))
        await _spawn(balancer)
        await _wait_accepting(balancer, stop)
        if stop.is_set():
            return LabOutcome(0)
        for line in try_lines(p):
            say(line)
        return await _watch(children, stop)
    except LabError as exc:
        return LabOutcome(1, str(exc))
    finally:
        await _stop_all(children[::-1])
        if dns is not None:
            dns.close()
        say("lab stopped")


async def _apply_namespace(p: LabPlan) -> str:
    """The seed's procedure with the generated scripts: collector, plan, apply (lab/procedure.py)."""
    try:
        applied = await asyncio.to_thread(apply_namespace, p.config, p.directory, p.targets, _quiet)
    except CasarrayError as exc:
        raise LabError(f"applying the namespace to the servers failed: {exc}") from None
    return (
        f"namespace {p.namespace} applied by {applied.apply} ({applied.summary or 'done'}); "
        f"inventory before: {applied.inventory}"
    )


def _quiet(line: str) -> None:
    """The scripts' own lines stay in their transcript in the lab directory."""


async def _spawn(child: _Child) -> None:
    try:
        # Same process group as the lab: a Ctrl-C in the terminal reaches every child too, and the
        # children never outlive a lab killed from its terminal.
        child.process = await asyncio.create_subprocess_exec(*child.command, stdin=asyncio.subprocess.DEVNULL)
    except OSError as exc:
        raise LabError(
            f"cannot start {child.label}: {exc.strerror or exc}", shlex.join(child.command)
        ) from exc


async def _wait_accepting(child: _Child, stop: asyncio.Event) -> None:
    """Probe the child until it is ready; fail if it exits first or takes too long."""
    assert child.process is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    host, port = child.address
    while not stop.is_set():
        if child.process.returncode is not None:
            raise LabError(
                f"{child.label} exited with code {child.process.returncode} before accepting on "
                f"{host}:{port}",
                hint="its own error is printed above",
            )
        with contextlib.suppress(OSError, TimeoutError):
            if await asyncio.wait_for(child.probe(host, port), PROBE_TIMEOUT):
                return
        if loop.time() > deadline:
            raise LabError(f"{child.label} did not accept on {host}:{port} within {START_TIMEOUT:g}s")
        await asyncio.sleep(0.1)


async def _watch(children: list[_Child], stop: asyncio.Event) -> LabOutcome:
    """Wait for `stop` or for the first child to exit."""
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children if c.process is not None}
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([stopped, *waits], return_when=asyncio.FIRST_COMPLETED)
        if stopped in done:
            return LabOutcome(0)
        # A Ctrl-C reaches the children too; give the lab's own signal handler a moment to say so.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopped), 0.5)
        if stop.is_set():
            return LabOutcome(0)
        child = next(waits[w] for w in waits if w in done)
        assert child.process is not None
        return LabOutcome(
            1, f"{child.label} exited unexpectedly with code {child.process.returncode}; stopping the lab"
        )
    finally:
        for task in [stopped, *waits]:
            task.cancel()
        await asyncio.gather(stopped, *waits, return_exceptions=True)


async def _stop_all(children: list[_Child]) -> None:
    """SIGTERM every running child, then SIGKILL what is still there after STOP_TIMEOUT."""
    running = [c.process for c in children if c.process is not None and c.process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)

    async def reap(process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    await asyncio.gather(*(reap(p) for p in running))
