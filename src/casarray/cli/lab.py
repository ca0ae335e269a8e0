"""`casarray sim-cas` and `casarray lab` (the library parts live in casarray.lab)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from casarray.lab import LabError
from casarray.lab import runner as lab_runner
from casarray.lab.pki import DEFAULT_DOMAIN
from casarray.lab.sim import SimCas, parse_listen

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
) -> None:
    """Run one simulated Exchange server (HTTPS, every vdir, healthcheck.htm, X-FEServer, optional NTLM).

    Controls (direct only): /_sim/state, /_sim/server/down|up, /_sim/service/NAME/down|up,
    /_sim/latency?ms=N, /_sim/requests, /_sim/reset. See docs/lab.md.
    """
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _fail(f"--listen {exc}") from None
    sim = SimCas(name, certificate=cert, key=key, host=host, port=port, domain=domain,
                 ntlm_users=ntlm_users, extended_protection=extended_protection)  # fmt: skip

    async def serve() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await sim.start()
        try:
            typer.echo(f"sim-cas {sim.name} listening on {sim.url}", err=True)
            await stop.wait()
        finally:
            await sim.stop()

    try:
        _run(serve())
    except LabError as exc:
        raise _fail(str(exc)) from None


def lab(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for the CA, certificate and config.")
    ] = Path("lab-run"),
    port: Annotated[int, typer.Option(help="Port of the balancer on 127.0.0.1.")] = 8443,
    mode: Annotated[LabMode, typer.Option(help="l4: TCP pass-through; l7: TLS termination.")] = LabMode.l7,
    sim_port: Annotated[int, typer.Option(help="Port of the simulated servers on 127.0.0.2-4.")] = 8443,
    ntlm: Annotated[bool, typer.Option(help="Let the simulated servers demand NTLM on their vdirs.")] = True,
) -> None:
    """Start a lab: a CA, 3 simulated Exchange servers on 127.0.0.2-4, a config and the balancer.

    Prints what to try; Ctrl-C stops everything.
    """
    try:
        plan = lab_runner.plan(directory, port=port, mode=mode.value, sim_port=sim_port, ntlm=ntlm)
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


def register(app: typer.Typer) -> None:
    app.command("sim-cas")(sim_cas)
    app.command("lab")(lab)
