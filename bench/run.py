"""Benchmark casarray against HAProxy and a direct connection, with wrk as the load generator.

    .venv/bin/python bench/run.py [--quick] [--only l4|l7] [--scenario KEY ...]

Starts nginx (origin), HAProxy (reference) and casarray (candidate) on 127.0.0.1, runs each scenario
against each of them, prints a table with the targets and writes bench/results/<time>-<suite>.json.
Suites run in order: l4 (TCP pass-through), then l7 (TLS terminated and re-encrypted, plus memory per
idle keep-alive connection, with the upstream connection pinned and released).
Every process it starts runs in its own process group and is stopped on exit, Ctrl-C or error.
See bench/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from harness.backends import Context
from harness.machine import machine, versions
from harness.procs import HAPROXY, NGINX, WRK, BenchError, find_tool, raise_fd_limit
from harness.report import markdown, print_report, write_json
from harness.runner import Durations, log, run_suite
from harness.suites import SUITES, scenario_keys, select

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Measure casarray against HAProxy and a direct connection to nginx, using wrk.",
    )
    parser.add_argument("--quick", action="store_true", help="3 s per measurement instead of 10 s")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SUITES),
        metavar="SUITE",
        help="run only this suite (repeatable; l4 or l7); default: l4, then l7",
    )
    parser.add_argument(
        "--shape",
        choices=("production", "bare"),
        default="production",
        help="l7: production (default) health-checks the origin every 2 s in both balancers, as a "
        "deployment does; bare runs without checks (the bench's shape before it measured production's)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="casarray workers and HAProxy nbthread (default 1); compare CPU s/1k req across N "
        "(above 1 the idle-memory case is skipped: it reads one process's memory)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=scenario_keys(),
        metavar="KEY",
        help=(
            "run only this scenario of the chosen suites (repeatable): a row's key, or idle (both idle-"
            "memory cases), idle-pinned, idle-released; a suite with none of them is skipped; "
            f"keys: {', '.join(scenario_keys())}"
        ),
    )
    parser.add_argument("--duration", type=float, help="seconds per measurement (overrides --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per target before measuring")
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="measure every cell N times, the targets in turn, and report the medians (default 3; "
        "1 with --quick)",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        metavar="N",
        help="l7: idle TLS connections for the memory measurement (default 10000; 0 skips it)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a target is missed or casarray could not be measured",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help=f"where to write JSON ({RESULTS})")
    args = parser.parse_args(argv)
    for name in ("duration", "warmup"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 300:
            parser.error(f"--{name} must be between 0 and 300 seconds, got {value:g}")
    if not 1 <= args.workers <= 64:
        parser.error(f"--workers must be between 1 and 64, got {args.workers}")
    if args.workers > 1:
        args.idle_connections = 0
    if args.idle_connections is not None and not 0 <= args.idle_connections <= 100_000:
        parser.error(f"--idle-connections must be between 0 and 100000, got {args.idle_connections}")
    if args.rounds is not None and not 1 <= args.rounds <= 20:
        parser.error(f"--rounds must be between 1 and 20, got {args.rounds}")
    if args.duration is not None and args.duration < 1:
        parser.error("--duration must be at least 1 second")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same way out as Ctrl-C, through every `finally` that stops a child.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    durations = Durations(
        warmup_s=warmup, measure_s=duration, settle_s=0.5 if args.quick else 1.0, rounds=rounds
    )
    # Also SIGINT: a shell may start a background job with SIGINT ignored, and Ctrl-C must still work.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)

    tools = {tool.binary: find_tool(tool) for tool in (WRK, NGINX, HAPROXY)}
    raise_fd_limit()
    missed = False
    for name in args.only or list(SUITES):  # l4, then l7
        suite = select(SUITES[name], args.scenario)
        if suite is None:
            log(f"[{name}] skipped: none of the chosen scenarios ({', '.join(args.scenario)}) is in it")
            continue
        started = datetime.now(UTC)
        info = machine()
        with ExitStack() as stack:
            workdir = Path(tempfile.mkdtemp(prefix=f"casarray-bench-{name}-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            ctx = Context(
                workdir=workdir,
                repo=REPO,
                python=sys.executable,
                nginx=tools["nginx"],
                haproxy=tools["haproxy"],
                wrk=tools["wrk"],
                shape=args.shape,
                workers=args.workers,
            )
            found_versions = versions(ctx)
            result = run_suite(suite, ctx, stack, durations, idle_connections=args.idle_connections)
        print_report(result, info, duration, rounds)
        if args.markdown:
            print()
            print(markdown(result))
        out = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{name}.json"
        write_json(
            out,
            result,
            started=started.isoformat(timespec="seconds"),
            quick=args.quick,
            duration_s=duration,
            warmup_s=warmup,
            rounds=rounds,
            machine=info,
            versions=found_versions,
        )
        log(f"[{name}] raw numbers written to {out}")
        missed = missed or result.missed
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
