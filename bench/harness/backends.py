"""The processes under test: nginx as the origin, HAProxy as the reference, casarray as the candidate.

Each starter writes its own config into the run's temporary directory, starts the binary in the
foreground (so the pid we measure is the process doing the work) and registers its stop on the
ExitStack, so nothing outlives the bench, also on Ctrl-C or an error.
"""

from __future__ import annotations

import http.client
import os
import ssl
import textwrap
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .procs import LOOPBACK, BenchError, ManagedProcess, free_port, run_bounded

SMALL_PATH = "/small.bin"
SMALL_SIZE = 100
LARGE_PATH = "/large.bin"
LARGE_SIZE = 1024 * 1024
START_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Context:
    """What every starter needs: where to write, which binaries and which interpreter to use."""

    workdir: Path
    repo: Path
    python: str
    nginx: str
    haproxy: str
    wrk: str
    # "production": the balancers health-check the origin as a deployment does (every CHECK_INTERVAL);
    # "bare": no health checks, the shape of the bench before it measured production's (--shape bare).
    shape: str = "production"
    # casarray's `workers` and HAProxy's `nbthread` (--workers): 1 compares one core with one core; with
    # more, CPU s per 1 000 requests shows whether the per-request cost stays the same across workers.
    workers: int = 1


@dataclass(slots=True)
class Target:
    """One column of the report: where wrk sends load and whose CPU time is charged for it.

    `port` speaks TLS when `ca` is set (the CA its certificate is verified against in the sanity
    check; wrk itself verifies nothing). `plain_port` is the same target without TLS on either side,
    for the suites that have a plain case; `plain_skip` says why a target has none. `relaunch(label)`,
    when set, starts a fresh process of the same target (its files under `label`): a measurement of
    memory starts from a process that never held connections, not from one whose freed memory would
    be reused.
    """

    name: str
    port: int | None
    process: ManagedProcess | None
    skip_reason: str | None = None
    ca: Path | None = None
    plain_port: int | None = None
    plain_skip: str | None = None
    relaunch: Callable[[str], Target] | None = None

    @property
    def available(self) -> bool:
        return self.port is not None and self.skip_reason is None

    def port_for(self, plain: bool) -> int | None:
        return self.plain_port if plain else self.port

    def url(self, path: str, *, plain: bool = False) -> str:
        if plain:
            return f"http://{LOOPBACK}:{self.plain_port}{path}"
        scheme = "https" if self.ca is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}{path}"


