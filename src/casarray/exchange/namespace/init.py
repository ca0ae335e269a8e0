"""`casarray init`: the balancer's config written from the inventory, with a comment on every choice.

The inventory (what `casarray namespace collector` wrote) already names the array: the servers with
their FQDNs (Get-ExchangeServer) and the virtual directories each one publishes. From it:
- servers: every server that publishes a client-access virtual directory or Outlook Anywhere, its FQDN
  as the address (a name keeps working when an address changes; `casarray run` resolves it at start);
- services: the virtual-directory types present, mapped through the service catalog, plus `rpc` when
  Outlook Anywhere is there (Outlook Anywhere has its own cmdlet, Get-OutlookAnywhere, and no
  virtual-directory Type);
- l4_require: the services every server publishes. Layer 4 judges a whole server by the services it
  requires, so a service one server lacks (its health check there answers 404) would take that server
  out for everything; such a service is left out and named in a comment;
- an admin: section whose token file `write_token` creates (mode 0600), so `casarray ctl` and the
  dashboard work at once;
- defaults that fit Exchange, each with the reason and its public source next to it.

The text is YAML for a person to read and edit; `render` checks it with the config loader and the
listener-certificate check of `casarray check` before returning it, so `check` accepts what `init`
writes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from casarray.admin.auth import split_listen
from casarray.config.load import ConfigErrors, parse_config
from casarray.config.model import Config, Health, Limits, Timeouts
from casarray.config.units import format_duration
from casarray.doctor.checks import listener_problems
from casarray.errors import CasarrayError
from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import Inventory
from casarray.exchange.namespace.names import host_name

Mode = Literal["l4", "l7"]

DEFAULT_ADMIN_LISTEN = "127.0.0.1:9090"
TOKEN_FILE_NAME = "admin.token"  # next to the config unless told otherwise


class InitError(CasarrayError):
    """`casarray init` cannot write a config from what it was given."""


@dataclass(frozen=True, slots=True)
class InitOptions:
    namespace: str
    vip: str
    autodiscover: str | None = None
    mode: Mode = "l4"
    certificate: Path | None = None  # l7: the certificate the Exchange servers use (PEM chain)
    key: Path | None = None  # l7: its private key
    ca: Path | None = None  # the CA that issued the servers' certificate, when not publicly trusted
    https_port: int = 443
    admin_listen: str = DEFAULT_ADMIN_LISTEN
    token_file: Path | None = None  # admin.token_file; None: an admin section without a token


@dataclass(frozen=True, slots=True)
class ArrayServer:
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Draft:
    """What `render` produced: the YAML text, the config it parses to, and notes for the operator."""

    text: str
    config: Config
    servers: tuple[ArrayServer, ...]
    services: tuple[str, ...]
    l4_require: tuple[str, ...]  # l4: the services every server publishes (empty in l7)
    notes: tuple[str, ...]  # also written into the YAML as comments


def array_servers(inventory: Inventory) -> tuple[tuple[ArrayServer, ...], tuple[str, ...]]:
    """The servers that publish client access, with their FQDNs; and notes about the ones left out."""
    publishing = {v.server.lower() for v in inventory.virtual_directories}
    publishing |= {o.server.lower() for o in inventory.outlook_anywhere}
    fqdn = {s.name.lower(): s.fqdn for s in inventory.servers}
    servers: list[ArrayServer] = []
    notes: list[str] = []
    missing: list[str] = []
    for name in inventory.server_names():
        if name.lower() not in publishing:
            notes.append(f"{name} is left out: it publishes no client-access virtual directory")
            continue
        address = fqdn.get(name.lower())
        if not address:
            missing.append(name)
            continue
        servers.append(ArrayServer(name, address.lower().rstrip(".")))
    if missing:
        raise InitError(
            f"no Fqdn for {', '.join(missing)} in the Servers list",
            where=inventory.source,
            hint="re-run 'casarray namespace collector': it lists every server with Get-ExchangeServer",
        )
    if not servers:
        raise InitError(
            "no server publishes a client-access virtual directory",
            where=inventory.source,
            hint="run the collector in the Exchange Management Shell of the organisation",
        )
    return tuple(servers), tuple(notes)


def array_services(
    inventory: Inventory, servers: Sequence[ArrayServer] = ()
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Services present in the inventory, in catalog order; and, for each service some of `servers`
    lack, the names of those servers (in their order)."""
    present: dict[str, set[str]] = {}
    for vdir in inventory.virtual_directories:
        present.setdefault(vdir.service.name, set()).add(vdir.server.lower())
    if inventory.outlook_anywhere:
        present["rpc"] = {o.server.lower() for o in inventory.outlook_anywhere}
    services = tuple(name for name in catalog.SERVICE_NAMES if name in present)
    if not services:
        raise InitError(
            "the inventory lists no client-access virtual directory",
            where=inventory.source,
            hint="run the collector in the Exchange Management Shell of the organisation",
        )
    lacking: dict[str, tuple[str, ...]] = {}
    for name in services:
        missing = tuple(s.name for s in servers if s.name.lower() not in present[name])
        if missing:
            lacking[name] = missing
    return services, lacking


