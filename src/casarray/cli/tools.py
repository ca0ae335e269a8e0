"""`casarray doctor`, `casarray init` and `casarray export haproxy|keepalived|bird`. Thin: parse, call the
library, print.

Exit codes (DESIGN.md §4): 0 success, 1 a failed check or bad input (one "error: …" line on stderr),
2 a usage error.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from casarray.cli.core import ConfigOption, config_path, errors_to_exit, fail, load_or_exit, plural
from casarray.config.units import parse_duration
from casarray.doctor import failed, per_server, per_service, run_doctor, summary
from casarray.doctor.client import ClientOptions, ClientReport, run_client_check
from casarray.doctor.discovery import MAX_REDIRECTS
from casarray.doctor.resolution import parse_nameserver
from casarray.doctor.wire import Credentials
from casarray.errors import CasarrayError
from casarray.exchange.namespace.init import (
    DEFAULT_ADMIN_LISTEN,
    TOKEN_FILE_NAME,
    InitOptions,
    render,
    write_token,
)
from casarray.exchange.namespace.inventory import load_inventory
from casarray.export.bird import DEFAULT_HOLD_TIME, MAX_ASN, BirdOptions, export_bird
from casarray.export.haproxy import GeneratedFile, export_haproxy
from casarray.export.keepalived import (
    DEFAULT_CASARRAY,
    DEFAULT_PRIORITY,
    KeepalivedOptions,
    export_keepalived,
)

export_app = typer.Typer(
    help="Write an equivalent configuration for another load balancer.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: no <bool> type column on flags
)

_STATUS_STYLE = {"ok": "green", "warn": "bold yellow", "fail": "bold red"}


class Mode(enum.StrEnum):
    l4 = "l4"
    l7 = "l7"


class VrrpState(enum.StrEnum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"


def doctor(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    nameserver: Annotated[
        list[str] | None,
        typer.Option(
            "--nameserver",
            help="Ask this DNS server (IP[:port]; repeatable) instead of /etc/resolv.conf's, e.g. the "
            "internal servers of a split-brain zone.",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="ADDRESS",
            help="Check from the client's side instead: find Autodiscover for this e-mail address as "
            "Outlook and a phone do, and judge every URL it tells them.",
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            metavar="FILE",
            help="--user: log on with the password on this file's first line (NTLM, Negotiate or Basic, "
            "as the server offers).",
        ),
    ] = None,
    login: Annotated[
        str | None,
        typer.Option(
            "--login",
            metavar="NAME",
            help="--user: the name to log on with, DOMAIN\\user or user@domain (default: the address).",
        ),
    ] = None,
    scp: Annotated[
        list[str] | None,
        typer.Option(
            "--scp",
            metavar="URL",
            help="--user: an Autodiscover SCP URL a domain-joined client reads from Active Directory "
            "(repeatable, in the order the client tries them).",
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            metavar="FILE",
            help="--user: take the SCP URLs from this inventory ('casarray namespace collector').",
        ),
    ] = None,
    allow_redirect: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-redirect",
            metavar="NAME",
            help="--user: a name Autodiscover may redirect to besides the namespace and the Autodiscover "
            "name (repeatable).",
        ),
    ] = None,
    max_redirects: Annotated[
        int,
        typer.Option(
            "--max-redirects", metavar="N", min=0, max=50, help="--user: follow at most N redirects."
        ),
    ] = MAX_REDIRECTS,
) -> None:
    """Check a deployment from the balancer's side: DNS, certificates, each server's health, the VIP.
    With --user, from a client's side: Autodiscover as Outlook and a phone find it, and every URL it
    tells them (on the namespace, resolving to the VIP, answering through it).

    Exit 1 when any check fails; warnings alone exit 0.

    Example: casarray doctor -c /etc/casarray/casarray.yaml --nameserver 10.0.1.5

    Example: casarray doctor -c casarray.yaml --user alice@contoso.com --password-file alice.txt
    """
    user_only = {
        "--password-file": password_file,
        "--login": login,
        "--scp": scp,
        "--inventory": inventory,
        "--allow-redirect": allow_redirect,
    }
    given = [name for name, value in user_only.items() if value]
    if user is None and given:
        raise typer.BadParameter("only with --user", param_hint=f"'{given[0]}'")
    cfg = load_or_exit(config_path(config))
    try:
        servers = [parse_nameserver(text) for text in nameserver or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--nameserver'") from None
    if user is not None:
        options = ClientOptions(
            address=user,
            credentials=_credentials(user, password_file, login),
            scp=tuple(scp or ()) + _inventory_scp(inventory),
            allow=tuple(allow_redirect or ()),
            max_redirects=max_redirects,
            nameservers=servers,
        )
        report = asyncio.run(run_client_check(cfg, options))
        if as_json:
            typer.echo(json.dumps(report.as_json(), indent=2))
        else:
            _print_client(report)
        if report.failed:
            raise typer.Exit(1)
        return
    rows = asyncio.run(run_doctor(cfg, nameservers=servers))
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        console = _console()
        table = Table("Check", "Target", "Status", "Detail")
        for row in rows:
            table.add_row(
                row.check, row.target, Text(row.status, style=_STATUS_STYLE[row.status]), row.detail
            )
        console.print(table)
        # The end of a long report: one line per server and per service, then the verdict.
        ends = Table("Server / service", "Status", "Summary", title="Summary", title_justify="left")
        for tally in per_server(rows, [s.name for s in cfg.servers]) + per_service(rows, cfg.services):
            ends.add_row(tally.name, Text(tally.status, style=_STATUS_STYLE[tally.status]), tally.detail)
        console.print(ends)
        console.print(Text(summary(rows), style="bold red" if failed(rows) else "bold green"))
    if failed(rows):
        raise typer.Exit(1)


def _credentials(address: str, password_file: Path | None, login: str | None) -> Credentials | None:
    """The log-on of `doctor --user`: the first line of the password file (never printed)."""
    if password_file is None:
        return None
    with errors_to_exit():
        text = password_file.read_text(encoding="utf-8-sig")
    password = text.splitlines()[0] if text else ""
    if not password:
        raise fail(f"{password_file}: the first line is empty; it must hold the password")
    return Credentials(login or address, password)


def _inventory_scp(path: Path | None) -> tuple[str, ...]:
    """The SCP URLs of an inventory, in file order (what Active Directory would list)."""
    if path is None:
        return ()
    with errors_to_exit():
        found = load_inventory(path)
    return tuple(
        c.autodiscover_internal_uri for c in found.client_access_services if c.autodiscover_internal_uri
    )


def _print_client(report: ClientReport) -> None:
    console = _console()
    steps = Table(title="Finding Autodiscover", title_justify="left")
    steps.add_column("Step")
    steps.add_column("URL", overflow="fold")
    steps.add_column("Status")
    steps.add_column("Detail", overflow="fold")
    for row in report.steps:
        steps.add_row(row.check, row.target, Text(row.status, style=_STATUS_STYLE[row.status]), row.detail)
    console.print(steps)
    urls = Table(title=f"What {report.address}'s clients are told", title_justify="left")
    urls.add_column("Protocol")
    urls.add_column("URL told", overflow="fold", ratio=3)
    urls.add_column("On namespace", ratio=2)
    urls.add_column("Via VIP", ratio=2)
    urls.add_column("Answered by")
    urls.add_column("Verdict", ratio=2)
    for url in report.urls:
        verdict = Text(url.status, style=_STATUS_STYLE[url.status])
        verdict.append(f" {url.detail}" if url.detail else "", style="")
        urls.add_row(
            f"{url.protocol}\n(told by {url.told_by})", url.url, url.on_namespace, url.via_vip,
            url.answered_by or "—", verdict,
        )  # fmt: skip
    console.print(urls)
    console.print("\n".join(report.autoconfiguration), markup=False)
    fails = sum(r.status == "fail" for r in report.steps) + sum(r.status == "fail" for r in report.urls)
    end = f"{plural(len(report.urls), 'URL')} told, {plural(fails, 'failure')}"
    console.print(Text(end, style="bold red" if report.failed else "bold green"))


def init(
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory", "-i", help="The inventory JSON written by 'casarray namespace collector'."
        ),
    ],
    namespace: Annotated[
        str,
        typer.Option("--namespace", "-n", help="The unified client-access name, e.g. outlook.contoso.com."),
    ],
    vip: Annotated[str, typer.Option(help="The virtual IP the balancer listens on.")],
    autodiscover: Annotated[
        str | None, typer.Option(help="Also serve this Autodiscover name on the VIP.")
    ] = None,
    mode: Annotated[
        Mode, typer.Option(help="l4 (TCP pass-through) or l7 (TLS bridging; needs --cert and --key).")
    ] = Mode.l4,
    cert: Annotated[
        Path | None, typer.Option(help="l7: the certificate (PEM chain) the Exchange servers use.")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="l7: the private key of that certificate.")] = None,
    ca: Annotated[
        Path | None, typer.Option(help="The CA (PEM) that issued the Exchange certificate, when internal.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The config file to write.")] = Path(
        "casarray.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    https_port: Annotated[
        int, typer.Option("--https-port", min=1, max=65535, help="The port clients connect to on the VIP.")
    ] = 443,
    admin_listen: Annotated[
        str, typer.Option("--admin-listen", help="Address:port of the admin API and dashboard.")
    ] = DEFAULT_ADMIN_LISTEN,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help=f"Where to write the admin token (mode 0600; an existing one is kept); default: "
            f"{TOKEN_FILE_NAME} next to the config.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the balancer's config from the inventory: servers, services, commented defaults.

    Example: casarray init -i inventory.json -n outlook.contoso.com --vip 10.0.1.250
    """
    if mode is Mode.l7 and (cert is None or key is None):
        raise typer.BadParameter(
            "mode l7 needs the certificate and key the Exchange servers use", param_hint="'--cert' / '--key'"
        )
    options = InitOptions(
        namespace=namespace,
        vip=vip,
        autodiscover=autodiscover,
        mode="l7" if mode is Mode.l7 else "l4",
        certificate=cert,
        key=key,
        ca=ca,
        https_port=https_port,
        admin_listen=admin_listen,
        token_file=token_file if token_file is not None else output.parent / TOKEN_FILE_NAME,
    )
    with errors_to_exit():
        draft = render(load_inventory(inventory), options)
        if output.exists() and not force:  # before the token file is written: nothing is left half done
            raise CasarrayError("exists already", where=str(output), hint="use --force to overwrite it")
        assert options.token_file is not None
        token = write_token(options.token_file)
        _write(output, draft.text.encode("utf-8"), force=force)
    typer.echo(
        f"Wrote {output}: mode {draft.config.mode}, {plural(len(draft.servers), 'server')}, "
        f"services {', '.join(draft.services)}."
    )
    # The token itself is never printed: terminals are logged and shared.
    if token.created:
        typer.echo(
            f"Wrote the admin token to {token.path} (mode 0600); casarray ctl reads it from the config."
        )
    else:
        typer.echo(f"Kept the admin token in {token.path}.")
    typer.echo(f"Dashboard: http://{admin_listen}/ (it asks for the token to change a state).")
    for note in draft.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"Next: casarray check -c {output}, then casarray run -c {output}.")


