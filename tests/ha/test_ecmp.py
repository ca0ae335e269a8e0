"""Active/active by BGP ECMP (docs/high-availability.md), in network namespaces.

    client 10.77.1.50 ── wan ── router (BIRD: BGP from the nodes, merge paths, L4 hash) ── lan ──┬─ node1 10.77.0.11
                                                                                                  ├─ node2 10.77.0.12
                                                                                                  └─ MB1..MB3 .21-.23

Each node holds the VIP on lo, runs casarray with the same config, BIRD with the same file from
`casarray export bird`, and `casarray announce`. The router installs one route to the VIP with a next
hop per node that announces it. The client asks https://VIP in a bounded loop, a new connection per
request; which node served a request is read from each node's access log.

The figures (requests failed, time until every request succeeds again) are printed; run with -s to see
them. docs/high-availability.md records them.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest

from casarray.lab.pki import CertFiles
from tests.ha.bird import Bird, kernel_next_hops, router_config
from tests.ha.bird import unavailable_reason as bird_missing
from tests.ha.cluster import Array, Client, Node, casarray_args
from tests.ha.netns import Namespace, Segment, Topology
from tests.support import Proc, wait_until

pytestmark = pytest.mark.netns

VIP = "10.77.9.1"
VIPS = "10.77.9.0/24"  # what the router accepts from the nodes: host routes in here
LAN = "10.77.0.0/24"
WAN = "10.77.1.0/24"
ROUTER = "10.77.0.1"
ROUTER_ASN = 65000
NODE_ASN = 65001
CONVERGE = 30.0  # seconds a route change may take on a loaded machine (expected: about 1 to 3)


@pytest.fixture(autouse=True)
def _bird_installed() -> None:
    reason = bird_missing()
    if reason is not None:
        pytest.skip(reason)


def bfd_up(bird: Bird, address: str) -> bool:
    """Whether `bird`'s BFD session with `address` is Up (`birdc show bfd sessions`: one line per
    session, the address first, its state among the columns)."""
    listing = bird.birdc("show", "bfd", "sessions", check=False).stdout
    return any(line.split()[:1] == [address] and "Up" in line.split() for line in listing.splitlines())


@dataclass
class EcmpNode:
    node: Node
    bird: Bird
    announce: Proc | None = None

    @property
    def address(self) -> str:
        return self.node.interface.address

    def start_announce(self) -> Proc:
        assert self.node.config is not None
        self.announce = self.node.namespace.start(
            "announce",
            *casarray_args(
                "announce", "-c", str(self.node.config), "--socket", str(self.bird.socket), "--interval", "1s"
            ),
        )
        return self.announce

    def served(self) -> int:
        """Requests this node's casarray (every run of it) logged."""
        directory = self.node.array.topology.directory
        return sum(
            log.read_text(errors="replace").count('"kind":"l7"')
            for log in directory.glob(f"{self.node.label}.casarray*.log")
        )


@dataclass
class Ecmp:
    topology: Topology
    array: Array
    router: Namespace
    router_bird: Bird
    nodes: list[EcmpNode]
    client_ns: Namespace

    def next_hops(self) -> set[str]:
        """The router's kernel route to the VIP: the nodes it sends clients to."""
        return kernel_next_hops(self.router, VIP)

    def wait_next_hops(self, *nodes: EcmpNode) -> float:
        """Wait until the router forwards the VIP to exactly `nodes`; the seconds it took."""
        want = {n.address for n in nodes}
        started = time.monotonic()
        wait_until(lambda: self.next_hops() == want, CONVERGE, 0.02, f"the router's next hops {sorted(want)}")
        # BIRD's own table says the same (the routes it holds from the nodes).
        assert self.router_bird.next_hops(f"{VIP}/32") == want
        return time.monotonic() - started

    def client(self, label: str, count: int = 600, duration: float = 40.0) -> Client:
        return self.array.client(
            label, VIP, namespace=self.client_ns, count=count, duration=duration, interval=0.02
        )


