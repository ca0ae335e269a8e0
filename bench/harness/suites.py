"""What is measured: suites (one per listener mode) of scenarios, each run against every target.

A new suite (e.g. Layer 7 with TLS on both sides) is one more entry in SUITES: its own setup that
starts the origin and the balancers, and its own scenarios with their targets.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
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
    target_ratio: float
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    title: str
    scenarios: tuple[Scenario, ...]
    setup: Callable[[Context, ExitStack], list[Target]]


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
            target_ratio=0.95,
        ),
        Scenario(
            key="transfer-1MiB",
            title="keep-alive, 1 MiB responses",
            path=LARGE_PATH,
            expected_size=LARGE_SIZE,
            connections=16,
            metric="mib_per_s",
            unit="MiB/s",
            target_ratio=0.90,
        ),
        Scenario(
            key="new-connections",
            title="new connection per request (Connection: close), 100 B",
            path=SMALL_PATH,
            expected_size=SMALL_SIZE,
            connections=50,
            metric="requests_per_s",
            unit="conn/s",
            target_ratio=0.50,
            headers=("Connection: close",),
        ),
    ),
    setup=_setup_l4,
)

SUITES: dict[str, Suite] = {suite.name: suite for suite in (L4,)}
