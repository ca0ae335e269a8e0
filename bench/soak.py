"""Soak: l4 and l7 balancers under mixed load for minutes, every body checked, memory and fds watched.

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 8] [--only l4|l7] [--json FILE]

Starts three simulated Exchange servers (`casarray sim-cas`, on 127.0.0.2–4) and, in front of the same
three, one `casarray run` in mode l4 and one in mode l7 (each on its own port of 127.0.0.1), as
`casarray lab` would. Both balancers take load *at the same time* for the whole run: each gets the full
duration (a leak that needs time shows in both), and each works while the other competes for the CPU.
Per mode, `--clients` threads run real TLS clients (http.client over ssl, SNI and Host = the
namespace): even-numbered ones keep a connection for up to KEEPALIVE_REQUESTS requests, odd-numbered
ones open a new connection per request (`Connection: close`). Each request is, at random,
  - GET of 1 MiB of seeded pseudo-random bytes (`sim-size` + `sim-seed`): every byte checked against
    `casarray.lab.sim.seeded_blocks`, so a lost, repeated or crossed block shows;
  - POST of 1 MiB of random bytes (`sim-digest=1`): the server's SHA-256 of what it received must be
    the client's;
  - a small GET on one of several vdirs: the server's description must name the method and the path
    the client sent, and the server that answered must be the one in `X-FEServer`.
Every few seconds the balancers' RSS (VmRSS) and open descriptors (/proc/PID/fd) are read (summed over
a supervisor and its workers). At the end a table per mode: requests, errors (by kind), corrupted
bodies, req/s, RSS at warm-up and at the end, fds idle / at warm-up / after the clients left.

Exit status 1 when, in any mode, a request failed or a body was corrupted, RSS grew by more than
--rss-growth percent (20) from warm-up to the end, the descriptors did not come back to the idle
level within SETTLE_S after the load stopped, or a balancer exited; 0 otherwise; 2 bad options;
130 interrupted. Every process runs in its own process group and is stopped on exit, error or Ctrl-C.
See bench/README.md and the "Soak" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import http.client
import json
import random
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The checkout's casarray, as the children run it (harness.backends.casarray_env).
sys.path.insert(0, str(REPO / "src"))

from harness.backends import Context, casarray_env  # noqa: E402
from harness.idle import fd_count, rss_kib  # noqa: E402
from harness.procs import (  # noqa: E402
    LOOPBACK,
    BenchError,
    ManagedProcess,
    free_port,
    process_tree,
    raise_fd_limit,
)
from harness.report import render_plain  # noqa: E402
from harness.runner import log  # noqa: E402

from casarray.lab.runner import LabPlan, Mode, plan, prepare, render_config, sim_command  # noqa: E402
from casarray.lab.sim import parse_description, seeded_blocks  # noqa: E402

MODES: tuple[Mode, ...] = ("l4", "l7")
MIB = 1024 * 1024
SEEDS = 32  # distinct 1 MiB download bodies; their SHA-256 is computed once at start
KEEPALIVE_REQUESTS = 50  # a keep-alive client opens a new connection after this many requests
REQUEST_TIMEOUT_S = 30.0  # per socket operation: a stalled balancer shows as a `timeout` error
SAMPLE_INTERVAL_S = 2.0
PROGRESS_INTERVAL_S = 30.0
IDLE_SAMPLE_S = 3.0  # idle fd/RSS level read over this long before the load starts
SETTLE_S = 15.0  # after the load: how long the descriptors may take to come back to the idle level
START_TIMEOUT_S = 30.0
# Weights of the request kinds: the 1 MiB transfers carry the bytes, small GETs the request rate.
MIX = (("get-1MiB", 3), ("post-1MiB", 3), ("get-small", 4))
SMALL_PATHS = ("/owa/", "/ews/Exchange.asmx", "/mapi/emsmdb/", "/Microsoft-Server-ActiveSync", "/oab/")
POST_PATHS = ("/ews/Exchange.asmx", "/mapi/emsmdb/")


def warmup_seconds(duration_s: float) -> float:
    """When the warm-up sample is taken: 10 % of the run, at least 10 s, at most 30 s; in a run of
    10 minutes or more, at 5 minutes. Memory is judged from when bounded caches are full: the l7
    listener's TLS session cache (OpenSSL's 20 480 sessions, ~22 MiB per worker, docs/l7.md) fills in
    the first minutes of a new-connection load — a 10-minute run measured 80.8 MiB at 30 s, 100.0 MiB
    at 4 minutes, and 100.0-102.1 MiB from then to the end."""
    if duration_s >= 600:
        return 300.0
    return min(30.0, max(10.0, duration_s / 10))


# ---------------------------------------------------------------------------------------------------
# Counting.


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the load started (negative: before it)
    rss_kib: int
    fds: int
    processes: int


@dataclass(slots=True)
class ModeStats:
    """What one mode's clients saw; updated under `lock` by every client thread of the mode."""

    mode: str
    port: int
    pid: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    ok: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    corrupted: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    died: str | None = None

    def count(self, kind: str, latency: float, down: int, up: int, problem: tuple[str, str] | None) -> None:
        with self.lock:
            self.requests += 1
            self.by_kind[kind] += 1
            self.latencies.append(latency)
            self.bytes_down += down
            self.bytes_up += up
            if problem is None:
                self.ok += 1
            elif problem[0] == "error":
                self.errors[problem[1]] += 1
            else:
                self.corrupted[problem[1]] += 1