def build(
    topology: Topology, pki: CertFiles, *, bfd: tuple[bool, bool] = (False, False), servers: int = 3
) -> Ecmp:
    """The topology above; `bfd`: which node's bird.conf is exported with --bfd (the router runs BFD
    for the nodes that ask)."""
    lan: Segment = topology.segment("lan", LAN)
    wan = topology.segment("wan", WAN)
    router = topology.router("r", lan, wan)
    # L4 hashing: flows from one client address to the VIP spread by their ports (default: addresses only).
    router.sysctl("net.ipv4.fib_multipath_hash_policy", 1)
    router_bird = Bird.start(
        router, "bird", router_config(ROUTER, ROUTER_ASN, LAN, NODE_ASN, VIPS, bfd=any(bfd))
    )
    array = Array(topology, lan, pki)
    array.sims(servers)
    config = array.config(VIP, extra="log: {access: true, format: json}\n")
    nodes = []
    exported: dict[bool, str] = {}
    for number, node_bfd in enumerate(bfd, 1):
        node = array.node(f"node{number}", host=10 + number)
        node.namespace.run("ip", "address", "add", f"{VIP}/32", "dev", "lo")
        node.namespace.route("default", ROUTER)
        node.start_casarray(config)
        assert node.config is not None
        if node_bfd not in exported:
            # One file for every node (BIRD takes each node's own address as its router id; the VIP is
            # on lo, never chosen).
            exported[node_bfd] = subprocess.run(
                casarray_args(
                    "export", "bird", "-c", str(node.config), "--router", ROUTER, "--asn", str(ROUTER_ASN),
                    "--local-asn", str(NODE_ASN), *(["--bfd"] if node_bfd else []),
                ),
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
        ecmp_node = EcmpNode(node, Bird.start(node.namespace, "bird", exported[node_bfd]))
        ecmp_node.start_announce()
        nodes.append(ecmp_node)
    client_ns, _ = topology.host("client", wan, host=50)
    client_ns.route("default", "10.77.1.1")
    wait_until(lambda: len(router_bird.established()) == 2, CONVERGE, 0.05, "both BGP sessions established")
    return Ecmp(topology, array, router, router_bird, nodes, client_ns)


def outage(results: list[dict[str, Any]], since: float) -> tuple[int, float]:
    """(requests that failed, seconds from `since` until the end of the first request of the run of
    successes that follows the last failure) over the requests still running at `since` or later."""
    after = [r for r in results if r["t"] + r["ms"] / 1000 >= since]
    failed = [r for r in after if not r["ok"]]
    if not failed:
        return 0, 0.0
    last = max(r["t"] for r in failed)
    back = min(r["t"] + r["ms"] / 1000 for r in after if r["ok"] and r["t"] > last)
    return len(failed), back - since


def test_clients_spread_over_both_nodes_and_a_failed_node_is_withdrawn(
    topology: Topology, ha_pki: CertFiles
) -> None:
    ecmp = build(topology, ha_pki)
    one, two = ecmp.nodes
    for node in ecmp.nodes:
        assert node.announce is not None
        node.announce.wait_log(f"announcing {VIP}/32: casarray is healthy", timeout=CONVERGE)
    ecmp.wait_next_hops(one, two)

    # Both nodes serve: the router hashes each connection (ports included) to one of them.
    client = ecmp.client("spread", count=60)
    wait_until(client.finished, 60.0, 0.1, "60 requests")
    results = client.results()
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]
    wait_until(lambda: one.served() + two.served() >= len(results), 10.0, 0.1, "the access logs flushed")
    spread = (one.served(), two.served())
    print(f"\nspread of {len(results)} requests over node1, node2: {spread}")
    assert min(spread) >= 6, spread  # binomial(60, 1/2): below 6 once in 10^11 runs

    # casarray dies on node1: its announce withdraws the VIP, the router keeps only node2.
    client = ecmp.client("kill-casarray")
    client.wait_successes(20)
    killed = time.time()
    one.node.kill_casarray()
    assert one.announce is not None
    one.announce.wait_log(f"withdrawing {VIP}/32: casarray is not healthy", timeout=CONVERGE)
    withdrawn = ecmp.wait_next_hops(two)
    client.wait_successes(30, after=time.time())
    client.proc.stop()
    failed, back = outage(client.results(), killed)
    print(
        f"casarray killed on node1: {failed} requests failed, every request succeeds again after {back:.2f} s"
    )
    assert back < CONVERGE
    assert withdrawn < CONVERGE
    # Only requests sent to node1 failed: its kernel refused them (nothing listens there now), or reset
    # one it held when casarray died. None waited for a timeout, none went wrong on node2.
    errors = {r["error"].split(":")[0] for r in client.results() if not r["ok"]}
    assert errors <= {"ConnectionRefusedError", "ConnectionResetError"}, errors

    # It comes back: announced again after `rise` checks, both nodes serve again.
    one.node.restart_casarray()
    one.announce.wait_log(f"announcing {VIP}/32: casarray is healthy", timeout=CONVERGE, count=2)
    ecmp.wait_next_hops(one, two)
    before = one.served()
    client = ecmp.client("back", count=20)
    wait_until(client.finished, 60.0, 0.1, "20 requests")
    assert all(r["ok"] for r in client.results())
    wait_until(lambda: one.served() > before, 10.0, 0.1, "node1 serving again")

    # node2's BIRD dies: its BGP session closes, the router drops node2's route at once.
    client = ecmp.client("kill-bird")
    client.wait_successes(20)
    killed = time.time()
    two.bird.stop()
    withdrawn = ecmp.wait_next_hops(one)
    client.wait_successes(30, after=time.time())
    client.proc.stop()
    failed, back = outage(client.results(), killed)
    print(f"BIRD killed on node2: {failed} requests failed, every request succeeds again after {back:.2f} s")
    assert back < CONVERGE


