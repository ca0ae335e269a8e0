"""`casarray namespace collector|plan|script|verify|dns`: the namespace toolkit's command line.

Thin: parses options, calls casarray.exchange.namespace, prints. Exit codes (docs/namespace.md): 0 success,
1 a failed check or bad input (one "error: …" line on stderr), 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from casarray.cli.core import errors_to_exit
from casarray.errors import InventoryError
from casarray.exchange.namespace.collector import collector_script
from casarray.exchange.namespace.dns import DEFAULT_TTL_S, AutodiscoverAs, dns_plan
from casarray.exchange.namespace.inventory import Inventory, load_inventory
from casarray.exchange.namespace.plan import Action, Plan, Scope, Targets, make_plan
from casarray.exchange.namespace.script import apply_script, rollback_script, write_script
from casarray.exchange.namespace.verify import Check, Verification, verify

app = typer.Typer(
    help="Plan, script and verify the unified namespace of the Exchange virtual directories.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: no <bool> type column on flags, text as written
)

InventoryOption = Annotated[
    Path,
    typer.Option("--inventory", "-i", help="The inventory JSON written by 'casarray namespace collector'."),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="The unified client-access name, e.g. outlook.contoso.com."),
]
AutodiscoverOption = Annotated[
    str | None,
    typer.Option(help="The Autodiscover name (SCP and DNS); default: the (internal) namespace."),
]
InternalNamespaceOption = Annotated[
    str | None, typer.Option(help="Internal URLs' name, when it differs from the external one.")
]
ExternalNamespaceOption = Annotated[
    str | None, typer.Option(help="External URLs' name, when it differs from the internal one.")
]
InternalOnlyOption = Annotated[
    bool, typer.Option("--internal-only", help="Only internal URLs, host name and the SCP.")
]
ExternalOnlyOption = Annotated[
    bool, typer.Option("--external-only", help="Only external URLs and host name.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HttpsPortOption = Annotated[
    int,
    typer.Option(
        "--https-port",
        metavar="PORT",
        help="The port the balancer serves https on (its listen.https_port): URLs name it.",
    ),
]
PowerShellOption = Annotated[
    bool,
    typer.Option(
        "--powershell",
        help="Also move the PowerShell vdir to the namespace (default: left on the server names).",
    ),
]
ServerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        metavar="NAME",
        help="Only this server (repeat it, or give NAME,NAME); default: every server.",
    ),
]
ServiceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service",
        metavar="NAME",
        help="Only this service: owa, ecp, ews, mapi, rpc (Outlook Anywhere), oab, eas, "
        "autodiscover (with the SCP), powershell; repeat it or give NAME,NAME. Default: all.",
    ),
]


@app.command(short_help="Print the PowerShell that writes the inventory.")
def collector(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the script here instead of stdout.")
    ] = None,
) -> None:
    """Print the read-only PowerShell that writes the inventory file (for the Exchange Management Shell).

    Example: casarray namespace collector -o collector.ps1
    """
    text = collector_script()
    if output is None:
        typer.echo(text, nl=False)
        return
    with errors_to_exit():
        write_script(output, text)
    typer.echo(f"Wrote {output}. In the Exchange Management Shell: .\\{output.name} -Path inventory.json")


@app.command(short_help="Show the current and target value of each setting.")
def plan(
    inventory: InventoryOption,
    namespace: NamespaceOption = None,
    autodiscover: AutodiscoverOption = None,
    internal_namespace: InternalNamespaceOption = None,
    external_namespace: ExternalNamespaceOption = None,
    internal_only: InternalOnlyOption = False,
    external_only: ExternalOnlyOption = False,
    https_port: HttpsPortOption = 443,
    powershell: PowerShellOption = False,
    server: ServerOption = None,
    service: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show, per server and setting, the current value, the target and whether it changes.

    Example: casarray namespace plan -i inventory.json -n outlook.contoso.com --server MB1
    """
    options = (namespace, internal_namespace, external_namespace, autodiscover, internal_only, external_only)
    with errors_to_exit():
        targets = _targets(*options, https_port=https_port, powershell=powershell)
        loaded = load_inventory(inventory)
        the_plan = make_plan(loaded, targets, _scope(loaded, server, service))
    if as_json:
        typer.echo(json.dumps([item.as_json() for item in the_plan.items], indent=2))
        return
    _print_plan(the_plan)
    _print_partial(loaded)


