"""What is measured: suites (one per listener mode) of scenarios, each run against every target.

A new suite is one more entry in SUITES: its own setup that starts the origin and the balancers, and
its own scenarios with their targets. `l4` relays plain HTTP/1.1 over TCP; `l7` terminates TLS and
re-encrypts to an HTTPS origin, and also measures memory per idle connection.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Literal

from .backends import (
    LARGE_PATH,
    LARGE_SIZE,
    SMALL_PATH,
    SMALL_SIZE,
    Context,
    Target,
    start_casarray,
    start_haproxy_tcp,
    start_nginx,
)
from .idle import fd_budget
from .l7 import HOST_HEADER, NAMESPACE, make_pki, start_casarray_l7, start_haproxy_http, start_origin
from .l7 import LARGE_PATH as L7_LARGE_PATH
from .l7 import LARGE_SIZE as L7_LARGE_SIZE
from .l7 import SMALL_PATH as L7_SMALL_PATH
from .l7 import SMALL_SIZE as L7_SMALL_SIZE
from .procs import LOOPBACK

Metric = Literal["requests_per_s", "mib_per_s"]

# Report columns in order; the ratio is CANDIDATE / REFERENCE.
TARGET_ORDER = ("direct", "haproxy", "casarray")
REFERENCE = "haproxy"
CANDIDATE = "casarray"


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    path: str
    expected_size: int
    connections: int
    metric: Metric
    unit: str
    target_ratio: float | None  # None: for information, no goal
    headers: tuple[str, ...] = ()
    plain: bool = False  # measured on each target's plain_port (no TLS anywhere)
    p99_target: float | None = None  # casarray's p99 latency ÷ HAProxy's, at most; None: no goal


@dataclass(frozen=True, slots=True)
class IdleCase:
    """One way a client connection sits idle: what its one request carries, and the goal (casarray's
    KiB per connection ÷ HAProxy's in the same case, at most)."""

    key: str
    title: str
    target_ratio: float
    headers: tuple[str, ...] = ()
    released: bool = False  # casarray closes the idle upstream connection: measure after it did


@dataclass(frozen=True, slots=True)
class IdleSpec:
    """Memory per idle keep-alive connection: `count` TLS clients, one GET of `path` each, then quiet;
    once per case, each time in a fresh process of each balancer."""

    count: int
    path: str
    server_name: str
    cases: tuple[IdleCase, ...]
    targets: tuple[str, ...] = ("haproxy", "casarray")
    descriptors_per_connection: int = 2  # client + upstream in the balancer (until a release)

    def request(self, case: IdleCase) -> bytes:
        extra = "".join(f"{header}\r\n" for header in case.headers)
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.server_name}\r\nUser-Agent: casarray-bench\r\n"
            f"{extra}\r\n"
        ).encode()


def ntlm_negotiate() -> str:
    """`Authorization: NTLM <NEGOTIATE_MESSAGE>`, the first leg of an NTLM handshake (MS-NLMP 2.2.1.1),
    as pyspnego's NTLM client writes it."""
    import spnego

    client = spnego.client("bench", "bench", hostname=NAMESPACE, protocol="ntlm")
    token = client.step()
    assert token is not None
    return "Authorization: NTLM " + base64.b64encode(token).decode()


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    title: str
    scenarios: tuple[Scenario, ...]
    setup: Callable[[Context, ExitStack], list[Target]]
    idle: IdleSpec | None = None
    notes: tuple[str, ...] = ()  # how to read this suite, printed under its table


def _setup_l4(ctx: Context, stack: ExitStack) -> list[Target]:
    origin_port = start_nginx(ctx, stack)
    return [
        Target("direct", origin_port, None),
        start_haproxy_tcp(ctx, stack, origin_port),
        start_casarray(ctx, stack, "l4", origin_port),
    ]


L4 = Suite(
    name="l4",
    title=f"Layer 4 (TCP pass-through), plain HTTP/1.1 to nginx on {LOOPBACK}",
    scenarios=(
        Scenario(
            key="keepalive-100B",
            title="keep-alive, 100-byte responses",
            path=SMALL_PATH,
            expected_size=SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="req/s",
            target_ratio=1.0,
        ),
        Scenario(
            key="transfer-1MiB",
            title="keep-alive, 1 MiB responses",
            path=LARGE_PATH,
            expected_size=LARGE_SIZE,
            connections=16,
            metric="mib_per_s",
            unit="MiB/s",
            target_ratio=1.0,
        ),
        Scenario(
            key="new-connections",
            title="new connection per request (Connection: close), 100 B",
            path=SMALL_PATH,
            expected_size=SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="conn/s",
            target_ratio=0.75,
            headers=("Connection: close",),
        ),
    ),
    setup=_setup_l4,
)