# ---------------------------------------------------------------------------------------------------
# The load: one thread per client, real TLS, every answer checked.


class Corrupted(Exception):
    """A complete 200 answer whose body is not what was asked for (the kind is the message)."""


@dataclass(frozen=True, slots=True)
class Load:
    namespace: str
    servers: frozenset[str]
    context: ssl.SSLContext
    expected: dict[int, str]  # sim-seed -> SHA-256 of its 1 MiB body
    deadline: float  # time.monotonic() when clients stop starting requests
    stop: threading.Event


def error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong on the wire."""
    match exc:
        case TimeoutError():
            return "timeout"
        case ConnectionRefusedError():
            return "refused"
        case ConnectionResetError():
            return "reset"
        case BrokenPipeError():
            return "broken pipe"
        case http.client.RemoteDisconnected():
            return "closed before the answer"
        case http.client.IncompleteRead():
            return "incomplete body"
        case ssl.SSLError():
            return f"tls {exc.reason or type(exc).__name__}"
        case http.client.HTTPException():
            return f"http {type(exc).__name__}"
        case OSError():
            return f"os {type(exc).__name__} {exc.errno}"
    return type(exc).__name__


def open_connection(load: Load, port: int) -> http.client.HTTPSConnection:
    """A TLS connection to the balancer on 127.0.0.1 with SNI and Host = the namespace (curl --resolve)."""
    conn = http.client.HTTPSConnection(load.namespace, port, context=load.context, timeout=REQUEST_TIMEOUT_S)
    raw = socket.create_connection((LOOPBACK, port), timeout=REQUEST_TIMEOUT_S)
    try:
        conn.sock = load.context.wrap_socket(raw, server_hostname=load.namespace)
    except BaseException:
        raw.close()
        raise
    return conn


def exchange(
    conn: http.client.HTTPSConnection,
    load: Load,
    rng: random.Random,
    kind: str,
    close: bool,
    number: int,
) -> tuple[int, int]:
    """One request of `kind` on `conn`; (bytes down, bytes up). Raises Corrupted or a wire error."""
    headers = {"Connection": "close"} if close else {}
    body: bytes | None = None
    seed = 0
    if kind == "get-1MiB":
        seed = rng.randrange(SEEDS)
        method, path = "GET", f"/owa/soak.bin?sim-size={MIB}&sim-seed={seed}"
    elif kind == "post-1MiB":
        body = rng.randbytes(MIB)
        method, path = "POST", f"{rng.choice(POST_PATHS)}?sim-digest=1&n={number}"
    else:
        method, path = "GET", f"{rng.choice(SMALL_PATHS)}?n={number}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise http.client.HTTPException(f"status {response.status}")
    server = response.headers.get("X-FEServer", "")
    if server not in load.servers:
        raise Corrupted("no X-FEServer of the lab")
    if kind == "get-1MiB":
        if len(data) != MIB:
            raise Corrupted(f"{kind} length")
        if hashlib.sha256(data).hexdigest() != load.expected[seed]:
            raise Corrupted(f"{kind} bytes")
        return len(data), 0
    try:
        fields = parse_description(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise Corrupted(f"{kind} description unreadable") from None
    if (fields.get("server"), fields.get("method"), fields.get("path")) != (server, method, path):
        raise Corrupted(f"{kind} answered for another request")
    if body is not None and (
        fields.get("body_bytes") != str(len(body))
        or fields.get("body_sha256") != hashlib.sha256(body).hexdigest()
    ):
        raise Corrupted(f"{kind} body digest")
    return len(data), len(body or b"")


def client(load: Load, stats: ModeStats, index: int, seed: int) -> None:
    """One client thread: keep-alive (even index) or a new connection per request (odd), until the
    deadline or the stop event; every outcome counted."""
    keepalive = index % 2 == 0
    rng = random.Random(seed * 1000 + index)
    kinds = [name for name, weight in MIX for _ in range(weight)]
    conn: http.client.HTTPSConnection | None = None
    used = 0
    number = 0
    try:
        while time.monotonic() < load.deadline and not load.stop.is_set():
            kind = rng.choice(kinds)
            number += 1
            started = time.monotonic()
            problem: tuple[str, str] | None = None
            down = up = 0
            try:
                if conn is None:
                    conn = open_connection(load, stats.port)
                    used = 0
                    with stats.lock:
                        stats.connections += 1
                used += 1
                close = not keepalive or used >= KEEPALIVE_REQUESTS
                down, up = exchange(conn, load, rng, kind, close, number)
                # http.client drops its socket after a `Connection: close` answer; open the next
                # connection here (with SNI and the loopback address), not through its auto-open.
                if close or conn.sock is None:
                    conn.close()
                    conn = None
            except Corrupted as exc:
                problem = ("corrupted", str(exc))
            except (OSError, http.client.HTTPException) as exc:
                problem = ("error", str(exc) if str(exc).startswith("status ") else error_kind(exc))
            if problem is not None and conn is not None:
                conn.close()  # never reuse a connection whose state is unknown
                conn = None
            stats.count(kind, time.monotonic() - started, down, up, problem)
    finally:
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------------------------------
# The line-up: three sims and the two balancers, as `casarray lab` builds them.


@dataclass(frozen=True, slots=True)
class Lineup:
    plan: LabPlan
    balancers: dict[Mode, tuple[int, ManagedProcess]]  # mode -> (port, process)


def free_sim_port() -> int:
    """A port free on 127.0.0.2, .3 and .4 (every sim listens on the same port, as in the lab)."""
    for _ in range(20):
        port = free_port()
        try:
            for last in (2, 3, 4):
                with socket.socket() as sock:
                    sock.bind((f"127.0.0.{last}", port))
        except OSError:
            continue
        return port
    raise BenchError("no port free on 127.0.0.2–4 for the simulated servers")


def start_lineup(ctx: Context, stack: ExitStack, modes: Sequence[Mode], workers: int) -> Lineup:
    """Lab PKI and config (casarray.lab.runner), the sims, then one balancer per mode."""
    ports = {mode: free_port() for mode in modes}
    lab = plan(
        ctx.workdir, port=ports[modes[0]], mode="l7", sim_port=free_sim_port(), ntlm=False, admin_port=0
    )
    prepare(lab)
    env = casarray_env(ctx)
    sims = []
    for server in lab.servers:
        proc = ManagedProcess(
            f"sim-cas {server.name}",
            sim_command(lab, server),
            ctx.workdir / f"sim-{server.name}.log",
            env=env,
            cwd=ctx.repo,
        )
        stack.callback(proc.stop)
        sims.append((server, proc))
    for server, proc in sims:
        proc.wait_listening(server.port, START_TIMEOUT_S, host=server.address)
    balancers: dict[Mode, tuple[int, ManagedProcess]] = {}
    for mode in modes:
        config = ctx.workdir / f"casarray-{mode}.yaml"
        mode_plan = dataclasses.replace(lab, mode=mode, port=ports[mode])
        # One data-plane process by default: its RSS and descriptors are the numbers, and the 2-core
        # machines this runs on already carry three sims, two balancers and the clients.
        config.write_text(render_config(mode_plan) + f"workers: {workers}\n", encoding="utf-8")
        proc = ManagedProcess(
            f"casarray {mode}",
            [ctx.python, "-m", "casarray", "run", "-c", str(config)],
            ctx.workdir / f"casarray-{mode}.log",
            env=env,
            cwd=ctx.repo,
        )
        stack.callback(proc.stop)
        balancers[mode] = (ports[mode], proc)
    for port, proc in balancers.values():
        proc.wait_listening(port, START_TIMEOUT_S)
    return Lineup(lab, balancers)


def wait_all_servers(load: Load, mode: str, port: int) -> None:
    """Every sim answers through the balancer (health checks have marked all three up), bounded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: set[str] = set()
    last = "no answer yet"
    while seen != load.servers:
        if time.monotonic() > deadline:
            raise BenchError(
                f"{mode}: only {sorted(seen) or 'no server'} answered through the balancer within "
                f"{START_TIMEOUT_S:.0f}s ({last})"
            )
        try:
            conn = open_connection(load, port)
            try:
                conn.request("GET", "/owa/healthcheck.htm", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                last = f"status {response.status}"
                if response.status == 200:
                    seen.add(response.headers.get("X-FEServer", ""))
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            last = error_kind(exc)
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------------
# Sampling the balancers.


def sample(pid: int, t: float) -> Sample:
    """RSS and open descriptors of the balancer and its workers (a process that just exited counts 0)."""
    rss = fds = 0
    pids = process_tree(pid)
    for current in pids:
        try:
            rss += rss_kib(current)
        except BenchError:
            continue
        fds += max(fd_count(current), 0)
    return Sample(round(t, 1), rss, fds, len(pids))


@dataclass(frozen=True, slots=True)
class Verdict:
    mode: str
    warm: Sample
    end: Sample
    idle_fds: int
    settled_fds: int
    growth: float  # RSS end / warm-up - 1
    problems: tuple[str, ...]


def judge(
    stats: ModeStats, warm_t: float, idle_fds: int, settled_fds: int, rss_bound: float
) -> Verdict | None:
    loaded = [s for s in stats.samples if s.t >= 0]
    if not loaded:
        return None
    warm = next((s for s in loaded if s.t >= warm_t), loaded[-1])
    end = loaded[-1]
    growth = end.rss_kib / warm.rss_kib - 1 if warm.rss_kib else 0.0
    problems = []
    if stats.died:
        problems.append(stats.died)
    if stats.errors:
        problems.append(f"{sum(stats.errors.values())} errors")
    if stats.corrupted:
        problems.append(f"{sum(stats.corrupted.values())} corrupted")
    if stats.requests == 0:
        problems.append("no request completed")
    if growth > rss_bound:
        problems.append(f"RSS grew {growth:.0%} (bound {rss_bound:.0%})")
    if settled_fds > idle_fds:
        problems.append(
            f"{settled_fds - idle_fds} descriptors above the idle level {SETTLE_S:.0f}s after the load"
        )
    return Verdict(stats.mode, warm, end, idle_fds, settled_fds, growth, tuple(problems))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------------------------------------------
# The run.


HEADERS = [
    "mode",
    "requests",
    "errors",
    "corrupted",
    "req/s",
    "MiB/s",
    "p99 ms",
    "RSS MiB warm-up → end",
    "fds idle / warm-up / end",
    "result",
]


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(r["mode"]),
            f"{r['requests']:,}",
            f"{r['errors_total']:,}",
            f"{r['corrupted_total']:,}",
            f"{r['requests_per_s']:.1f}",
            f"{r['mib_per_s']:.1f}",
            f"{r['latency_ms']['p99']:.0f}",
            f"{_mib(r['rss_kib']['warmup'])} → {_mib(r['rss_kib']['end'])} ({r['rss_growth']:+.1%})",
            f"{r['fds']['idle']} / {r['fds']['warmup']} / {r['fds']['end']}",
            "ok" if r["passed"] else "FAIL",
        ]
        for r in results
    ]