@app.command(short_help="Write the apply (and rollback) PowerShell script.")
def script(
    inventory: InventoryOption,
    namespace: NamespaceOption = None,
    autodiscover: AutodiscoverOption = None,
    internal_namespace: InternalNamespaceOption = None,
    external_namespace: ExternalNamespaceOption = None,
    internal_only: InternalOnlyOption = False,
    external_only: ExternalOnlyOption = False,
    https_port: HttpsPortOption = 443,
    powershell: PowerShellOption = False,
    server: ServerOption = None,
    service: ServiceOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The apply script; default: stdout.")
    ] = None,
    rollback: Annotated[
        Path | None, typer.Option(help="Also write the script that restores the inventory's values.")
    ] = None,
) -> None:
    """Write the apply script (only the changes, idempotent, -WhatIf) and optionally its rollback.

    Example: casarray namespace script -i inventory.json -n outlook.contoso.com -o apply.ps1 --rollback rollback.ps1
    """
    options = (namespace, internal_namespace, external_namespace, autodiscover, internal_only, external_only)
    with errors_to_exit():
        targets = _targets(*options, https_port=https_port, powershell=powershell)
        loaded = load_inventory(inventory)
        if loaded.virtual_directories_only:
            # A GetVirtDirs list has no Outlook Anywhere and no SCP: a script from it would move only
            # part of client access and leave Outlook and Autodiscover on the servers.
            raise InventoryError(
                "a list of virtual directories only (no Outlook Anywhere, no SCP): not enough for a script",
                where=str(inventory),
                hint="collect the full inventory with 'casarray namespace collector'",
            )
        the_plan = make_plan(loaded, targets, _scope(loaded, server, service))
        apply_text = apply_script(the_plan, loaded)
        if output is not None:
            write_script(output, apply_text)
        if rollback is not None:
            write_script(rollback, rollback_script(the_plan, loaded))
    changes = len(the_plan.changes)
    summary = f"{changes} change{'s' if changes != 1 else ''}"
    if output is None:
        typer.echo(apply_text, nl=False)
    else:
        typer.echo(f"Wrote {output} ({summary}).")
    if rollback is not None:
        typer.echo(f"Wrote {rollback} (restores the inventory's values).", err=output is None)


