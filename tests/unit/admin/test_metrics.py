"""The Prometheus collector reads the snapshot at scrape time and leaves the global registry alone."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from casarray.admin.metrics import registry_for, render_metrics
from tests.unit.admin.conftest import FakeControl


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    all_samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return all_samples[(name, tuple(sorted(labels.items())))]


def test_exposition_parses_and_matches_the_snapshot() -> None:
    control = FakeControl()
    control.health[("MB2", "ews")] = "down"
    control.member_operator[("MB1", "owa")] = "drain"
    control.operator["MB2"] = "maint"
    text = render_metrics(registry_for(control)).decode()
    got = samples(text)
    assert value(got, "casarray_member_up", server="MB1", service="ews") == 1
    assert value(got, "casarray_member_up", server="MB2", service="ews") == 0
    # the operator state that applies: the member's own drain, the server's maint over a ready member
    assert value(got, "casarray_member_operator_state", server="MB1", service="owa", state="drain") == 1
    assert value(got, "casarray_member_operator_state", server="MB1", service="owa", state="ready") == 0
    assert value(got, "casarray_member_operator_state", server="MB2", service="owa", state="maint") == 1
    assert value(got, "casarray_server_operator_state", server="MB2", state="maint") == 1
    assert value(got, "casarray_server_connections", server="MB1") == 2
    assert value(got, "casarray_server_connections_total", server="MB1") == 10
    assert value(got, "casarray_server_bytes_in_total", server="MB2") == 2000
    assert value(got, "casarray_server_bytes_out_total", server="MB2") == 10000
    assert value(got, "casarray_server_connect_errors_total", server="MB2") == 1
    assert value(got, "casarray_requests_total", service="ews", code_class="2xx") == 7
    assert value(got, "casarray_requests_total", service="ews", code_class="5xx") == 1
    assert value(got, "casarray_check_last_duration_seconds", server="MB1", service="owa") == 0.0125
    assert value(got, "casarray_queue_length") == 0
    assert value(got, "casarray_client_connections") == 2
    assert value(got, "casarray_client_connections_total") == 14
    assert value(got, "casarray_refused_total") == 1
    assert value(got, "casarray_tls_handshake_failures_total") == 3
    assert value(got, "casarray_upstream_releases_total") == 4
    assert value(got, "casarray_reloads_total") == 0
    assert value(got, "casarray_info", mode="l7", namespace="outlook.alwayshotcafe.com") == 1
    assert "# TYPE casarray_server_connections gauge" in text
    assert "# TYPE casarray_server_connections_total counter" in text


def test_values_are_read_at_each_scrape() -> None:
    control = FakeControl()
    registry = registry_for(control)
    before = samples(render_metrics(registry).decode())
    control.total["MB1"] += 5
    control.requests["ews"]["2xx"] += 3
    control.reloads += 1
    after = samples(render_metrics(registry).decode())
    assert value(after, "casarray_server_connections_total", server="MB1") == (
        value(before, "casarray_server_connections_total", server="MB1") + 5
    )
    assert value(after, "casarray_requests_total", service="ews", code_class="2xx") == 10
    assert value(after, "casarray_reloads_total") == 1


def test_the_global_registry_is_untouched() -> None:
    names_before = set(REGISTRY._names_to_collectors)
    registry_for(FakeControl())
    registry_for(FakeControl())  # a second balancer in the same process: no DuplicateTimeseries
    assert set(REGISTRY._names_to_collectors) == names_before
    assert not any(name.startswith("casarray_") for name in REGISTRY._names_to_collectors)


def test_registering_takes_no_snapshot() -> None:
    class Counting(FakeControl):
        taken = 0

        def snapshot(self):  # type: ignore[no-untyped-def]
            Counting.taken += 1
            return super().snapshot()

    registry = registry_for(Counting())
    assert Counting.taken == 0
    render_metrics(registry)
    assert Counting.taken == 1


def test_check_duration_histogram_is_exported() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from casarray.admin.metrics import families
    from casarray.engine.control import MemberView, ServerView, Snapshot

    member = MemberView(
        "MB1",
        "owa",
        "up",
        "L7OK",
        "200 OK",
        12.0,
        0.0,
        "ready",
        True,
        0,
        (1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 1),
        9.5,
    )
    snap = Snapshot(
        "l7",
        "outlook.alwayshotcafe.com",
        ("owa",),
        (ServerView("MB1", "10.0.1.11", 443, "ready", 0, 0, 0, 0, 0, 0, {"owa": member}),),
        0,
        0,
        0,
    )
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return families(snap)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    text = generate_latest(registry).decode()
    samples = {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("casarray_check_duration_seconds")
    }
    assert samples[("casarray_check_duration_seconds_bucket", "0.005")] == 1
    assert samples[("casarray_check_duration_seconds_bucket", "0.025")] == 6
    assert samples[("casarray_check_duration_seconds_bucket", "+Inf")] == 7
    assert samples[("casarray_check_duration_seconds_count", None)] == 7
    assert samples[("casarray_check_duration_seconds_sum", None)] == 9.5