def run(args: argparse.Namespace) -> int:
    modes: list[Mode] = args.only or list(MODES)
    duration_s = args.minutes * 60
    warm_t = warmup_seconds(duration_s)
    rss_bound = args.rss_growth / 100
    started_at = datetime.now(UTC)
    raise_fd_limit()
    stop = threading.Event()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="casarray-soak-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        ctx = Context(workdir=workdir, repo=REPO, python=sys.executable, nginx="", haproxy="", wrk="")
        log(f"soak: {args.minutes:g} min, modes {', '.join(modes)}, {args.clients} clients per mode")
        lineup = start_lineup(ctx, stack, modes, args.workers)
        lab = lineup.plan
        expected = {
            seed: hashlib.sha256(b"".join(seeded_blocks(seed, MIB))).hexdigest() for seed in range(SEEDS)
        }
        context = ssl.create_default_context(cafile=str(lab.ca))
        context.set_alpn_protocols(["http/1.1"])
        probe = Load(lab.namespace, frozenset(s.name for s in lab.servers), context, expected, 0.0, stop)
        stats = {mode: ModeStats(mode, port, proc.pid) for mode, (port, proc) in lineup.balancers.items()}
        for mode, s in stats.items():
            wait_all_servers(probe, mode, s.port)
        # The idle level: the listeners, the health checker's connections as they come and go.
        idle_until = time.monotonic() + IDLE_SAMPLE_S
        while time.monotonic() < idle_until:
            for s in stats.values():
                s.samples.append(sample(s.pid, min(-0.1, time.monotonic() - idle_until)))
            time.sleep(0.5)
        idle_fds = {mode: max(x.fds for x in s.samples) for mode, s in stats.items()}

        t0 = time.monotonic()
        load = dataclasses.replace(probe, deadline=t0 + duration_s)
        threads = [
            threading.Thread(
                target=client, args=(load, stats[mode], i, args.seed), name=f"{mode}-{i}", daemon=True
            )
            for mode in modes
            for i in range(args.clients)
        ]
        # The clients stop on their own at the deadline; on Ctrl-C or an error they stop at their
        # next request (at most REQUEST_TIMEOUT_S per socket operation).
        stack.callback(stop.set)
        for thread in threads:
            thread.start()
        log(f"soak: load started; warm-up sample at {warm_t:.0f}s, RSS bound +{args.rss_growth:g}%")
        next_progress = t0 + PROGRESS_INTERVAL_S
        while any(t.is_alive() for t in threads):
            now = time.monotonic()
            for mode, s in stats.items():
                proc = lineup.balancers[mode][1]
                if not proc.alive() and s.died is None:
                    s.died = f"balancer exited with status {proc.proc.returncode}"
                    log(f"soak: {mode}: {s.died}; its output:\n{proc.log_tail()}")
                    stop.set()
                if now < load.deadline:
                    s.samples.append(sample(s.pid, now - t0))
            if now >= next_progress:
                next_progress += PROGRESS_INTERVAL_S
                for mode, s in stats.items():
                    last = s.samples[-1]
                    log(
                        f"soak: {now - t0:5.0f}s {mode}: {s.requests:,} requests, "
                        f"{sum(s.errors.values())} errors, {sum(s.corrupted.values())} corrupted, "
                        f"RSS {_mib(last.rss_kib)} MiB, {last.fds} fds"
                    )
            if now > load.deadline + 2 * REQUEST_TIMEOUT_S + 10:
                stop.set()
                log("soak: clients did not finish after the deadline; giving up on them")
                break
            time.sleep(SAMPLE_INTERVAL_S if now < load.deadline else 0.2)
        elapsed = time.monotonic() - t0

        # The clients are gone: every descriptor they held must be let go of.
        settled = {mode: -1 for mode in modes}
        settle_until = time.monotonic() + SETTLE_S
        while True:
            for mode, s in stats.items():
                settled[mode] = sample(s.pid, time.monotonic() - t0).fds
            if all(settled[m] <= idle_fds[m] for m in modes) or time.monotonic() > settle_until:
                break
            time.sleep(0.5)

        results = []
        failures: list[str] = []
        for mode, s in stats.items():
            verdict = judge(s, warm_t, idle_fds[mode], settled[mode], rss_bound)
            if verdict is None:
                raise BenchError(f"{mode}: no sample of the balancer under load")
            results.append(result_json(s, verdict, elapsed))
            failures += [f"{mode}: {p}" for p in verdict.problems]
            tracebacks = lineup.balancers[mode][1].log_tail(10**9).count("Traceback")
            results[-1]["balancer_tracebacks"] = tracebacks
            if tracebacks:
                log(f"soak: {mode}: {tracebacks} Python tracebacks in the balancer's log")
            if verdict.problems:
                log(f"soak: {mode}: balancer log tail:\n{lineup.balancers[mode][1].log_tail(20)}")

    print_table(results, args, elapsed, warm_t)
    if args.json is not None:
        data = {
            "started": started_at.isoformat(timespec="seconds"),
            "minutes": args.minutes,
            "clients_per_mode": args.clients,
            "workers": args.workers,
            "warmup_s": warm_t,
            "rss_growth_bound": rss_bound,
            "settle_s": SETTLE_S,
            "mix": dict(MIX),
            "passed": not failures,
            "failures": failures,
            "modes": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        log(f"soak: results written to {args.json}")
    for line in failures:
        print(f"FAIL {line}")
    return 1 if failures else 0


def result_json(s: ModeStats, v: Verdict, elapsed: float) -> dict[str, Any]:
    return {
        "mode": s.mode,
        "passed": not v.problems,
        "problems": list(v.problems),
        "seconds": round(elapsed, 1),
        "requests": s.requests,
        "ok": s.ok,
        "by_kind": dict(s.by_kind),
        "connections": s.connections,
        "errors_total": sum(s.errors.values()),
        "errors": dict(s.errors),
        "corrupted_total": sum(s.corrupted.values()),
        "corrupted": dict(s.corrupted),
        "requests_per_s": s.requests / elapsed if elapsed else 0.0,
        "mib_per_s": (s.bytes_down + s.bytes_up) / MIB / elapsed if elapsed else 0.0,
        "latency_ms": {
            "p50": percentile(s.latencies, 0.5) * 1000,
            "p99": percentile(s.latencies, 0.99) * 1000,
            "max": max(s.latencies, default=0.0) * 1000,
        },
        "rss_kib": {"warmup": v.warm.rss_kib, "end": v.end.rss_kib, "warmup_t": v.warm.t, "end_t": v.end.t},
        "rss_growth": v.growth,
        "fds": {"idle": v.idle_fds, "warmup": v.warm.fds, "end": v.settled_fds},
        "samples": [dataclasses.asdict(x) for x in s.samples],
    }


def print_table(
    results: list[dict[str, Any]], args: argparse.Namespace, elapsed: float, warm_t: float
) -> None:
    print(
        f"soak: {elapsed:.0f} s of load, {args.clients} clients per mode (half keep-alive, half a new "
        f"connection per request); RSS at {warm_t:.0f} s and at the end of the load; fds idle before "
        f"the load, at warm-up, and after the clients left"
    )
    print(render_plain(HEADERS, table_rows(results)))
    for r in results:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(r["by_kind"].items()))
        print(f"  {r['mode']}: {kinds}; {r['connections']:,} connections")
        for what in ("errors", "corrupted"):
            if r[what]:
                print(f"  {r['mode']} {what}: " + ", ".join(f"{k} × {n}" for k, n in r[what].items()))


# ---------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description="Soak the l4 and l7 balancers with mixed TLS load; every body checked; RSS and fds watched.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="client threads per mode (default 8)")
    parser.add_argument(
        "--only", action="append", choices=MODES, metavar="MODE", help="soak only this mode (l4 or l7)"
    )
    parser.add_argument("--workers", type=int, default=1, help="`workers:` of each balancer (default 1)")
    parser.add_argument(
        "--rss-growth",
        type=float,
        default=20.0,
        metavar="PCT",
        help="allowed RSS growth, warm-up to end (20)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if not 0.1 <= args.minutes <= 24 * 60:
        parser.error(f"--minutes must be between 0.1 and 1440, got {args.minutes:g}")
    if not 1 <= args.clients <= 64:
        parser.error(f"--clients must be between 1 and 64, got {args.clients}")
    if not 1 <= args.workers <= 16:
        parser.error(f"--workers must be between 1 and 16, got {args.workers}")
    if not 0 <= args.rss_growth <= 1000:
        parser.error(f"--rss-growth must be between 0 and 1000, got {args.rss_growth:g}")
    if args.only:
        args.only = list(dict.fromkeys(args.only))
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same way out as Ctrl-C, through every `finally` that stops a child.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
