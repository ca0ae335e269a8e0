"""The namespace harness itself: segments, a router between two of them, processes with logs, an
Exchange array behind one casarray node, and a teardown that leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from casarray.lab.pki import CertFiles
from tests.ha.cluster import Array
from tests.ha.netns import Namespace, Topology, run_ip, unavailable_reason

pytestmark = pytest.mark.netns


def _namespaces() -> set[str]:
    return {line.split()[0] for line in run_ip("netns", "list").stdout.splitlines() if line.strip()}


def test_hosts_on_a_segment_and_a_router_between_two(topology: Topology) -> None:
    lan = topology.segment("lan", "10.77.0.0/24")
    wan = topology.segment("wan", "10.77.1.0/24")
    a, a_if = topology.host("a", lan)
    b, b_if = topology.host("b", lan)
    assert (a_if.address, b_if.address) == ("10.77.0.11", "10.77.0.12")
    router = topology.router("r", lan, wan)
    far, far_if = topology.host("far", wan, host=50)
    a.route("10.77.1.0/24", "10.77.0.1")
    far.route("default", "10.77.1.1")
    assert router.addresses() >= {"10.77.0.1", "10.77.1.1"}

    server = b.start("listener", "nc", "-lk", b_if.address, "5000")
    far_server = far.start("listener", "nc", "-lk", far_if.address, "5001")
    _connects(a, b_if.address, 5000)
    _connects(a, far_if.address, 5001)  # through the router
    # b was given no route beyond its segment; the root namespace never sees these addresses.
    assert b.run("nc", "-z", "-w", "1", far_if.address, "5001", check=False).returncode != 0
    assert "10.77.0.11" not in run_ip("-j", "address", "show").stdout
    assert far_server.popen.poll() is None
    assert server.popen.poll() is None
    assert server.log_path == topology.directory / "b.listener.log"


def _connects(ns: Namespace, address: str, port: int) -> None:
    """A TCP connect from `ns` succeeds within about ten seconds (the listener may still be starting)."""
    ns.run(
        "sh", "-c", f"for i in $(seq 100); do nc -z -w 1 {address} {port} && exit 0; sleep 0.1; done; exit 1"
    )


def test_close_removes_every_namespace_and_process(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces are not available: {reason}")
    with Topology(tmp_path) as topo:
        lan = topo.segment("lan")
        ns, _ = topo.host("h", lan)
        sleeper = ns.start("sleep", "sleep", "600")
        # A process the harness did not start itself (a daemon's child) is killed too.
        ns.run("sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
        names = {n.name for n in topo.namespaces}
        assert names <= _namespaces()
    assert not names & _namespaces()
    assert sleeper.popen.poll() is not None


def test_an_array_behind_one_node(topology: Topology, ha_pki: CertFiles) -> None:
    lan = topology.segment("lan", "10.77.0.0/24")
    array = Array(topology, lan, ha_pki)
    array.sims(3)
    node = array.node("node1", host=11)
    # A VIP the node holds itself (no keepalived here): the node adds it like keepalived would.
    run_ip("-n", node.namespace.name, "address", "add", "10.77.0.100/32", "dev", "eth0")
    node.start_casarray(array.config("10.77.0.100"))
    client = array.client("client", "10.77.0.100", count=30, interval=0.02)
    client.wait_successes(6)
    answered = {r["server"] for r in client.results() if r["ok"]}
    assert answered <= {"MB1", "MB2", "MB3"}
    assert len(answered) >= 2, answered