def _fill(path: Path, size: int) -> None:
    pattern = b"casarray-bench-0123456789abcdefghijklmnopqrstuvwxyz\n"
    path.write_bytes((pattern * (size // len(pattern) + 1))[:size])
    path.chmod(0o644)


def start_nginx(ctx: Context, stack: ExitStack) -> int:
    """nginx with one worker serving the 100-byte and 1 MiB files over keep-alive; returns its port."""
    port = free_port()
    run_nginx(
        ctx,
        stack,
        files={SMALL_PATH: SMALL_SIZE, LARGE_PATH: LARGE_SIZE},
        servers=[f"listen {LOOPBACK}:{port} backlog=4096;"],
        ports=[port],
    )
    return port


def run_nginx(
    ctx: Context,
    stack: ExitStack,
    *,
    files: Mapping[str, int],
    servers: Sequence[str],
    ports: Sequence[int],
    worker_connections: int = 8192,
) -> None:
    """Start nginx (one worker, keep-alive, sendfile) with `files` (URL path -> size) under its root
    and one `server { … }` block per entry of `servers` (its directives, without root/location);
    return once every port in `ports` accepts connections."""
    prefix = ctx.workdir / "nginx"
    www = prefix / "www"
    www.mkdir(parents=True)
    # nginx started by root drops its worker to `nobody`, which must be able to read the files.
    for directory in (ctx.workdir, prefix, www):
        directory.chmod(0o755)
    for url_path, size in files.items():
        target = www / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o755)
        _fill(target, size)
    blocks = "\n".join(
        f"server {{\n    {directives}\n    root {www};\n    location / {{ }}\n}}" for directives in servers
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            daemon off;
            master_process on;
            worker_processes 1;
            pid {prefix}/nginx.pid;
            error_log {prefix}/error.log warn;
            events {{
                worker_connections {worker_connections};
            }}
            http {{
                access_log off;
                default_type application/octet-stream;
                sendfile on;
                tcp_nopush on;
                tcp_nodelay on;
                keepalive_timeout 120s;
                keepalive_requests 100000000;
                client_body_temp_path {prefix}/client_body;
                proxy_temp_path {prefix}/proxy;
                fastcgi_temp_path {prefix}/fastcgi;
                uwsgi_temp_path {prefix}/uwsgi;
                scgi_temp_path {prefix}/scgi;
            """
        )
        + textwrap.indent(blocks, "    ")
        + "\n}\n"
    )
    proc = ManagedProcess(
        "nginx",
        [ctx.nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")],
        prefix / "stdout.log",
    )
    stack.callback(proc.stop)
    for port in ports:
        proc.wait_listening(port, START_TIMEOUT_S)


def start_haproxy_tcp(ctx: Context, stack: ExitStack, origin_port: int) -> Target:
    """HAProxy in `mode tcp`, one thread, the origin as its only server."""
    directory = ctx.workdir / "haproxy"
    directory.mkdir()
    port = free_port()
    conf = directory / "haproxy.cfg"
    conf.write_text(
        textwrap.dedent(
            f"""\
            global
                nbthread {ctx.workers}
                maxconn 4096

            defaults
                mode tcp
                timeout connect 5s
                timeout client 60s
                timeout server 60s

            frontend bench
                bind {LOOPBACK}:{port}
                default_backend origin

            backend origin
                server N1 {LOOPBACK}:{origin_port}
            """
        )
    )
    # -db: stay in the foreground, no master process, so the pid is the one doing the relaying.
    proc = ManagedProcess("haproxy", [ctx.haproxy, "-db", "-f", str(conf)], directory / "output.log")
    stack.callback(proc.stop)
    proc.wait_listening(port, START_TIMEOUT_S)
    return Target("haproxy", port, proc)


def casarray_env(ctx: Context) -> dict[str, str]:
    """The environment for `python -m casarray`: the checkout's src/ first, so the tree is what runs."""
    env = dict(os.environ)
    src = str(ctx.repo / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def casarray_unavailable(ctx: Context) -> str | None:
    """Why `python -m casarray run` cannot be used, or None when its --help works."""
    argv = [ctx.python, "-m", "casarray", "run", "--help"]
    try:
        done = run_bounded(argv, 60.0, env=casarray_env(ctx), cwd=ctx.repo)
    except BenchError as exc:
        return str(exc)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = lines[-1] if lines else "no output"
        return f"`python -m casarray run --help` exited with status {done.returncode}: {last}"
    return None


def casarray_config(mode: str, port: int, origin_port: int, workers: int = 1) -> str:
    """A casarray.yaml (DESIGN §3) with one server and health checks off (every server is up)."""
    return textwrap.dedent(
        f"""\
        # Written by bench/run.py for one benchmark run.
        namespace: bench.casarray.test
        mode: {mode}
        listen:
          address: {LOOPBACK}
          https_port: {port}
        servers:
          - {{name: N1, address: {LOOPBACK}, port: {origin_port}}}
        health:
          enabled: false
        workers: {workers}  # against HAProxy's nbthread; CPU is read off the process and its workers
        """
    )


def start_casarray(ctx: Context, stack: ExitStack, mode: str, origin_port: int) -> Target:
    """casarray in `mode` (plain origin); a skipped Target (with the reason) when it cannot run yet."""
    return launch_casarray(ctx, stack, lambda port: casarray_config(mode, port, origin_port, ctx.workers))


def launch_casarray(
    ctx: Context,
    stack: ExitStack,
    config_for: Callable[[int], str],
    *,
    ca: Path | None = None,
    plain_skip: str | None = None,
    label: str = "casarray",
) -> Target:
    """casarray with the casarray.yaml `config_for(listen_port)`; a skipped Target when it cannot run.
    Its files go to the run's directory under `label`."""
    reason = casarray_unavailable(ctx)
    if reason is not None:
        return Target("casarray", None, None, skip_reason=reason, ca=ca, plain_skip=plain_skip)
    directory = ctx.workdir / label
    directory.mkdir()
    port = free_port()
    conf = directory / "casarray.yaml"
    conf.write_text(config_for(port))
    proc = ManagedProcess(
        "casarray",
        [ctx.python, "-m", "casarray", "run", "-c", str(conf)],
        directory / "output.log",
        env=casarray_env(ctx),
        cwd=ctx.repo,
    )
    stack.callback(proc.stop)
    try:
        proc.wait_listening(port, START_TIMEOUT_S)
    except BenchError as exc:
        proc.stop()
        return Target("casarray", None, None, skip_reason=str(exc), ca=ca, plain_skip=plain_skip)
    return Target("casarray", port, proc, ca=ca, plain_skip=plain_skip)


def check_response(
    target: Target, path: str, size: int, *, plain: bool = False, headers: Sequence[str] = ()
) -> str | None:
    """GET path once through the target (with `headers`, "Name: value"); the problem as text, or None
    when it answers 200 with size bytes. A TLS port must present a certificate valid for 127.0.0.1
    under the target's CA."""
    port = target.port_for(plain)
    if port is None:
        return "not started"
    conn: http.client.HTTPConnection
    if target.ca is not None and not plain:
        context = ssl.create_default_context(cafile=str(target.ca))
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    fields = dict(header.split(":", 1) for header in headers)
    try:
        conn.request("GET", path, headers={name.strip(): value.strip() for name, value in fields.items()})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {path} failed: {exc!r}"
    finally:
        conn.close()
    if response.status != 200 or len(body) != size:
        return f"GET {path} answered {response.status} with {len(body)} bytes, expected 200 with {size}"
    return None
