"""`casarray announce`: announce the VIP through BIRD while this node's casarray is healthy. Thin: parse,
build the announcer from the library, run it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from casarray.admin.auth import admin_url
from casarray.announce.bird import DEFAULT_BIRDC, DEFAULT_SOCKET
from casarray.announce.watcher import Announcer, Birdc, Check
from casarray.cli import health
from casarray.cli.core import ConfigOption, config_path, errors_to_exit, fail, load_or_exit, setup_logging
from casarray.config.model import Config
from casarray.config.units import parse_duration
from casarray.export.bird import announced_addresses, static_protocols
from casarray.health.state import CheckResult


def announce(
    config: ConfigOption = None,
    bird_socket: Annotated[
        str, typer.Option("--socket", help="BIRD's control socket (bird -s).")
    ] = DEFAULT_SOCKET,
    interval: Annotated[
        str, typer.Option("--interval", help="Time between two checks of casarray, e.g. 1s or 500ms.")
    ] = "1s",
    rise: Annotated[
        int, typer.Option("--rise", min=1, max=100, help="Passed checks in a row before announcing again.")
    ] = 2,
    fall: Annotated[
        int, typer.Option("--fall", min=1, max=100, help="Failed checks in a row before withdrawing.")
    ] = 2,
    birdc: Annotated[str, typer.Option("--birdc", help="BIRD's command-line client.")] = DEFAULT_BIRDC,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Announce listen.address, the VIP, through BIRD while casarray is healthy; withdraw it when not.

    Every interval it asks what 'casarray ctl health -c FILE' answers; while casarray is healthy it keeps BIRD's
    static protocol casarray_vip4 (casarray_vip6) enabled, so BGP announces the VIP to the routers (bird.conf
    from 'casarray export bird'); after --fall failures in a row it disables it, and BGP withdraws the VIP.
    One log line per transition, on stderr. Runs until SIGTERM or SIGINT, then withdraws the VIP.

    Example: casarray announce -c /etc/casarray/casarray.yaml --socket /run/bird/bird.ctl
    """
    path = config_path(config)
    cfg = load_or_exit(path)
    try:
        every = parse_duration(interval)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--interval'") from None
    if not 0.1 <= every <= 60:
        raise typer.BadParameter("expected 100ms to 60s", param_hint="'--interval'")
    with errors_to_exit():
        routes = [f"{address}/{address.max_prefixlen}" for address in announced_addresses(cfg)]
        protocols = static_protocols(cfg)
    check = _health_check(cfg, timeout=max(every, 1.0))
    setup_logging(log_level)
    announcer = Announcer(
        protocols,
        routes,
        check,
        Birdc(socket=bird_socket, program=birdc),
        interval=every,
        rise=rise,
        fall=fall,
    )
    asyncio.run(_run(announcer))


def _health_check(cfg: Config, timeout: float) -> Check:
    """`casarray ctl health -c FILE`, in this process (no interpreter started every second): the admin
    API answers, the HTTPS listener accepts, every pool has a server."""
    if cfg.admin is None:
        raise fail(
            "the config has no admin: section: casarray's health is read from its admin API "
            "(add admin: {listen: 127.0.0.1:9090})"
        )
    try:
        url = admin_url(cfg.admin.listen)
    except ValueError as exc:
        raise fail(f"admin.listen: {exc}") from None
    token = _token(cfg.admin.token_file)

    async def check() -> CheckResult:
        started = time.monotonic()
        outcome = await asyncio.to_thread(health.check, url, token, (), timeout)
        return CheckResult(
            outcome.ok, "ok" if outcome.ok else "fail", outcome.reason, time.monotonic() - started
        )

    return check


def _token(path: str | None) -> str | None:
    """The admin token when the config names a readable one: an admin API off loopback needs it for the
    status; on loopback reads need none (an unreadable file is then no obstacle)."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


async def _run(announcer: Announcer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await announcer.run(stop)


def register(app: typer.Typer) -> None:
    app.command("announce", short_help="Announce the VIP through BIRD while casarray is healthy.")(announce)
