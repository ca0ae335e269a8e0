"""Prometheus exposition: one Collector that reads the Control's Snapshot at scrape time.

Nothing is counted twice: the engine keeps its counters, this module only translates one snapshot into
metric families, so a scrape costs one snapshot and nothing runs between scrapes. Each admin server has
its own CollectorRegistry — the process-wide default registry (and its process/GC collectors) is never
touched, so tests and several balancers in one process do not see each other.

Names follow HAProxy's exporter where one exists (scur -> connections, stot -> connections_total,
bin/bout, econ -> connect_errors); counters end in _total.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from casarray.admin.views import OPERATOR_STATES, effective_operator
from casarray.engine.control import Control, Snapshot
from casarray.health.state import CHECK_BUCKETS

__all__ = ["CONTENT_TYPE", "SnapshotCollector", "render_metrics"]

# Text format 0.0.4 only: OpenMetrics would reserve casarray_server_connections_total for a counter
# named casarray_server_connections, which here is the gauge of open connections (as HAProxy names them).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    def __init__(self, control: Control) -> None:
        self.control = control

    def collect(self) -> Iterable[Metric]:
        return families(self.control.snapshot())


def families(snap: Snapshot) -> list[Metric]:
    """Every metric family of one snapshot."""
    up = GaugeMetricFamily(
        "casarray_member_up", "1 when the member's last health verdict is up.", labels=["server", "service"]
    )
    available = GaugeMetricFamily(
        "casarray_member_available",
        "1 when the member takes new traffic (up, and it and its server are ready).",
        labels=["server", "service"],
    )
    member_operator = GaugeMetricFamily(
        "casarray_member_operator_state",
        "Operator state that applies to the member (its own or its server's, the stronger): "
        "1 for the current one.",
        labels=["server", "service", "state"],
    )
    check = GaugeMetricFamily(
        "casarray_check_last_duration_seconds",
        "Duration of the member's last health check.",
        labels=["server", "service"],
    )
    check_histogram = HistogramMetricFamily(
        "casarray_check_duration_seconds",
        "Durations of the member's health checks.",
        labels=["server", "service"],
    )
    member_requests = CounterMetricFamily(
        "casarray_member_requests",
        "Requests sent to the member (l7; always 0 in l4).",
        labels=["server", "service"],
    )
    server_operator = GaugeMetricFamily(
        "casarray_server_operator_state",
        "Operator state set on the whole server: 1 for the current one.",
        labels=["server", "state"],
    )
    current = GaugeMetricFamily(
        "casarray_server_connections", "Open connections to the server (scur).", labels=["server"]
    )
    peak = GaugeMetricFamily(
        "casarray_server_connections_max", "Most connections open at once (smax).", labels=["server"]
    )
    total = CounterMetricFamily(
        "casarray_server_connections", "Connections made to the server (stot).", labels=["server"]
    )
    bytes_in = CounterMetricFamily(
        "casarray_server_bytes_in",
        "Bytes relayed from clients to the server (bin), counted when a connection closes.",
        labels=["server"],
    )
    bytes_out = CounterMetricFamily(
        "casarray_server_bytes_out",
        "Bytes relayed from the server to clients (bout), counted when a connection closes.",
        labels=["server"],
    )
    errors = CounterMetricFamily(
        "casarray_server_connect_errors", "Failed connects to the server (econ).", labels=["server"]
    )
    for server in snap.servers:
        for state in OPERATOR_STATES:
            server_operator.add_metric([server.name, state], 1.0 if server.operator == state else 0.0)
        current.add_metric([server.name], server.active)
        peak.add_metric([server.name], server.peak)
        total.add_metric([server.name], server.total)
        bytes_in.add_metric([server.name], server.bytes_in)
        bytes_out.add_metric([server.name], server.bytes_out)
        errors.add_metric([server.name], server.connect_errors)
        for member in server.members.values():
            labels = [server.name, member.service]
            up.add_metric(labels, 1.0 if member.health == "up" else 0.0)
            available.add_metric(labels, 1.0 if member.available else 0.0)
            applied = effective_operator(server.operator, member.operator)
            for state in OPERATOR_STATES:
                member_operator.add_metric([*labels, state], 1.0 if applied == state else 0.0)
            check.add_metric(labels, member.check_ms / 1000)
            if member.check_buckets:
                cumulative = 0
                buckets: list[tuple[str, float]] = []
                for bound, count in zip(
                    (*map(str, CHECK_BUCKETS), "+Inf"), member.check_buckets, strict=True
                ):
                    cumulative += count
                    buckets.append((bound, cumulative))
                check_histogram.add_metric(labels, buckets, member.check_sum)
            member_requests.add_metric(labels, member.requests)
    requests = CounterMetricFamily(
        "casarray_requests",
        "L7 requests answered, by service and status class (1xx..5xx).",
        labels=["service", "code_class"],
    )
    for service, classes in sorted(snap.requests.items()):
        for code_class, count in sorted(classes.items()):
            requests.add_metric([service, code_class], count)
    scalar: list[Metric] = [
        GaugeMetricFamily("casarray_queue_length", "Clients waiting for a connection slot (l4).", snap.queue),
        GaugeMetricFamily("casarray_client_connections", "Open client connections.", snap.clients),
        CounterMetricFamily(
            "casarray_client_connections", "Client connections accepted.", snap.clients_total
        ),
        CounterMetricFamily(
            "casarray_refused", "Connections or requests answered or closed by the balancer.", snap.refused
        ),
        CounterMetricFamily(
            "casarray_tls_handshake_failures",
            "Client TLS handshakes that failed.",
            snap.tls_handshake_failures,
        ),
        CounterMetricFamily(
            "casarray_upstream_releases",
            "l7: idle upstream connections closed after timeouts.upstream_release "
            "(never one that carried NTLM/Negotiate).",
            snap.upstream_releases,
        ),
        CounterMetricFamily("casarray_reloads", "Configuration reloads that took effect.", snap.reloads),
        GaugeMetricFamily("casarray_workers", "Worker processes serving traffic.", snap.workers),
        GaugeMetricFamily(
            "casarray_start_time_seconds", "When the balancer started (epoch seconds).", snap.started
        ),
    ]
    info = GaugeMetricFamily(
        "casarray_info", "Mode and namespace of the running config (always 1).", labels=["mode", "namespace"]
    )
    info.add_metric([snap.mode, snap.namespace], 1.0)
    return [
        info,
        up,
        available,
        member_operator,
        check,
        check_histogram,
        member_requests,
        server_operator,
        current,
        peak,
        total,
        bytes_in,
        bytes_out,
        errors,
        requests,
        *scalar,
    ]


def registry_for(control: Control) -> CollectorRegistry:
    # auto_describe=False: registering must not call collect() (no snapshot before the first scrape).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(control))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
