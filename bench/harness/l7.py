"""The Layer-7 line-up: nginx over HTTPS as the origin, HAProxy `mode http` and casarray `mode: l7`.

Both balancers terminate TLS with the lab certificate and re-encrypt to nginx, verifying it against the
lab CA with the namespace as SNI; neither shares a server connection between client connections
(casarray never does, HAProxy gets `http-reuse never`). Both answer 421 to a foreign Host and 404
outside the Exchange virtual directories, and add X-Forwarded-For/-Proto, so each does the same work
per request. nginx also listens on a plain-HTTP port, and HAProxy has a plain-HTTP frontend to it:
the "plain" (no TLS anywhere) reference that casarray, which always re-encrypts, does not have.
"""

from __future__ import annotations

import textwrap
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .backends import START_TIMEOUT_S, Context, Target, launch_casarray, run_nginx
from .procs import LOOPBACK, BenchError, ManagedProcess, free_port

NAMESPACE = "outlook.alwayshotcafe.com"
HOST_HEADER = f"Host: {NAMESPACE}"
SMALL_PATH = "/owa/small.txt"
SMALL_SIZE = 100
LARGE_PATH = "/owa/big.bin"
LARGE_SIZE = 1024 * 1024
# The production shape (Context.shape): both balancers check the origin every CHECK_INTERVAL over HTTPS,
# GET /owa/healthcheck.htm answered as Exchange's Managed Availability does ("200 OK<br/>FQDN").
# casarray checks each of its 9 services (as it does in production), HAProxy its one backend.
CHECK_INTERVAL = "2s"
CHECK_PATH = "/owa/healthcheck.htm"
CHECK_BODY = "200 OK<br/>N1.alwayshotcafe.com"

# The vdirs casarray forwards (first path segment, case-insensitive); the HAProxy reference gets the
# same rule so both refuse the same requests.
VDIRS = (
    "owa",
    "ecp",
    "ews",
    "mapi",
    "rpc",
    "oab",
    "microsoft-server-activesync",
    "autodiscover",
    "powershell",
)
NO_PLAIN_MODE = (
    "casarray has no plain-HTTP Layer 7: it always terminates TLS and re-encrypts "
    "(Extended Protection forbids offloading to plain HTTP)"
)


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    certificate: Path  # chain, leaf first
    key: Path
    bundle: Path  # certificate + key in one PEM, as HAProxy's `crt` wants it


@dataclass(frozen=True, slots=True)
class Origin:
    tls_port: int
    plain_port: int


def make_pki(ctx: Context) -> Pki:
    """The lab CA and the shared server certificate (namespace, server names, 127.0.0.1–4)."""
    try:
        from casarray.lab.pki import make_lab_pki
    except ImportError as exc:
        raise BenchError(f"cannot import casarray.lab.pki for the lab certificates: {exc}") from exc
    directory = ctx.workdir / "pki"
    files = make_lab_pki(directory)
    bundle = directory / "bundle.pem"
    bundle.write_bytes(files.certificate.read_bytes() + files.key.read_bytes())
    bundle.chmod(0o600)
    return Pki(ca=files.ca, certificate=files.certificate, key=files.key, bundle=bundle)


def start_origin(ctx: Context, stack: ExitStack, pki: Pki) -> Origin:
    """nginx serving /owa/small.txt (100 B) and /owa/big.bin (1 MiB) on an HTTPS and a plain port."""
    origin = Origin(tls_port=free_port(), plain_port=free_port())
    run_nginx(
        ctx,
        stack,
        files={SMALL_PATH: SMALL_SIZE, LARGE_PATH: LARGE_SIZE},
        servers=[
            textwrap.dedent(
                f"""\
                listen {LOOPBACK}:{origin.tls_port} ssl backlog=4096;
                    ssl_certificate {pki.certificate};
                    ssl_certificate_key {pki.key};
                    ssl_protocols TLSv1.2 TLSv1.3;
                    ssl_session_cache shared:TLS:10m;
                    location ~ ^/[^/]+/healthcheck\\.htm$ {{ return 200 "{CHECK_BODY}"; }}"""
            ),
            f"listen {LOOPBACK}:{origin.plain_port} backlog=4096;",
        ],
        ports=[origin.tls_port, origin.plain_port],
        # Room for the idle-connection measurement (one upstream connection per idle client).
        worker_connections=19_000,
    )
    return origin