def render(inventory: Inventory, options: InitOptions) -> Draft:
    """The commented YAML config for `inventory` and `options`; InitError on bad input."""
    if inventory.virtual_directories_only:
        raise InitError(
            "this is a list of virtual directories (Server, Name, InternalUrl, ExternalUrl): it names no "
            "server FQDN and no Outlook Anywhere, so it cannot say where the balancer sends connections",
            where=inventory.source,
            hint="write the inventory with 'casarray namespace collector' (the list is enough for "
            "'casarray namespace verify' and 'plan')",
        )
    namespace = host_name(options.namespace, what="--namespace")
    autodiscover = host_name(options.autodiscover, what="--autodiscover") if options.autodiscover else None
    vip = _vip(options.vip)
    try:
        split_listen(options.admin_listen)
    except ValueError as exc:
        raise InitError(str(exc), where="--admin-listen") from None
    servers, server_notes = array_servers(inventory)
    notes = list(server_notes)
    services, lacking = array_services(inventory, servers)
    required: tuple[str, ...] = ()
    if options.mode == "l4":
        required = tuple(name for name in services if name not in lacking)
        if not required:
            raise InitError(
                "no service is published by every server, so l4 (which judges a whole server) has no "
                "health check to judge them by",
                where=inventory.source,
                hint="use --mode l7 (one health check per service), or publish the same virtual "
                "directories on every server",
            )
    for name, missing in lacking.items():
        title = f"{catalog.get(name).title} ({name})"
        if options.mode == "l4":
            notes.append(
                f"{title} is not listed for {', '.join(missing)}: left out of l4_require, so its health "
                "check does not take that server out; a connection for it that reaches "
                f"{'that server' if len(missing) == 1 else 'those servers'} fails (publish it there, "
                "or use --mode l7)"
            )
        else:
            notes.append(
                f"{title} is not listed for {', '.join(missing)}: its health check fails there, so its "
                "requests go to the other servers"
            )
    certificate = key = None
    if options.mode == "l7":
        if options.certificate is None or options.key is None:
            raise InitError(
                "mode l7 needs --cert and --key",
                hint="give the certificate and key the Exchange servers use: Extended Protection accepts "
                "re-encryption only with the very same pair",
            )
        certificate, key = _absolute(options.certificate), _absolute(options.key)
    ca = _absolute(options.ca) if options.ca is not None else None
    if ca is not None and not ca.is_file():
        raise InitError("no such file", where=str(ca), hint="--ca is the PEM file of the issuing CA")
    token_file = _absolute(options.token_file) if options.token_file is not None else None
    text = _yaml(
        inventory.source,
        namespace,
        autodiscover,
        vip,
        options,
        certificate,
        key,
        ca,
        servers,
        services,
        required,
        lacking,
        token_file,
        notes,
    )
    try:
        config = parse_config(text, "<casarray init>")
    except ConfigErrors as exc:  # a bug here, not bad input: say what was generated
        raise InitError(f"the generated config is not valid: {exc}") from None
    # The same certificate check as `casarray check`: an error, never a note a reader may miss.
    problems = listener_problems(config, datetime.now(UTC))
    if problems:
        raise InitError(
            "; ".join(message for _, message in problems),
            where="--cert",
            hint="give the certificate and key the Exchange servers use; it must name every served name",
        )
    return Draft(text, config, servers, services, required, tuple(notes))