@app.command(name="verify", short_help="Check that every setting is on the namespace.")
def verify_command(
    inventory: InventoryOption,
    namespace: NamespaceOption = None,
    autodiscover: AutodiscoverOption = None,
    internal_namespace: InternalNamespaceOption = None,
    external_namespace: ExternalNamespaceOption = None,
    internal_only: InternalOnlyOption = False,
    external_only: ExternalOnlyOption = False,
    https_port: HttpsPortOption = 443,
    powershell: PowerShellOption = False,
    server: ServerOption = None,
    service: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check that every URL, Outlook Anywhere host name and the SCP are on the namespace (exit 1 if not).

    Example: casarray namespace verify -i inventory-after.json -n outlook.contoso.com
    """
    options = (namespace, internal_namespace, external_namespace, autodiscover, internal_only, external_only)
    with errors_to_exit():
        targets = _targets(*options, https_port=https_port, powershell=powershell)
        loaded = load_inventory(inventory)
        result = verify(loaded, targets, _scope(loaded, server, service))
    if as_json:
        typer.echo(json.dumps([check.as_json() for check in result.checks], indent=2))
    else:
        _print_verification(result)
        _print_partial(loaded)
    if not result.ok:
        raise typer.Exit(1)


@app.command(short_help="Print the DNS records for the VIP.")
def dns(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The unified client-access name.")],
    vip: Annotated[str, typer.Option(help="The balancer's virtual IP address (IPv4 or IPv6).")],
    autodiscover: Annotated[
        str | None, typer.Option(help="Also publish this Autodiscover name on the VIP.")
    ] = None,
    zone: Annotated[
        str | None, typer.Option(help="The DNS zone; default: the namespace's parent domain.")
    ] = None,
    srv: Annotated[
        bool, typer.Option("--srv", help="Add the _autodiscover._tcp SRV record (port 443).")
    ] = False,
    autodiscover_cname: Annotated[
        bool,
        typer.Option(
            "--autodiscover-cname", help="Autodiscover as a CNAME to the namespace (default: an A record)."
        ),
    ] = False,
    ttl: Annotated[int, typer.Option(help="Record TTL in seconds.")] = DEFAULT_TTL_S,
) -> None:
    """Print the DNS records for the VIP: zone-file lines and Windows DNS Server cmdlets.

    Example: casarray namespace dns -n outlook.contoso.com --vip 10.0.1.250
    """
    with errors_to_exit():
        records = dns_plan(
            namespace,
            vip,
            autodiscover=autodiscover,
            zone=zone,
            autodiscover_as=AutodiscoverAs.CNAME if autodiscover_cname else AutodiscoverAs.A,
            srv=srv,
            ttl=ttl,
        )
    typer.echo("; Zone file")
    typer.echo("\n".join(records.zone_lines()))
    typer.echo("")
    typer.echo("# Windows DNS Server (run on the DNS server, or add -ComputerName <server>)")
    typer.echo("\n".join(records.powershell_lines()))


def _targets(
    namespace: str | None,
    internal_namespace: str | None,
    external_namespace: str | None,
    autodiscover: str | None,
    internal_only: bool,
    external_only: bool,
    *,
    https_port: int,
    powershell: bool,
) -> Targets:
    if internal_only and external_only:
        raise typer.BadParameter(
            "give at most one of them", param_hint="'--internal-only' / '--external-only'"
        )
    internal, external = not external_only, not internal_only
    if (internal and not (namespace or internal_namespace)) or (
        external and not (namespace or external_namespace)
    ):
        raise typer.BadParameter(
            "required (or both --internal-namespace and --external-namespace)", param_hint="'--namespace'"
        )
    return Targets.build(
        namespace,
        internal_namespace=internal_namespace,
        external_namespace=external_namespace,
        autodiscover=autodiscover,
        internal=internal,
        external=external,
        https_port=https_port,
        powershell=powershell,
    )


def _scope(inventory: Inventory, servers: list[str] | None, services: list[str] | None) -> Scope:
    return Scope.build(inventory, servers=servers or (), services=services or ())


def _print_partial(inventory: Inventory) -> None:
    if inventory.virtual_directories_only:
        _console().print(
            Text(
                "Outlook Anywhere and the Autodiscover SCP are not in this file (a list of virtual "
                "directories): collect the full inventory with 'casarray namespace collector' to check them.",
                style="yellow",
            )
        )


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or redirected: wide enough that a URL never has to wrap.
        console.width = 200
    return console


def _print_plan(the_plan: Plan) -> None:
    console = _console()
    table = Table("Server", "Kind", "Property", "Current", "Target", "Action")
    notes: dict[str, None] = {}
    for item in the_plan.items:
        if item.note and item.target is not None:
            notes[f"{item.server} {item.kind} {item.property}: {item.note}"] = None
        if item.target is None:
            notes[f"{item.kind} virtual directory: {item.note}"] = None
            target = Text("(not set by casarray)", style="dim")
            action = Text("ok", style="dim")
        else:
            target = Text(item.target)
            changing = item.action is Action.CHANGE
            action = Text(item.action.value, style="bold yellow" if changing else "green")
        table.add_row(item.server, item.kind, item.property, _value(item.current), target, action)
    console.print(table)
    for note in notes:
        console.print(Text(f"{note}.", style="dim"))
    changes = the_plan.changes
    servers = len({item.server.lower() for item in changes})
    if changes:
        console.print(
            f"{_plural(len(changes), 'setting')} to change on {_plural(servers, 'server')}; "
            "write them with 'casarray namespace script'."
        )
    else:
        console.print("Nothing to change: every setting is already on the namespace.")


def _print_verification(result: Verification) -> None:
    # The original check's layout (GetVirtDirs: Server, Name, InternalUrl, ExternalUrl), one row per
    # object, with each cell marked on or off the namespace.
    console = _console()
    rows: dict[tuple[str, str, str], dict[str, Check]] = {}
    for check in result.checks:
        side = "external" if check.property.startswith("External") else "internal"
        rows.setdefault((check.server, check.kind, check.identity), {})[side] = check
    table = Table("Server", "Kind", "Identity", "Internal", "External")
    for (server, kind, identity), sides in rows.items():
        table.add_row(server, kind, identity, _cell(sides.get("internal")), _cell(sides.get("external")))
    console.print(table)
    failures = result.failures
    for check in failures:
        console.print(Text(f"off  {check.server} {check.kind} {check.property}: {check.reason}", style="red"))
    if failures:
        verb = "is" if len(failures) == 1 else "are"
        console.print(
            Text(f"{_plural(len(failures), 'setting')} {verb} not on the namespace.", style="bold red")
        )
    else:
        console.print(Text("Every setting is on the namespace.", style="bold green"))


def _cell(check: Check | None) -> Text:
    if check is None:
        return Text("")
    if check.expected is None:
        return Text(f"{check.current or '(not set)'} (not checked)", style="dim")
    return Text(f"{check.current or '(not set)'}", style="green" if check.ok else "bold red")


def _value(value: str | None) -> Text:
    return Text("(not set)", style="dim") if value is None else Text(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="namespace", short_help="Plan, script and verify the Exchange URLs.")