def test_a_node_that_falls_silent_is_withdrawn_by_bfd_or_the_hold_timer(
    topology: Topology, ha_pki: CertFiles
) -> None:
    """A node cut off the network closes nothing: the router notices by BFD (node2, exported with --bfd:
    300 ms) or by the BGP hold timer (node1, without: 3 s), and sends every client to the other node."""
    ecmp = build(topology, ha_pki, bfd=(False, True), servers=1)
    one, two = ecmp.nodes
    ecmp.wait_next_hops(one, two)
    for cut_node, other, how, reason in ((two, one, "BFD", "BFD session down"), (one, two, "hold timer", "Hold timer expired")):  # fmt: skip
        client = ecmp.client(f"cut-{cut_node.node.label}")
        client.wait_successes(20)
        if cut_node is two:
            # BFD comes up after BGP (and after the routes): cut before it is Up, and the hold timer
            # withdraws the node instead, which is not what this half tests.
            wait_until(
                lambda: bfd_up(ecmp.router_bird, two.address),
                CONVERGE,
                0.05,
                f"the router's BFD session with {two.address} Up",
            )
        cut = time.time()
        cut_node.node.namespace.run("ip", "link", "set", "eth0", "down")  # the router's side stays up
        withdrawn = ecmp.wait_next_hops(other)
        client.wait_successes(30, after=time.time())
        client.proc.stop()
        failed, back = outage(client.results(), cut)
        print(f"\n{cut_node.node.label} cut off ({how}): withdrawn after {withdrawn:.2f} s, {failed} requests "
              f"failed, every request succeeds again after {back:.2f} s")  # fmt: skip
        assert back < CONVERGE
        ecmp.router_bird.proc.wait_log(reason, timeout=CONVERGE)
        assert json.loads(ecmp.router.run("ip", "-j", "link", "show", "eth0").stdout)[0]["operstate"] == "UP"
        if cut_node is two:  # back on the network: its session comes up again and it is announced
            two.node.namespace.run("ip", "link", "set", "eth0", "up")
            two.node.namespace.route("default", ROUTER)
            ecmp.wait_next_hops(one, two)
