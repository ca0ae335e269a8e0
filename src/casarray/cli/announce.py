"""`casarray announce`: announce the VIP through BIRD while this node's casarray is healthy. Thin: parse,
build the announcer from the library, run it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from casarray.announce.bird import DEFAULT_BIRDC, DEFAULT_SOCKET
from casarray.announce.watcher import Announcer, Birdc, command_check
from casarray.cli.core import ConfigOption, config_path, errors_to_exit, load_or_exit, setup_logging
from casarray.config.units import parse_duration
from casarray.export.bird import announced_addresses, static_protocols


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

    Every interval it runs 'casarray ctl health -c FILE --exit-code'; while that passes it keeps BIRD's
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
    setup_logging(log_level)
    check = command_check(
        [sys.executable, "-m", "casarray", "ctl", "health", "-c", str(Path(path)), "--exit-code"],
        timeout=max(every, 2.0),
    )
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


async def _run(announcer: Announcer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await announcer.run(stop)


def register(app: typer.Typer) -> None:
    app.command("announce", short_help="Announce the VIP through BIRD while casarray is healthy.")(announce)