def start_haproxy_http(
    ctx: Context, stack: ExitStack, pki: Pki, origin: Origin, maxconn: int, label: str = "haproxy"
) -> Target:
    """HAProxy `mode http`, one thread, TLS on both sides (plus a plain frontend for the plain case);
    its files under `label` in the run's directory."""
    directory = ctx.workdir / label
    directory.mkdir()
    port, plain_port = free_port(), free_port()
    vdirs = " ".join(VDIRS)
    rules = textwrap.indent(
        textwrap.dedent(
            f"""\
            http-request return status 421 unless {{ req.hdr(host) -i {NAMESPACE} }}
            http-request return status 404 unless {{ path,field(2,/) -i {vdirs} }}
            option forwardfor
            """
        ),
        "    ",
    )
    checks, check = "", ""
    if ctx.shape == "production":
        checks = (
            "    option httpchk\n"
            f"    http-check send meth GET uri {CHECK_PATH} ver HTTP/1.1 hdr Host {NAMESPACE}\n"
            '    http-check expect string "200 OK"\n'
        )
        check = f" check inter {CHECK_INTERVAL} check-sni {NAMESPACE}"
    conf = directory / "haproxy.cfg"
    conf.write_text(
        textwrap.dedent(
            f"""\
            global
                nbthread {ctx.workers}
                maxconn {maxconn}
                ssl-server-verify required

            defaults
                mode http
                option http-keep-alive
                # NTLM authenticates a connection: never hand one client's server connection to another.
                http-reuse never
                timeout connect 5s
                timeout client 120s
                timeout server 120s
                timeout http-request 10s
                timeout http-keep-alive 120s

            frontend tls
                bind {LOOPBACK}:{port} ssl crt {pki.bundle} alpn http/1.1
            """
        )
        + rules
        + textwrap.dedent(
            f"""\
                http-request set-header X-Forwarded-Proto https
                default_backend origin_tls

            backend origin_tls
                server N1 {LOOPBACK}:{origin.tls_port} ssl verify required ca-file {pki.ca} sni str({NAMESPACE}) alpn http/1.1{check}

            frontend plain
                bind {LOOPBACK}:{plain_port}
            """
        ).replace("backend origin_tls\n", "backend origin_tls\n" + checks)
        + rules
        + textwrap.dedent(
            f"""\
                default_backend origin_plain

            backend origin_plain
                server N1 {LOOPBACK}:{origin.plain_port}
            """
        )
    )
    proc = ManagedProcess("haproxy", [ctx.haproxy, "-db", "-f", str(conf)], directory / "output.log")
    stack.callback(proc.stop)
    proc.wait_listening(port, START_TIMEOUT_S)
    proc.wait_listening(plain_port, START_TIMEOUT_S)
    target = Target("haproxy", port, proc, ca=pki.ca, plain_port=plain_port)
    target.relaunch = lambda label: start_haproxy_http(ctx, stack, pki, origin, maxconn, label)
    return target


def casarray_l7_config(port: int, pki: Pki, origin: Origin, shape: str, workers: int = 1) -> str:
    """casarray.yaml (DESIGN §3): TLS to clients, re-encrypted to nginx, one server; its 9 services
    health-checked every CHECK_INTERVAL in the production shape, no checks in the bare one."""
    health = f"{{interval: {CHECK_INTERVAL}}}" if shape == "production" else "{enabled: false}"
    return textwrap.dedent(
        f"""\
        # Written by bench/run.py for one benchmark run.
        namespace: {NAMESPACE}
        mode: l7
        listen:
          address: {LOOPBACK}
          https_port: {port}
        tls:
          certificate: {pki.certificate}
          key: {pki.key}
        upstream_tls:
          ca: {pki.ca}
          server_name: {NAMESPACE}
        servers:
          - {{name: N1, address: {LOOPBACK}, port: {origin.tls_port}}}
        health: {health}
        workers: {workers}  # against HAProxy's nbthread; CPU is read off the process and its workers
        """
    )


def start_casarray_l7(
    ctx: Context, stack: ExitStack, pki: Pki, origin: Origin, label: str = "casarray"
) -> Target:
    target = launch_casarray(
        ctx,
        stack,
        lambda port: casarray_l7_config(port, pki, origin, ctx.shape, ctx.workers),
        ca=pki.ca,
        plain_skip=NO_PLAIN_MODE,
        label=label,
    )
    target.relaunch = lambda label: start_casarray_l7(ctx, stack, pki, origin, label)
    return target
