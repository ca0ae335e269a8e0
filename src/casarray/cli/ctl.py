"""`casarray ctl`: the command-line client of a running balancer's admin API. Thin: find the API and
its token, make one request, print the answer; any failure is one `error: …` line and exit 1."""

from __future__ import annotations

import datetime
import getpass
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from casarray.admin.auth import admin_url
from casarray.cli.core import default_config, fail
from casarray.config import ConfigErrors, load_config
from casarray.config.load import read_section
from casarray.config.model import Admin
from casarray.config.units import format_duration, parse_duration
from casarray.errors import reason_of

app = typer.Typer(
    help="Control a running balancer through its admin API: status, drain, ready, maint, reload, events.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: no <bool> type column on flags
)

DEFAULT_ADMIN = "http://127.0.0.1:9090"

_STATE_STYLE = {
    "up": "bold green",
    "ready": "bold green",
    "drain": "bold yellow",
    "maint": "grey50",
    "down": "bold red",
    "init": "blue",
}

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--config",
        metavar="FILE",
        help="The balancer's config: admin.listen and admin.token_file are read from it "
        "(default: ./casarray.yaml, else /etc/casarray/casarray.yaml).",
        show_default=False,
    ),
]
AdminOpt = Annotated[
    str | None,
    typer.Option(
        "--admin", help=f"Admin API URL; overrides the config (default: {DEFAULT_ADMIN}).", show_default=False
    ),
]
TokenOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="File holding the admin token; overrides admin.token_file.", show_default=False
    ),
]
ServiceOpt = Annotated[
    str | None,
    typer.Option(
        "--service", "-s", help="Only this service's member (e.g. ews) instead of the whole server."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer instead of text.")]


@dataclass
class Options:
    config: Path | None = None
    admin: str | None = None
    token_file: Path | None = None


@dataclass
class Target:
    url: str
    token: str | None
    note: str  # why no token is sent, for a 401's error line


@app.callback()
def main(
    ctx: typer.Context, config: ConfigOpt = None, admin: AdminOpt = None, token_file: TokenOpt = None
) -> None:
    """Options given here apply to every verb (they may also follow the verb)."""
    ctx.obj = Options(config, admin, token_file)


def _target(ctx: typer.Context, config: Path | None, admin: str | None, token_file: Path | None) -> Target:
    given: Options = ctx.obj if isinstance(ctx.obj, Options) else Options()
    config = config or given.config
    admin = admin or given.admin
    token_file = token_file or given.token_file
    if config is None:
        config = default_config()  # as run, check and doctor find it
    url, configured_token = admin, None
    if config is not None:
        section = _admin_section(config)
        if section is None and admin is None:
            raise fail(
                f"{config} has no admin: section, so the balancer runs no admin API "
                "(add admin: {listen: 127.0.0.1:9090} and restart, or pass --admin URL)"
            )
        if section is not None:
            if url is None:
                url = _listen_url(section.listen)
            configured_token = section.token_file
    url = (url or DEFAULT_ADMIN).rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if token_file is not None:
        try:
            return Target(url, _read(token_file), "")
        except OSError as exc:
            raise fail(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
    if configured_token is not None:
        try:
            return Target(url, _read(Path(configured_token)), "")
        except OSError as exc:
            # Reads on loopback need no token: an unprivileged user can still ask for the status.
            return Target(url, None, f"admin.token_file {configured_token}: {exc.strerror or exc}")
    return Target(url, None, "no token file (use --token-file or admin.token_file)")


def _admin_section(path: Path) -> Admin | None:
    try:
        return load_config(path).admin
    except ConfigErrors as exc:
        # The file may be mid-edit, and `ctl reload` is how the balancer reports its errors: the admin:
        # section alone is enough to reach the running balancer.
        try:
            raw = read_section(path, "admin")
            if raw is not None:
                return Admin.model_validate(raw)
        except (ConfigErrors, ValidationError):
            pass
        raise fail(str(exc)) from None


def _read(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise OSError(0, "the file is empty")
    return token


def _listen_url(listen: str) -> str:
    try:
        return admin_url(listen)
    except ValueError as exc:
        raise fail(f"admin.listen: {exc}") from None


def _call(
    target: Target, method: str, path: str, timeout: float = 10.0, body: dict[str, Any] | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    # trust_env=False: an http_proxy meant for the internet must not capture calls to the balancer.
    try:
        with httpx.Client(base_url=target.url, timeout=timeout, trust_env=False) as client:
            response = client.request(method, path, headers=headers, json=body)
    except httpx.ConnectError as exc:
        raise fail(
            f"cannot reach the admin API at {target.url}: {reason_of(exc)} "
            "(is `casarray run` running with an admin: section?)"
        ) from None
    except httpx.TimeoutException:
        raise fail(f"the admin API at {target.url} did not answer within {timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise fail(f"admin API at {target.url}: {reason_of(exc)}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        message = f"{response.status_code} {response.reason_phrase}: {error or response.text.strip()[:200]}"
        if response.status_code == 401 and target.note:
            message += f" ({target.note})"
        raise fail(" ".join(message.split()))
    if data is None:
        raise fail(f"{target.url}{path} did not answer JSON (is that the admin API?)")
    return data


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = 200  # piped: one line per server however many services (COLUMNS decides if set)
    return console


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@app.command(short_help="Servers × services by state, and counters.")
def status(
    ctx: typer.Context,
    config: ConfigOpt = None,
    admin: AdminOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Servers × services coloured by state (up green, drain amber, maint grey, down red), and counters.

    Example: casarray ctl status
    """
    snap = _call(_target(ctx, config, admin, token_file), "GET", "/api/status")
    if as_json:
        typer.echo(json.dumps(snap, indent=2))
        return
    _print_status(_console(), snap)


@app.command(short_help="Can this node serve? For keepalived and BGP watchers (--exit-code).")
def health(
    ctx: typer.Context,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            "-s",
            metavar="NAME",
            help="Require only the pools of this service (repeatable; e.g. owa, ews, or a pool such as "
            "l4 or imap:993); default: every pool.",
            show_default=False,
        ),
    ] = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 when the node cannot serve (default: exit 0).")
    ] = False,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout", metavar="DURATION", help="Bound of each step (the admin API, the listener), e.g. 1s."
        ),
    ] = "2s",
    config: ConfigOpt = None,
    admin: AdminOpt = None,
    token_file: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict and its parts as JSON.")] = False,
) -> None:
    """One line: is casarray running here (its admin API answers), does its HTTPS listener accept a
    connection, and does every pool (l7: each service; l4: the listener; each mail port) have a server
    taking new traffic? The first "no" is the line; with --exit-code it also exits 1.

    With --admin URL (what `casarray export keepalived` writes) the config is not read and the command
    costs about a tenth of the CPU time: cheap enough to run every second.

    Example: casarray ctl health --admin http://127.0.0.1:9090 --exit-code
    """
    from casarray.cli.health import check, render

    seconds = _duration(timeout)
    if seconds <= 0:
        raise typer.BadParameter("expected a duration above 0, e.g. 1s", param_hint="--timeout")
    target = _target(ctx, config, admin, token_file)
    outcome = check(target.url, target.token, service or (), seconds)
    typer.echo(render(outcome, as_json))
    if exit_code and not outcome.ok:
        raise typer.Exit(1)


def _member_label(member: dict[str, Any]) -> tuple[str, str]:
    """A grid cell's words and the state that colours it."""
    state, health = member["state"], member["health"]
    label = state
    if state == "down" and member["code"]:
        label = f"down {member['code']}"
    elif state in ("drain", "maint") and health != "up":
        label = f"{state}, {health}"  # the operator's state shows; its health still matters
    return label, state


def _print_status(console: Console, snap: dict[str, Any]) -> None:
    """The grid as one table when it fits the width; narrower, one block per server (its state and
    counters, then its services grouped by state), so nothing is cut or folded mid-word."""
    classes: dict[str, int] = {}
    for by_class in snap["requests"].values():
        for name, count in by_class.items():
            classes[name] = classes.get(name, 0) + count
    requests = "  ".join(f"{name} {count}" for name, count in sorted(classes.items()))
    console.print(
        f"[bold]{snap['namespace']}[/]  mode {snap['mode']}  clients {snap['clients']} "
        f"(accepted {snap['clients_total']})  refused {snap['refused']}  queued {snap['queue']}  "
        f"reloads {snap['reloads']}" + (f"  requests {requests}" if requests else "")
    )
    table = Table("Server", "Operator", *snap["services"], "Conns", "Total", "In", "Out", "Errors")
    for server in snap["servers"]:
        cells = []
        for service in snap["services"]:
            member = server["members"].get(service)
            if member is None:
                cells.append(Text("-"))
                continue
            label, state = _member_label(member)
            cells.append(Text(label, style=_STATE_STYLE.get(state, "")))
        table.add_row(
            server["name"],
            Text(server["operator"], style=_STATE_STYLE.get(server["operator"], "")),
            *cells,
            str(server["active"]),
            str(server["total"]),
            _size(server["bytes_in"]),
            _size(server["bytes_out"]),
            str(server["connect_errors"]),
        )
    # The table's natural width (measured unbounded: rich would otherwise fold every cell to fit).
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    if natural <= console.width:
        console.print(table)
    else:
        console.print(_stacked(snap))
    for line in _operator_notes(snap):
        console.print(line)


def _stacked(snap: dict[str, Any]) -> Table:
    """One block per server for narrow terminals: name and operator state with the counters, then the
    services grouped by what a cell would show ("up: owa ecp ews …  down L7STS: mapi")."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for server in snap["servers"]:
        line = Text()
        line.append(server["operator"], style=_STATE_STYLE.get(server["operator"], ""))
        line.append(
            f"  conns {server['active']}  total {server['total']}  in {_size(server['bytes_in'])}  "
            f"out {_size(server['bytes_out'])}  errors {server['connect_errors']}"
        )
        groups: dict[tuple[str, str], list[str]] = {}
        for service in snap["services"]:
            member = server["members"].get(service)
            if member is not None:
                groups.setdefault(_member_label(member), []).append(service)
        services = Text()
        for (label, state), names in groups.items():
            if services:
                services.append("  ")
            services.append(f"{label}:", style=_STATE_STYLE.get(state, ""))
            services.append(" " + " ".join(names))
        grid.add_row(Text(server["name"], style="bold"), line)
        grid.add_row("", services)
    return grid


def _operator_notes(snap: dict[str, Any]) -> list[Text]:
    """Who set each operator state in force other than ready, why and since when."""
    notes: list[Text] = []
    for server in snap["servers"]:
        entries = [(server["name"], server)]
        entries += [(f"{server['name']}/{name}", m) for name, m in server["members"].items()]
        for label, view in entries:
            state = view["operator"]
            if state == "ready" or not view.get("operator_by"):
                continue
            when = datetime.datetime.fromtimestamp(view["operator_since"]).strftime("%Y-%m-%d %H:%M")
            why = f": {view['operator_reason']}" if view.get("operator_reason") else ""
            note = Text(f"{label} ")
            note.append(state, style=_STATE_STYLE.get(state, ""))
            note.append(f" since {when} by {view['operator_by']}{why}")
            notes.append(note)
    return notes


def _who() -> str:
    """Who sets a state from this command line, as the balancer records it: the local user, via ctl."""
    try:
        return f"{getpass.getuser()} (ctl)"
    except (KeyError, OSError):  # no user name for this uid (a container): the tool is all we know
        return "ctl"


def _set(
    ctx: typer.Context,
    state: str,
    server: str,
    service: str | None,
    reason: str,
    options: Options,
    as_json: bool = False,
) -> Target:
    """Set the state on the balancer, which hands it to its peers (`peers:`): one line for this node,
    then one per peer with its answer. A peer that did not take it is an error (exit 1) after the
    report; what the others took stays."""
    target = _target(ctx, options.config, options.admin, options.token_file)
    path = f"/api/servers/{quote(server, safe='')}"
    if service is not None:
        path += f"/services/{quote(service, safe='')}"
    result = _call(target, "POST", f"{path}/{state}", body={"reason": reason, "by": _who()})
    peers = result.get("peers", [])
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        outcome = str(result["outcome"])
        typer.echo(outcome + (f" ({result['reason']})" if result.get("reason") else ""))
        for answer in peers:
            typer.echo(f"peer {answer['node']}: {answer['outcome']}")
    failed = [answer["node"] for answer in peers if not answer["ok"]]
    if failed:
        raise fail(
            f"{len(failed)} of {len(peers)} peer(s) did not take it: {', '.join(failed)} (it holds on this "
            "node and on the others; a peer that missed it takes it at its next sync)"
        )
    return target


def _wait_drained(target: Target, server: str, timeout: float) -> None:
    """Poll the status until `server` holds no connection; past `timeout`, exit 1 saying so."""
    started = time.monotonic()
    interval = 0.2
    announced = False
    while True:
        snap = _call(target, "GET", "/api/status")
        view = next((s for s in snap["servers"] if s["name"].lower() == server.lower()), None)
        if view is None:
            raise fail(f"{server} is no longer in the balancer's config")
        waited = time.monotonic() - started
        # Under a supervisor the workers report their counters every second: a zero is believed only
        # once a report newer than the drain has arrived.
        fresh = int(snap.get("workers", 1)) <= 1 or waited >= 1.5
        if view["active"] == 0 and fresh:
            typer.echo(f"{view['name']}: every connection has finished (after {waited:.1f}s)")
            return
        if waited >= timeout:
            raise fail(
                f"{view['name']} still has {view['active']} open connection(s) after "
                f"{format_duration(timeout)} (--timeout); it stays in {view['operator']}"
            )
        if not announced:
            typer.echo(
                f"waiting up to {format_duration(timeout)} for {view['name']}'s "
                f"{view['active']} connection(s) to finish",
                err=True,
            )
            announced = True
        time.sleep(min(interval, max(0.0, timeout - waited)))
        interval = min(interval * 2, 2.0)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


ServerArg = Annotated[str, typer.Argument(metavar="SERVER", help="Server name as in the config, e.g. MB1.")]


ReasonOpt = Annotated[
    str,
    typer.Option("--reason", "-r", help='Why, recorded with the state and shown by status (e.g. "CU14").'),
]


@app.command()
def drain(
    ctx: typer.Context,
    server: ServerArg,
    service: ServiceOpt = None,
    reason: ReasonOpt = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Return once the server's open connections have finished (exit 1 at --timeout)."
        ),
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="How long --wait waits, e.g. 90s, 10m, 1h.")
    ] = "15m",
    config: ConfigOpt = None,
    admin: AdminOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """No new connections or requests for SERVER; the open ones finish. With a peers: section, on
    every node (one line per node's answer; --wait waits for this node's connections).

    Example: casarray ctl drain MB2 --reason "CU14" --wait --timeout 30m
    """
    seconds = _duration(timeout)
    if wait and service is not None:
        # Connections are counted per server: one service's cannot be told apart in l4, nor per
        # keep-alive connection in l7.
        raise typer.BadParameter("--wait waits for a whole server: leave out --service", param_hint="--wait")
    target = _set(ctx, "drain", server, service, reason, Options(config, admin, token_file), as_json)
    if wait:
        _wait_drained(target, server, seconds)


def _state_command(state: str, doc: str) -> None:
    """`casarray ctl ready|maint SERVER [--service S] [--reason R]`: one command per operator state
    (drain has its own, for --wait)."""

    def command(
        ctx: typer.Context,
        server: ServerArg,
        service: ServiceOpt = None,
        reason: ReasonOpt = "",
        config: ConfigOpt = None,
        admin: AdminOpt = None,
        token_file: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _set(ctx, state, server, service, reason, Options(config, admin, token_file), as_json)

    command.__doc__ = doc
    app.command(name=state)(command)


_state_command(
    "ready",
    """SERVER takes new traffic again (when its health checks pass); with a peers: section, on every
    node.

    Example: casarray ctl ready MB2 --reason "CU14 done"
    """,
)
_state_command(
    "maint",
    """Take SERVER out now: its open connections are closed; with a peers: section, on every node.

    Example: casarray ctl maint MB2 --reason "disk replacement"
    """,
)


@app.command(short_help="Re-read the config (a refused one changes nothing).")
def reload(
    ctx: typer.Context,
    config: ConfigOpt = None,
    admin: AdminOpt = None,
    token_file: TokenOpt = None,
) -> None:
    """Re-read the balancer's config file (a refused one leaves the running config serving).

    Example: casarray ctl reload   (after casarray check says the file is valid)
    """
    # Long timeout: the new generation runs its first round of health checks before it serves.
    result = _call(_target(ctx, config, admin, token_file), "POST", "/api/reload", timeout=60.0)
    typer.echo(result["outcome"])


@app.command(short_help="Recent state changes, oldest first.")
def events(
    ctx: typer.Context,
    since: Annotated[float, typer.Option(help="Only events after this time (epoch seconds).")] = 0.0,
    config: ConfigOpt = None,
    admin: AdminOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent state changes: health transitions, operator actions, reloads (oldest first).

    Example: casarray ctl events --json
    """
    data = _call(_target(ctx, config, admin, token_file), "GET", f"/api/events?since={since}")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for event in data["events"]:
        when = datetime.datetime.fromtimestamp(event["time"]).strftime("%Y-%m-%d %H:%M:%S")
        what = event["server"] + (f"/{event['service']}" if event["service"] else "") or "config"
        reason = f" {event['reason']!r}" if event["reason"] else ""
        # A repeated action changes no state: say so rather than "drain -> drain".
        change = (
            f"{event['old']} -> {event['new']}" if event["old"] != event["new"] else f"still {event['new']}"
        )
        typer.echo(f"{when} {what} {change} {event['code']}{reason}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="ctl", short_help="Status, drain, ready, maint, reload: a running balancer.")