@dataclass(frozen=True, slots=True)
class Token:
    path: Path
    created: bool  # False: the file existed and its token is kept


def write_token(path: Path) -> Token:
    """Create the admin token file at `path` (mode 0600, created exclusively so nothing is overwritten)
    with a fresh random token; an existing non-empty file is kept, so a running balancer and the
    operators who hold its token keep working. InitError if it cannot be written or is empty."""
    # 32 random bytes: 256 bits, the strength `openssl rand -hex 32` gives (RFC 6750 §5.2 asks that a
    # bearer token cannot be guessed).
    token = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = -1
    except OSError as exc:
        raise InitError(f"cannot create the token file: {exc.strerror or exc}", where=str(path)) from None
    if fd < 0:
        try:
            kept = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InitError(f"cannot read the existing token file: {exc}", where=str(path)) from None
        if not kept:
            raise InitError(
                "the token file exists and is empty", where=str(path), hint="remove it to have one written"
            )
        return Token(path, created=False)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return Token(path, created=True)


def _vip(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        raise InitError(
            f"{value!r} is not an IP address", where="--vip", hint="the virtual IP, e.g. 10.0.1.250"
        ) from None
    if ip.is_unspecified:
        raise InitError(
            f"{value} listens everywhere; the namespace's DNS record needs one address",
            where="--vip",
            hint="give the virtual IP the balancer holds",
        )
    return str(ip)


def _absolute(path: Path) -> Path:
    # The config is read by `casarray run` from wherever it is started: paths must not depend on it.
    return path.expanduser().absolute()


_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@-]*$")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"})


