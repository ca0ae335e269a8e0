"""`casarray sim-cas` and `casarray lab` (the library parts live in casarray.lab)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from casarray.cli.core import (
    ConfigOption,
    config_path,
    errors_to_exit,
    fail,
    load_or_exit,
    plural,
    setup_logging,
)
from casarray.errors import CasarrayError
from casarray.exchange.namespace.inventory import load_inventory
from casarray.lab import LabError
from casarray.lab import runner as lab_runner
from casarray.lab.ems import read_script, run_script
from casarray.lab.pki import DEFAULT_DOMAIN, server_fqdn
from casarray.lab.procedure import take_inventory
from casarray.lab.settings import ServerSettings
from casarray.lab.sim import SimCas, parse_listen
from casarray.lab.sim_mail import MailPort, MailSimCas, SimMail
from casarray.lab.users import Credentials

T = TypeVar("T")


class LabMode(StrEnum):
    l4 = "l4"
    l7 = "l7"


def _fail(message: str) -> typer.Exit:
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    return typer.Exit(1)


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (as the balancer does), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


def sim_cas(
    name: Annotated[str, typer.Option(help="Server name, e.g. MB1 (sent as X-FEServer).")],
    cert: Annotated[Path, typer.Option(help="PEM certificate chain the server presents.")],
    key: Annotated[Path, typer.Option(help="PEM private key of that certificate.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (HTTPS).")] = "127.0.0.2:8443",
    domain: Annotated[str, typer.Option(help="AD/DNS domain: the FQDN is <name>.<domain>.")] = DEFAULT_DOMAIN,
    ntlm_users: Annotated[
        Path | None,
        typer.Option(help="Enable NTLM/Negotiate with users from this file (DOMAIN:user:password lines)."),
    ] = None,
    extended_protection: Annotated[
        bool,
        typer.Option(help="Require NTLM channel binding to this server's certificate (Extended Protection)."),
    ] = False,
    imap: Annotated[
        list[int] | None, typer.Option(help="IMAP4 port (STARTTLS), e.g. 143; repeatable.")
    ] = None,
    imaps: Annotated[list[int] | None, typer.Option(help="IMAP4 implicit-TLS port, e.g. 993.")] = None,
    pop3: Annotated[list[int] | None, typer.Option(help="POP3 port (STLS), e.g. 110.")] = None,
    pop3s: Annotated[list[int] | None, typer.Option(help="POP3 implicit-TLS port, e.g. 995.")] = None,
    smtp: Annotated[
        list[int] | None, typer.Option(help="SMTP port (STARTTLS, no AUTH needed), e.g. 25.")
    ] = None,
    submission: Annotated[
        list[int] | None, typer.Option(help="SMTP submission port (STARTTLS, then AUTH), e.g. 587.")
    ] = None,
    smtps: Annotated[
        list[int] | None, typer.Option(help="SMTP implicit-TLS submission port, e.g. 465.")
    ] = None,
    settings: Annotated[
        Path | None,
        typer.Option(
            help="Start with this server's vdir URLs, Outlook Anywhere and SCP from an inventory-shaped "
            "JSON file (what GET /_sim/settings or 'namespace collector' writes); default: as installed."
        ),
    ] = None,
) -> None:
    """Run one simulated Exchange server (HTTPS, every vdir, healthcheck.htm, X-FEServer, optional NTLM;
    optional IMAP4, POP3 and SMTP front ends on the same address).

    Controls (direct only): /_sim/state, /_sim/server/down|up, /_sim/service/NAME/down|up,
    /_sim/mail/[imap|pop3|smtp/]up|down|broken, /_sim/latency?ms=N, /_sim/requests, /_sim/reset,
    /_sim/settings (GET: vdir URLs, Outlook Anywhere, SCP as an inventory; POST: change one object).
    Autodiscover: POST /Autodiscover/Autodiscover.xml (POX) and /autodiscover/autodiscover.json (v2),
    answered from those settings. See docs/lab.md.

    Example: casarray sim-cas --name MB1 --cert mb1.pem --key mb1.key --listen 127.0.0.2:8443
    """
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _fail(f"--listen {exc}") from None
    mail_ports = [
        *(MailPort("imap", p) for p in imap or ()),
        *(MailPort("imap", p, implicit_tls=True) for p in imaps or ()),
        *(MailPort("pop3", p) for p in pop3 or ()),
        *(MailPort("pop3", p, implicit_tls=True) for p in pop3s or ()),
        *(MailPort("smtp", p) for p in smtp or ()),
        *(MailPort("smtp", p, submission=True) for p in submission or ()),
        *(MailPort("smtp", p, implicit_tls=True, submission=True) for p in smtps or ()),
    ]
    for spec in mail_ports:
        if not 1 <= spec.port <= 65535:
            raise _fail(f"--{spec.label} {spec.port}: port must be 1..65535")
    if len({spec.port for spec in mail_ports} | {port}) != len(mail_ports) + 1:
        raise _fail("each mail port must differ from the others and from the --listen port")
    initial: ServerSettings | None = None
    if settings is not None:
        try:
            initial = ServerSettings.from_inventory(load_inventory(settings), name, server_fqdn(name, domain))
        except CasarrayError as exc:
            raise _fail(f"--settings {exc}") from None
    sim: SimCas
    if mail_ports:
        try:
            credentials = (
                Credentials.from_file(ntlm_users, domain)
                if ntlm_users is not None
                else Credentials(domain=domain)
            )
        except LabError as exc:
            raise _fail(str(exc)) from None
        mail = SimMail(name, certificate=cert, key=key, ports=mail_ports, host=host, domain=domain,
                       credentials=credentials)  # fmt: skip
        sim = MailSimCas(name, mail=mail, certificate=cert, key=key, host=host, port=port, domain=domain,
                         ntlm_users=ntlm_users, extended_protection=extended_protection,
                         settings=initial)  # fmt: skip
    else:
        sim = SimCas(name, certificate=cert, key=key, host=host, port=port, domain=domain,
                     ntlm_users=ntlm_users, extended_protection=extended_protection,
                     settings=initial)  # fmt: skip
    setup_logging()  # one line per settings change and per refused control

    async def serve() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await sim.start()
        try:
            typer.echo(f"sim-cas {sim.name} listening on {sim.url}", err=True)
            if mail_ports:
                listeners = ", ".join(f"{spec.label} {host}:{spec.port}" for spec in mail_ports)
                typer.echo(f"sim-cas {sim.name} mail on {listeners}", err=True)
            await stop.wait()
        finally:
            await sim.stop()

    try:
        _run(serve())
    except LabError as exc:
        raise _fail(str(exc)) from None


def lab(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for the CA, certificate and config.")
    ] = Path("lab-run"),
    port: Annotated[int, typer.Option(help="Port of the balancer on 127.0.0.1.")] = 8443,
    mode: Annotated[LabMode, typer.Option(help="l4: TCP pass-through; l7: TLS termination.")] = LabMode.l7,
    sim_port: Annotated[int, typer.Option(help="Port of the simulated servers on 127.0.0.2-4.")] = 8443,
    ntlm: Annotated[bool, typer.Option(help="Let the simulated servers demand NTLM on their vdirs.")] = True,
    admin_port: Annotated[
        int, typer.Option(help="Admin API and dashboard port on 127.0.0.1 (0: none).")
    ] = 9090,
    mail: Annotated[
        bool,
        typer.Option(
            help="Also IMAP4, POP3 and SMTP: on the servers and through the balancer (l4 listeners)."
        ),
    ] = False,
    dns_port: Annotated[
        int,
        typer.Option(
            help="Port of the lab's DNS server on udp 127.0.0.1: the namespace and Autodiscover on the "
            "VIP, each server's FQDN on its address, for 'casarray doctor --nameserver' (0: none)."
        ),
    ] = 8053,
    as_installed: Annotated[
        bool,
        typer.Option(
            "--as-installed",
            help="Leave every URL on its server's own name, as Exchange setup does (default: the lab "
            "runs the generated apply script, so everything is on the namespace).",
        ),
    ] = False,
) -> None:
    """Start a lab: a CA, 3 simulated Exchange servers on 127.0.0.2-4, a config, the balancer, and a DNS
    server for the lab's names.

    The servers' vdir URLs, Outlook Anywhere and SCP are moved to the namespace by the very scripts
    'casarray namespace' writes (collector, then apply), run by the lab's PowerShell; --as-installed
    leaves them as setup does, to rehearse that procedure with 'lab inventory' and 'lab apply'.
    Prints what to try, 'casarray doctor --user' (the client's side) included; Ctrl-C stops everything.

    Example: casarray lab --mode l4 --mail
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        plan = lab_runner.plan(
            directory,
            port=port,
            mode=mode.value,
            sim_port=sim_port,
            ntlm=ntlm,
            mail=mail,
            admin_port=admin_port,
            as_installed=as_installed,
            dns_port=dns_port,
        )
    except LabError as exc:
        raise _fail(str(exc)) from None

    async def main() -> lab_runner.LabOutcome:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        return await lab_runner.run_lab(plan, typer.echo, stop)

    try:
        outcome = _run(main())
    except LabError as exc:
        raise _fail(str(exc)) from None
    if outcome.error:
        raise _fail(outcome.error)


def inventory(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The inventory JSON to write (the collector's -Path).")
    ],
    config: ConfigOption = None,
) -> None:
    """Take an inventory of the lab's servers: run the collector script ('casarray namespace collector')
    against them, reaching each server of the config directly (never through the balancer).

    Example: casarray lab inventory -c lab-run/casarray.yaml -o lab-run/inventory.json
    """
    cfg = load_or_exit(config_path(config))
    with errors_to_exit():
        found = take_inventory(cfg, output, typer.echo)
    typer.echo(
        f"{plural(len(found.servers), 'server')}, {plural(len(found.virtual_directories), 'virtual directory', 'virtual directories')}: "
        f"next, 'casarray namespace plan -i {output} -n NAMESPACE'"
    )


def apply(
    script: Annotated[
        Path, typer.Argument(help="A script 'casarray namespace script' wrote (apply or rollback).")
    ],
    config: ConfigOption = None,
    what_if: Annotated[
        bool, typer.Option("--what-if", help="Pass -WhatIf: show what would change, change nothing.")
    ] = False,
    transcript: Annotated[
        Path | None, typer.Option(help="Pass -TranscriptPath (default: next to the script).")
    ] = None,
) -> None:
    """Run an apply or rollback script against the lab's servers, as the Exchange Management Shell
    would: parsed with PowerShell's grammar, every statement carried out, anything the lab's shell does
    not understand an error naming its line (exit 1, like any error that ends the script).

    Example: casarray lab apply -c lab-run/casarray.yaml lab-run/apply.ps1 --what-if
    """
    cfg = load_or_exit(config_path(config))
    arguments: dict[str, object] = {}
    if what_if:
        arguments["WhatIf"] = True
    if transcript is not None:
        arguments["TranscriptPath"] = str(transcript)
    with errors_to_exit():
        outcome = run_script(
            read_script(script),
            script.name,
            cfg,
            typer.echo,
            arguments=arguments,
            script_root=str(script.resolve().parent),
        )
    if not outcome.ok:
        raise fail(f"{script}: {plural(len(outcome.errors), 'error')} written (see above)")


def register(app: typer.Typer) -> None:
    app.command("sim-cas", short_help="Run one simulated Exchange server.")(sim_cas)
    group = typer.Typer(
        invoke_without_command=True,
        subcommand_metavar="[inventory|apply ...]",
        rich_markup_mode=None,
        add_completion=False,
    )
    group.callback()(lab)
    group.command("inventory", short_help="Run the collector script against the lab's servers.")(inventory)
    group.command("apply", short_help="Run an apply or rollback script against the lab's servers.")(apply)
    app.add_typer(group, name="lab", short_help="Start a lab: 3 simulated servers behind the balancer.")
