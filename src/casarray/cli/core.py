"""`casarray run` and `casarray check`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from casarray import __version__, compiled
from casarray.config import Config, ConfigErrors, load_config
from casarray.config.secretfile import affinity_warnings
from casarray.errors import CasarrayError

# Where every verb that reads the balancer's config (run, check, doctor, export, ctl) looks for it when
# -c is not given: the working directory, then the packaged path.
DEFAULT_CONFIGS = (Path("casarray.yaml"), Path("/etc/casarray/casarray.yaml"))

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--config",
        metavar="FILE",
        help="The casarray YAML config file (default: ./casarray.yaml, else /etc/casarray/casarray.yaml).",
        show_default=False,
    ),
]


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 server', '3 servers' ('1 entry', '2 entries' with many='entries')."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def default_config() -> Path | None:
    """The first of DEFAULT_CONFIGS that exists, or None."""
    return next((path for path in DEFAULT_CONFIGS if path.is_file()), None)


def config_path(given: Path | None) -> Path:
    """The config file a verb reads: -c when given, else the first of DEFAULT_CONFIGS that exists.
    None found is a usage error (exit 2), as a missing required option would be."""
    if given is not None:
        return given
    found = default_config()
    if found is None:
        where = " nor ".join(str(path) if path.is_absolute() else f"./{path}" for path in DEFAULT_CONFIGS)
        typer.echo(f"error: no config file: -c FILE was not given, and neither {where} exists", err=True)
        raise typer.Exit(2)
    return found


def fail(message: str) -> typer.Exit:
    """Print one 'error:' line per problem to stderr; the caller raises the returned Exit(1)."""
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    return typer.Exit(1)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Bad input becomes one 'error:' line on stderr and exit status 1."""
    try:
        yield
    except CasarrayError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None


def load_or_exit(path: Path, *, check_files: bool = False) -> Config:
    try:
        return load_config(path, check_files=check_files)
    except ConfigErrors as exc:
        raise fail(str(exc)) from None


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx (the calls between nodes, admin/peers.py) logs every request at INFO: the peers' own lines
    # say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def use_uvloop() -> str:
    """Install uvloop's event loop policy when it is installed; return the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def check(config: ConfigOption = None) -> None:
    """Validate a config file: every problem (values, rules, missing certificate and key files, a
    certificate that does not fit, an unusable affinity secret file) is printed with its file and line;
    exit 1 if any. Warnings (valid but weak settings) are printed on stderr and do not fail the check.

    Example: casarray check -c /etc/casarray/casarray.yaml
    """
    path = config_path(config)
    cfg = load_or_exit(path, check_files=True)
    # The certificate itself, once its files are there: the same check `init` makes.
    from casarray.doctor.checks import listener_problems

    found = listener_problems(cfg, datetime.now(UTC))
    if found:
        raise fail("\n".join(f"{path}: {'.'.join(map(str, loc))}: {message}" for loc, message in found))
    for warning in affinity_warnings(cfg):
        typer.echo(f"{path}: warning: {warning}", err=True)
    typer.echo(
        f"{path}: valid (mode {cfg.mode}, {plural(len(cfg.servers), 'server')}, "
        f"{'service' if len(cfg.services) == 1 else 'services'} {', '.join(cfg.services)})"
    )


def run(
    config: ConfigOption = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error (default: log.level).")
    ] = None,
) -> None:
    """Run the balancer until SIGTERM or SIGINT (then drain for timeouts.grace and stop).

    Example: casarray run -c /etc/casarray/casarray.yaml
    """
    config = config_path(config)
    cfg = load_or_exit(config)
    setup_logging(log_level or cfg.log.level)
    loop_name = use_uvloop()
    # Which data plane runs, once: a warning when compiled modules were installed and cannot run.
    build = compiled.current()
    logging.getLogger("casarray").log(
        logging.WARNING if build.fallback else logging.INFO,
        "casarray %s (%s) starting on %s with %s",
        __version__,
        build.describe(),
        loop_name,
        config,
    )
    try:
        asyncio.run(_serve(cfg, config))
    except CasarrayError as exc:
        raise fail(str(exc)) from None


async def _serve(cfg: Config, config_path: Path) -> None:
    from casarray.engine.balancer import Balancer
    from casarray.engine.supervisor import Supervisor

    balancer: Balancer | Supervisor
    if cfg.worker_count > 1:
        balancer = Supervisor(cfg, config_path, cfg.worker_count)
    else:
        balancer = Balancer(cfg, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logging.getLogger("casarray").info("%s received: stopping", signal.Signals(signum).name)
            stop.set()
        else:
            logging.getLogger("casarray").warning("second signal: closing every connection now")
            balancer.close_all()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        with contextlib.suppress(CasarrayError):  # refused: logged, the running config keeps serving
            await balancer.reload()

    def on_hup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, balancer.reopen_logs)
    admin = None
    peers = None
    try:
        if cfg.peers is not None:
            from casarray.admin.peers import Peers

            # Before the first connection is accepted: the states of the other nodes, newest wins.
            peers = await Peers.from_config(cfg, balancer)
            await peers.sync(at_start=True)
        await balancer.start()
        if cfg.admin is not None:
            from casarray.admin.server import AdminServer

            admin = AdminServer.from_config(cfg.admin, balancer, peers)
            await admin.start()
        if peers is not None:
            peers.start()
        await stop.wait()
    finally:
        # The admin API goes first: no reload or operator change may race the balancer's shutdown.
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
        if peers is not None:
            with contextlib.suppress(Exception):
                await peers.close()
        with contextlib.suppress(Exception):
            await balancer.stop()


def worker(
    config: Annotated[Path, typer.Option("--config")],
    control_fd: Annotated[int, typer.Option("--control-fd")],
    number: Annotated[int, typer.Option("--number")],
    listen: Annotated[list[str], typer.Option("--listen", help="ADDRESS:PORT=FD, repeated")],
) -> None:
    """A data-plane worker, started by `casarray run` when workers > 1 (not for direct use)."""
    from casarray.engine.supervisor import run_worker

    cfg = load_or_exit(config)
    setup_logging(cfg.log.level)
    use_uvloop()
    sockets: list[tuple[str, int, int]] = []
    for item in listen:
        where, _, fd = item.rpartition("=")
        address, _, port = where.rpartition(":")
        sockets.append((address, int(port), int(fd)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when a worker stops
    try:
        asyncio.run(run_worker(config, sockets, control_fd, number))
    except CasarrayError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    # Short help: one line each in `casarray --help` however narrow the terminal.
    app.command("run", short_help="Run the balancer.")(run)
    app.command("check", short_help="Validate a config file: every problem, with its line.")(check)
    app.command("worker", hidden=True)(worker)
