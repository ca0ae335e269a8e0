"""Active/passive with keepalived (VRRP), in network namespaces: three simulated Exchange servers, two
casarray nodes running the same config, keepalived on each with the file `casarray export keepalived`
wrote, and a client asking https://VIP in a bounded loop.

Killing casarray on the master moves the VIP (and the mail listener with it) to the backup; the time to
the first successful request and the requests that failed are measured and printed. Restarting casarray
on the old master then moves nothing (`--nopreempt`), or moves the VIP back once after the delay
(`--preempt-delay`). Each transition leaves one notify line, the same sequence keepalived logs itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from casarray.lab.pki import CertFiles
from tests.ha.cluster import Array, Client, Node, casarray_args
from tests.ha.netns import Topology
from tests.support import Proc, wait_until

pytestmark = pytest.mark.netns

VIP = "10.77.0.100"
IMAP_PORT = 143
PREEMPT_DELAY = 2.0
STEADY = 4.0  # seconds the VIP must stay put to count as not flapping (four VRRP adverts, four checks)
MOVE_TIMEOUT = 30.0  # bound of a move; expected: about 2 s (two failed checks, then the backup's takeover)
# The casarray command keepalived runs: the console script next to this interpreter (keepalived passes its
# environment on, so a PYTHONPATH pointing at the sources under test reaches the check too).
CASARRAY = Path(sys.executable).parent / "casarray"
ENTERED = re.compile(r"\(casarray_vip\) Entering (\w+) STATE")
NOTIFIED = re.compile(
    r"casarray-vrrp: casarray_vip entered (\w+) state \(priority \d+; VIP 10\.77\.0\.100\)$"
)


@dataclass
class Vrrp:
    """keepalived on one node, with the config casarray exported for it."""

    node: Node
    conf: Path
    notify_log: Path
    proc: Proc

    def notified(self) -> list[str]:
        """The states the notify lines report, in order (every line must be one)."""
        if not self.notify_log.exists():
            return []
        states = []
        for line in self.notify_log.read_text().splitlines():
            match = NOTIFIED.search(line)
            assert match, f"not a notify line: {line!r}"
            states.append(match.group(1))
        return states

    def entered(self) -> list[str]:
        """The states keepalived's own log says the instance entered, in order."""
        return ENTERED.findall(self.proc.log)