def _scalar(value: str) -> str:
    """A YAML scalar for `value`: plain when unambiguous, else a JSON (= YAML double-quoted) string."""
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS and not _number(value):
        return value
    return json.dumps(value)


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _yaml(
    source: str,
    namespace: str,
    autodiscover: str | None,
    vip: str,
    options: InitOptions,
    certificate: Path | None,
    key: Path | None,
    ca: Path | None,
    servers: Sequence[ArrayServer],
    services: Sequence[str],
    required: Sequence[str],
    lacking: dict[str, tuple[str, ...]],
    token_file: Path | None,
    notes: Sequence[str],
) -> str:
    # The model's defaults are the ones that fit Exchange; they are written out so they can be read.
    health, timeouts, limits = Health(), Timeouts(), Limits()
    out: list[str] = [
        f"# casarray balancer configuration, written by `casarray init` from {Path(source).name}.",
        "# Every key, its default and meaning: docs/config.md.",
        "#   casarray check -c <this file>     validate it",
        "#   casarray doctor -c <this file>    once running: DNS, certificates, health, the VIP end to end",
    ]
    if notes:
        out += ["#", "# Notes:"] + [f"#   - {note}" for note in notes]
    out += [
        "",
        "# The unified client-access name: every virtual directory's URL uses it",
        "# (casarray namespace plan/script/verify set and check that on the servers).",
        f"namespace: {namespace}",
    ]
    if autodiscover:
        out += [
            "# Outlook outside the domain looks for autodiscover.<smtp domain>; served on the same VIP.",
            f"autodiscover: {autodiscover}",
        ]
    out += [""]
    if options.mode == "l4":
        out += [
            "# l4: TCP pass-through. The client's TLS reaches Exchange untouched, so it keeps working with",
            "# Extended Protection (on by default from Exchange 2019 CU14). Layer 4 cannot tell services",
            "# apart: a server takes connections only while every service of l4_require is up. Microsoft",
            "# recommends l7 with one health check per service (Load balancing in Exchange Server,",
            "# scenario B); l7 needs the servers' own certificate and key (casarray init --mode l7).",
            "mode: l4",
        ]
    else:
        out += [
            "# l7: TLS is terminated and re-encrypted to the servers (SSL bridging), requests are routed",
            "# by virtual directory and each service is health-checked on its own: Microsoft's",
            "# recommended design (Load balancing in Exchange Server, scenario B).",
            "mode: l7",
        ]
    out += [
        "listen:",
        f"  address: {vip}   # the VIP: the namespace's DNS A record points here (casarray namespace dns)",
        f"  https_port: {options.https_port}   # Exchange's front end (Default Web Site); never 444, "
        "the back-end site",
    ]
    if options.mode == "l7":
        assert certificate is not None
        assert key is not None
        out += [
            "",
            "# The certificate clients see: the Exchange servers' own. Extended Protection accepts SSL",
            "# bridging only when the balancer presents the same certificate and key as the servers.",
            "tls:",
            f"  certificate: {_scalar(str(certificate))}",
            f"  key: {_scalar(str(key))}",
        ]
    out += [
        "",
        "# TLS to the servers (health checks" + (", re-encryption" if options.mode == "l7" else "") + "):",
        "# their certificate is verified for the namespace, the name every server's certificate carries.",
        "upstream_tls:",
    ]
    if ca is not None:
        out.append(f"  ca: {_scalar(str(ca))}   # the CA that issued the Exchange certificate")
    else:
        out.append(
            "  # ca: /etc/casarray/internal-ca.pem   # set when an internal CA issued the Exchange certificate"
        )
    out += [
        "  verify: true",
        "",
        "# From the inventory's Servers list (Get-ExchangeServer). Addresses are FQDNs, resolved when",
        "# casarray starts; port 443 is the front end every client uses.",
        "servers:",
    ]
    out += [f"  - {{name: {_scalar(s.name)}, address: {_scalar(s.address)}}}" for s in servers]
    out += [
        "",
        "# The virtual directories the inventory lists"
        + (", and rpc for Outlook Anywhere" if "rpc" in services else "")
        + ";",
        "# each is checked on every server at /<vdir>/healthcheck.htm (Managed Availability).",
        f"services: [{', '.join(services)}]",
        "",
    ]
    if options.mode == "l4":
        out += [
            "# l4 sees no paths: a server takes connections only while every service listed here is up.",
            "# These are the services every server publishes; a service a server lacks would fail its",
            "# health check there and take that server out for everything.",
        ]
        out += [
            f"#   {name} is left out: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no "
            f"{catalog.get(name).title}"
            for name, missing in lacking.items()
        ]
        out += [f"l4_require: [{', '.join(required)}]", ""]
    out += [
        "# No affinity: since Exchange 2013 any server can serve any request, and Microsoft advises",
        "# against it (it lowers capacity). Round robin spreads new connections evenly.",
        "balance: roundrobin",
        "affinity: none",
        "",
        "# One check per (server, service) every interval; two failures take a member down, so one lost",
        "# packet does not, and a component set Inactive for maintenance stops the 200 within seconds.",
        "health:",
        f"  interval: {format_duration(health.interval)}",
        f"  timeout: {format_duration(health.timeout)}",
        f"  rise: {health.rise}",
        f"  fall: {health.fall}",
        "",
        "timeouts:",
        f"  connect: {format_duration(timeouts.connect)}",
        "  # ActiveSync Direct Push holds a request up to 59 minutes (MS-ASCMD 2.2.3.88.1), EWS streaming",
        "  # up to 30, Outlook Anywhere 15 of silence: a shorter idle timeout cuts phones and Outlook off.",
        f"  client_idle: {format_duration(timeouts.client_idle)}",
        f"  server_idle: {format_duration(timeouts.server_idle)}",
        "",
        "limits:",
        f"  maxconn: {limits.maxconn}   # Outlook keeps several connections per user open all day",
        "",
        "# The admin API and dashboard (casarray ctl, http://<listen>/). On loopback, reads need no token;",
        "# changes (drain, maint, ready, reload) need the bearer token in token_file (docs/operations.md).",
        "admin:",
        f"  listen: {_scalar(options.admin_listen)}",
    ]
    if token_file is not None:
        out.append(
            f"  token_file: {_scalar(str(token_file))}   # mode 0600: whoever reads it may change states"
        )
    out.append("")
    return "\n".join(out)