def _setup_l7(ctx: Context, stack: ExitStack) -> list[Target]:
    pki = make_pki(ctx)
    origin = start_origin(ctx, stack, pki)
    # HAProxy's maxconn must fit the inherited open-files limit (2 descriptors per connection), or it
    # refuses to start; the idle measurement never opens more than this many.
    fits, _ = fd_budget(100_000, 2)
    return [
        Target("direct", origin.tls_port, None, ca=pki.ca, plain_port=origin.plain_port),
        start_haproxy_http(ctx, stack, pki, origin, maxconn=fits + 10),
        start_casarray_l7(ctx, stack, pki, origin),
    ]


L7 = Suite(
    name="l7",
    title=(
        f"Layer 7 (HTTP/1.1), TLS terminated and re-encrypted to nginx over HTTPS on {LOOPBACK}, "
        f"Host: {NAMESPACE}"
    ),
    scenarios=(
        Scenario(
            key="keepalive-100B",
            title="keep-alive, 100-byte responses, TLS terminated + re-encrypted",
            path=L7_SMALL_PATH,
            expected_size=L7_SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="req/s",
            target_ratio=0.9,
            headers=(HOST_HEADER,),
            p99_target=1.0,
        ),
        Scenario(
            key="transfer-1MiB",
            title="keep-alive, 1 MiB responses, TLS both sides",
            path=L7_LARGE_PATH,
            expected_size=L7_LARGE_SIZE,
            connections=16,
            metric="mib_per_s",
            unit="MiB/s",
            target_ratio=1.1,
            headers=(HOST_HEADER,),
        ),
        Scenario(
            key="new-connections",
            title="new TLS connection per request (Connection: close), 100 B",
            path=L7_SMALL_PATH,
            expected_size=L7_SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="conn/s",
            target_ratio=1.0,
            headers=(HOST_HEADER, "Connection: close"),
        ),
        Scenario(
            key="plain-keepalive-100B",
            title="keep-alive, 100-byte responses, plain HTTP both sides (reference only)",
            path=L7_SMALL_PATH,
            expected_size=L7_SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="req/s",
            target_ratio=None,
            headers=(HOST_HEADER,),
            plain=True,
        ),
    ),
    setup=_setup_l7,
    idle=IdleSpec(
        count=10_000,
        path=L7_SMALL_PATH,
        server_name=NAMESPACE,
        cases=(
            # An NTLM client: its first request carries an NTLM NEGOTIATE message, so casarray marks
            # the upstream connection private and keeps it for the client connection's life. The
            # origin (nginx) ignores it and answers 200: what the balancer keeps per connection does not
            # depend on whether the server checked the token. HAProxy (`http-reuse never`) keeps the
            # server connection of every client connection, NTLM or not.
            IdleCase(
                key="pinned",
                title="pinned upstream (the request carried Authorization: NTLM)",
                target_ratio=1.0,
                headers=(ntlm_negotiate(),),
            ),
            # Anonymous (or Basic, Bearer, forms): casarray closes the upstream connection once the
            # client connection has been idle for timeouts.upstream_release (5 s); HAProxy keeps it.
            IdleCase(
                key="released",
                title="upstream released (anonymous request, after timeouts.upstream_release)",
                target_ratio=0.6,
                released=True,
            ),
        ),
    ),
    notes=(
        "casarray always terminates TLS and re-encrypts (SSL bridging), so its keep-alive case is the "
        "TLS-bridged case; its p99 latency is judged too (<= 1.0 x HAProxy's).",
        "direct = wrk straight to nginx over HTTPS (plain-* rows: plain HTTP), the machine's ceiling.",
        "plain-keepalive-100B is the issue's 'plain' L7 keep-alive case: HTTP without TLS on either "
        "side. casarray has no such mode (re-encryption is mandatory), so the row shows what TLS costs "
        "nginx and HAProxy; it has no goal.",
        "wrk does not verify certificates and sends the Host header given with -H; the sanity GET "
        "verifies each TLS port against the lab CA.",
    ),
)

SUITES: dict[str, Suite] = {suite.name: suite for suite in (L4, L7)}


IDLE_KEY = "idle"  # --scenario: both idle-memory cases; "idle-<case>" picks one


def scenario_keys() -> list[str]:
    """What --scenario accepts: every suite's scenario keys, `idle` and `idle-<case>`."""
    keys = {scenario.key for suite in SUITES.values() for scenario in suite.scenarios}
    for suite in SUITES.values():
        if suite.idle is not None:
            keys.add(IDLE_KEY)
            keys.update(f"{IDLE_KEY}-{case.key}" for case in suite.idle.cases)
    return sorted(keys)


def select(suite: Suite, keys: list[str] | None) -> Suite | None:
    """`suite` with only the scenarios and idle cases named in `keys` (None: all of it); None when it
    has none of them."""
    if not keys:
        return suite
    scenarios = tuple(s for s in suite.scenarios if s.key in keys)
    idle = suite.idle
    if idle is not None:
        cases = tuple(c for c in idle.cases if IDLE_KEY in keys or f"{IDLE_KEY}-{c.key}" in keys)
        idle = replace(idle, cases=cases) if cases else None
    if not scenarios and idle is None:
        return None
    return replace(suite, scenarios=scenarios, idle=idle)