def start_keepalived(node: Node, state: str, *options: str) -> Vrrp:
    """Export keepalived.conf for `node` with the real CLI, check it, and run keepalived in the node."""
    directory = node.directory
    conf, notify_log = directory / "keepalived.conf", directory / "vrrp.log"
    assert node.config is not None
    export = subprocess.run(
        casarray_args(
            "export", "keepalived", "-c", str(node.config), "-o", str(conf), "--interface", "eth0",
            "--state", state, "--notify-log", str(notify_log), "--casarray", str(CASARRAY), *options,
        ),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    test = subprocess.run(
        ["keepalived", "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert test.returncode == 0, test.stderr
    # Pid files of its own per node: the namespaces share one file system.
    proc = node.namespace.start(
        "keepalived",
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
        "--use-file", str(conf), "--pid", str(directory / "keepalived.pid"),
        "--vrrp_pid", str(directory / "vrrp.pid"), "--checkers_pid", str(directory / "checkers.pid"),
    )  # fmt: skip
    return Vrrp(node, conf, notify_log, proc)


def holder(nodes: list[Node]) -> list[str]:
    return [node.label for node in nodes if node.holds(VIP)]


def wait_holder(nodes: list[Node], label: str, what: str) -> float:
    """Wait until only `label` holds the VIP; when that was seen (epoch seconds)."""
    wait_until(lambda: holder(nodes) == [label], MOVE_TIMEOUT, 0.05, what)
    return time.time()


def hold_steady(nodes: list[Node], label: str) -> None:
    """The VIP stays on `label`, and only there, for STEADY seconds."""
    until = time.monotonic() + STEADY
    while time.monotonic() < until:
        assert holder(nodes) == [label], f"the VIP moved: {holder(nodes)} hold it"
        time.sleep(0.1)


def outage(client: Client, since: float) -> dict[str, Any]:
    """From `since`: seconds to the end of the first successful request started after it, and the
    requests that failed before that one (those in flight at `since` included)."""
    results = client.results()
    first = next(r for r in results if r["ok"] and r["t"] >= since)
    failed = [r for r in results if not r["ok"] and r["t"] + r["ms"] / 1000 >= since and r["t"] < first["t"]]
    return {
        "back_after": round(first["t"] + first["ms"] / 1000 - since, 2),
        "failed": len(failed),
        "errors": sorted({r.get("error", "").split(":")[0] for r in failed}),
    }


def imap_greeting(client: Client) -> str:
    code = (
        "import socket\n"
        f"with socket.create_connection(({VIP!r}, {IMAP_PORT}), timeout=10) as s:\n"
        "    print(s.recv(200).decode(errors='replace').strip())\n"
    )
    return client.namespace.run(sys.executable, "-c", code).stdout.strip()


def build(
    topology: Topology, pki: CertFiles, *options: str, unicast: bool
) -> tuple[Array, list[Vrrp], Client]:
    """Three sims, two nodes with the same config, keepalived on each (node1 MASTER), a client running."""
    if shutil.which("keepalived") is None:
        pytest.fail("keepalived is not installed (make system-deps installs the Debian package)")
    if not CASARRAY.is_file():
        pytest.fail(
            f"{CASARRAY} is missing: the casarray console script must be installed in this environment"
        )
    lan = topology.segment("lan", "10.77.0.0/24")
    array = Array(topology, lan, pki)
    array.sims(3, "--imap", str(IMAP_PORT))
    config = array.config(VIP, extra=f"mail: {{imap: {{ports: [{IMAP_PORT}]}}}}\n")
    nodes = [array.node("node1", host=11), array.node("node2", host=12)]
    for node in nodes:
        node.start_casarray(config, wait=False)
    for node in nodes:
        node.wait_casarray()
    assert nodes[0].config is not None
    assert nodes[1].config is not None
    assert nodes[0].config.read_bytes() == nodes[1].config.read_bytes()  # the same config on both
    peers = {
        node.label: [] if not unicast else ["--peer", other.interface.address]
        for node, other in zip(nodes, nodes[::-1], strict=True)
    }
    vrrps = [
        start_keepalived(nodes[0], "MASTER", *options, *peers["node1"]),
        start_keepalived(nodes[1], "BACKUP", *options, *peers["node2"]),
    ]
    wait_holder(nodes, "node1", "node1 (MASTER, priority 150) to take the VIP")
    # A 2 s bound per request: a connect whose SYN was lost in the switch retries it after 1 s (RFC 6298
    # §2.1: the first retransmission), as any real client would; a shorter bound would count it as lost.
    client = array.client("client", VIP, count=3000, duration=120.0, interval=0.05, timeout=2.0)
    client.wait_successes(10)
    return array, vrrps, client


def fail_over(array: Array, client: Client) -> dict[str, Any]:
    """Kill casarray on node1 (the master): the VIP moves to node2 and clients are served again."""
    node1, node2 = array.nodes
    # The backup's own check: casarray answers, the VIP it listens on is elsewhere (not probed).
    backup = node2.namespace.run(
        str(CASARRAY), "ctl", "health", "--admin", "http://127.0.0.1:9090", "--exit-code"
    )
    assert "not probed (the address is not held by this host" in backup.stdout
    killed = time.time()
    node1.kill_casarray()
    moved = wait_holder(array.nodes, "node2", "the VIP to move to node2")
    client.wait_successes(5, after=killed)
    figures = {"vip_moved_after": round(moved - killed, 2), **outage(client, killed)}
    served = {r["server"] for r in client.results() if r["ok"] and r["t"] >= killed}
    assert served <= {"MB1", "MB2", "MB3"}
    assert imap_greeting(client).startswith("* OK")  # the mail listener moved with the VIP
    return figures


def test_vrrp_failover_with_nopreempt_moves_the_vip_once(topology: Topology, ha_pki: CertFiles) -> None:
    array, (vrrp1, vrrp2), client = build(topology, ha_pki, "--nopreempt", unicast=False)
    node1 = array.nodes[0]
    figures = fail_over(array, client)
    print(f"\nVRRP failover (nopreempt, multicast): {figures}")
    assert figures["back_after"] < MOVE_TIMEOUT
    # casarray back on node1: its check passes, keepalived leaves FAULT for BACKUP, the VIP stays put.
    restarted = time.time()
    node1.restart_casarray()
    wait_until(lambda: vrrp1.notified()[-1:] == ["BACKUP"], MOVE_TIMEOUT, 0.05, "node1 back in BACKUP")
    hold_steady(array.nodes, "node2")
    assert not [r for r in client.results() if r["t"] >= restarted and not r["ok"]]  # no flap, no loss
    assert vrrp1.notified() == vrrp1.entered() == ["BACKUP", "MASTER", "FAULT", "BACKUP"]
    assert vrrp2.notified() == vrrp2.entered() == ["BACKUP", "MASTER"]


def test_vrrp_failover_with_preempt_delay_moves_back_once(topology: Topology, ha_pki: CertFiles) -> None:
    delay = f"{PREEMPT_DELAY:g}s"
    array, (vrrp1, vrrp2), client = build(topology, ha_pki, "--preempt-delay", delay, unicast=True)
    node1 = array.nodes[0]
    figures = fail_over(array, client)
    # casarray back on node1: after the delay (no sooner) node1, priority 150, takes the VIP back, once.
    node1.restart_casarray()
    wait_until(lambda: vrrp1.notified()[-1:] == ["BACKUP"], MOVE_TIMEOUT, 0.05, "node1 back in BACKUP")
    backup_seen = time.time()
    assert holder(array.nodes) == ["node2"]
    back = wait_holder(array.nodes, "node1", "the VIP to move back to node1 after the preempt delay")
    assert back - backup_seen >= PREEMPT_DELAY / 2, "node1 took the VIP back before the preempt delay"
    hold_steady(array.nodes, "node1")
    # A planned move: node2 gives the VIP up as node1 takes it; what was in flight on node2 may fail.
    lost = [r for r in client.results() if r["t"] >= backup_seen and not r["ok"]]
    figures["moved_back_failed"] = len(lost)
    print(f"\nVRRP failover (preempt delay {delay}, unicast): {figures}")
    assert vrrp1.notified() == vrrp1.entered() == ["BACKUP", "MASTER", "FAULT", "BACKUP", "MASTER"]
    assert vrrp2.notified() == vrrp2.entered() == ["BACKUP", "MASTER", "BACKUP"]