@export_app.command("haproxy")
def export_haproxy_command(
    config: ConfigOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write haproxy.cfg here instead of stdout.")
    ] = None,
    bundle_dir: Annotated[
        Path | None,
        typer.Option(
            "--bundle-dir",
            help="l7: where to write the certificate+key PEM HAProxy needs, when the config keeps them in "
            "two files; default: the directory of --output (or the current one).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write an equivalent haproxy.cfg (HAProxy 2.6): l4 as mode tcp, l7 as mode http with SSL bridging.

    Example: casarray export haproxy -c casarray.yaml -o /etc/haproxy/haproxy.cfg
    """
    config = config_path(config)
    cfg = load_or_exit(config)
    directory = bundle_dir or (output.parent if output is not None else Path.cwd())
    with errors_to_exit():
        result = export_haproxy(cfg, str(config), bundle_dir=directory)
        for generated in result.files:
            _write_generated(generated, force=force)
        if output is not None:
            _write(output, result.text.encode("utf-8"), force=force)
    if output is None:
        typer.echo(result.text, nl=False)
    else:
        typer.echo(f"Wrote {output}. Check it with: haproxy -c -f {output}")
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)


@export_app.command("keepalived")
def export_keepalived_command(
    config: ConfigOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write keepalived.conf here instead of stdout.")
    ] = None,
    interface: Annotated[
        str, typer.Option("--interface", help="The network interface that carries the VIP.")
    ] = "eth0",
    state: Annotated[
        VrrpState,
        typer.Option(
            "--state", help="This host's initial VRRP state: MASTER on one host, BACKUP on the other."
        ),
    ] = VrrpState.MASTER,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority",
            min=1,
            max=254,
            help=f"VRRP priority (1..254); default {DEFAULT_PRIORITY['MASTER']} for MASTER, "
            f"{DEFAULT_PRIORITY['BACKUP']} for BACKUP.",
        ),
    ] = None,
    router_id: Annotated[
        int | None,
        typer.Option(
            "--router-id",
            min=1,
            max=255,
            help="virtual_router_id (1..255), the same on both hosts; default: derived from the namespace.",
        ),
    ] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            "--peer", help="The other host's address for unicast VRRP (repeatable); default: multicast."
        ),
    ] = None,
    nopreempt: Annotated[
        bool,
        typer.Option(
            "--nopreempt", help="A host that recovers leaves the VIP where it is (one move per failure)."
        ),
    ] = False,
    preempt_delay: Annotated[
        str | None,
        typer.Option(
            "--preempt-delay",
            metavar="DURATION",
            help="A host of higher priority that recovers takes the VIP back after this long (e.g. 30s); "
            "default: at once.",
            show_default=False,
        ),
    ] = None,
    notify_log: Annotated[
        Path | None,
        typer.Option(
            "--notify-log",
            metavar="FILE",
            help="Append one line per VRRP transition to FILE; default: syslog (logger -t casarray-vrrp).",
            show_default=False,
        ),
    ] = None,
    casarray: Annotated[
        Path | None,
        typer.Option(
            "--casarray",
            metavar="PATH",
            help="The casarray command the check runs; default: this one.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a keepalived.conf (keepalived 2.2) that holds listen.address, the VIP, on a pair of hosts:
    it moves when `casarray ctl health` fails (needs admin: in the config).

    Example: casarray export keepalived -c casarray.yaml --state BACKUP --peer 10.0.1.21 --nopreempt
    """
    if nopreempt and preempt_delay is not None:
        raise typer.BadParameter(
            "--nopreempt and --preempt-delay exclude each other", param_hint="--preempt-delay"
        )
    delay = None
    if preempt_delay is not None:
        try:
            delay = parse_duration(preempt_delay)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--preempt-delay") from None
    config = config_path(config)
    cfg = load_or_exit(config)
    options = KeepalivedOptions(
        interface=interface,
        state="MASTER" if state is VrrpState.MASTER else "BACKUP",
        priority=priority,
        router_id=router_id,
        peers=tuple(peer or ()),
        casarray=str(casarray.absolute()) if casarray is not None else _this_casarray(),
        nopreempt=nopreempt,
        preempt_delay=delay,
        notify_log=str(notify_log.absolute()) if notify_log is not None else None,
    )
    with errors_to_exit():
        text = export_keepalived(cfg, str(config), options)
        if output is not None:
            _write(output, text.encode("utf-8"), force=force)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"Wrote {output}. Check it with: keepalived --config-test -f {output}")


@export_app.command("bird")
def export_bird_command(
    router: Annotated[
        list[str],
        typer.Option(
            "--router",
            help="The upstream router's address, on a network this node is connected to (repeatable).",
        ),
    ],
    asn: Annotated[int, typer.Option("--asn", min=1, max=MAX_ASN, help="The router's AS number.")],
    config: ConfigOption = None,
    local_asn: Annotated[
        int | None,
        typer.Option(
            "--local-asn",
            min=1,
            max=MAX_ASN,
            help="This node's AS number (the same on every node); default: --asn (iBGP).",
        ),
    ] = None,
    router_id: Annotated[
        str | None,
        typer.Option(
            "--router-id",
            help="BIRD's router id, an IPv4 address (e.g. this node's own); default: BIRD takes the lowest "
            "IPv4 address of a non-loopback interface.",
        ),
    ] = None,
    bfd: Annotated[
        bool, typer.Option("--bfd", help="Detect a dead node with BFD in 300 ms (the router must run BFD).")
    ] = False,
    hold_time: Annotated[
        int,
        typer.Option(
            "--hold-time",
            min=1,
            max=65535,
            help="BGP hold time in seconds: a silent node is withdrawn after it.",
        ),
    ] = DEFAULT_HOLD_TIME,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write bird.conf here instead of stdout.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a bird.conf (BIRD 2) that announces listen.address, the VIP, to the router by BGP while
    casarray is healthy ('casarray announce' enables and withdraws it), for active/active nodes by ECMP.

    Example: casarray export bird -c casarray.yaml --router 10.0.1.1 --asn 65000 --local-asn 65001
    """
    config = config_path(config)
    cfg = load_or_exit(config)
    options = BirdOptions(
        routers=tuple(router),
        asn=asn,
        local_asn=local_asn,
        router_id=router_id,
        bfd=bfd,
        hold_time=hold_time,
    )
    with errors_to_exit():
        text = export_bird(cfg, str(config), options)
        if output is not None:
            _write(output, text.encode("utf-8"), force=force)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"Wrote {output}. Check it with: bird -p -c {output}")


def _this_casarray() -> str:
    """The casarray command running now (its console script), else the one on PATH, else the packaged
    path: what keepalived's check runs."""
    running = Path(sys.argv[0])
    if running.name == "casarray" and running.is_file():
        return str(running.absolute())
    found = shutil.which("casarray")
    return str(Path(found).absolute()) if found else DEFAULT_CASARRAY


def _write(path: Path, data: bytes, *, force: bool) -> None:
    """Write `path`; an existing file is kept unless `force` (exclusive create, so no race either)."""
    try:
        with path.open("wb" if force else "xb") as f:
            f.write(data)
    except FileExistsError:
        raise CasarrayError("exists already", where=str(path), hint="use --force to overwrite it") from None


def _write_generated(generated: GeneratedFile, *, force: bool) -> None:
    path = generated.path
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, generated.mode)
    except FileExistsError:
        raise CasarrayError("exists already", where=str(path), hint="use --force to overwrite it") from None
    with os.fdopen(fd, "wb") as f:
        f.write(generated.content)
    os.chmod(path, generated.mode)  # O_CREAT's mode does not apply to a file that existed


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 200  # piped: wide enough that a detail rarely wraps
    return console


def register(app: typer.Typer) -> None:
    app.command("doctor", short_help="Check DNS, certificates, servers and the VIP.")(doctor)
    app.command("init", short_help="Write a config from the namespace inventory.")(init)
    app.add_typer(export_app, name="export", short_help="Write haproxy.cfg, keepalived.conf or bird.conf.")
