"""Operator states across nodes (`peers:`): two `casarray run` processes on loopback, each with its own
admin API, in front of the same simulated Exchange servers; real `ctl`, real HTTP between the nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from casarray.lab.pki import CertFiles
from tests.integration.conftest import L7Lab, in_loop
from tests.support import (
    NAMESPACE,
    LoopThread,
    Proc,
    casarray,
    free_port,
    https_request,
    logged_at,
    wait_until,
)

TOKEN = "peers-token-81d3"
# Each node answers the other's push before its own API call returns; "within a second" is the goal,
# the bound leaves room for a loaded CI machine.
BOUND = 5.0


@dataclass
class Node:
    name: str
    config: Path
    port: int  # the client listener
    admin_port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


class PeerLab(L7Lab):
    """Simulated servers on a loop thread and two nodes, A and B, that name each other in peers:."""

    def __init__(self, directory: Path, pki: CertFiles, loop: LoopThread) -> None:
        super().__init__(directory, pki, loop)
        self.token_file = directory / "admin.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.nodes = {
            name: Node(name, directory / f"node-{name}.yaml", free_port(), free_port()) for name in "AB"
        }

    def write(self, name: str, workers: int = 1, peers_extra: str = "", timeout: str = "2s") -> None:
        """The same config on both nodes but for the ports this node listens on (one machine)."""
        node = self.nodes[name]
        servers = "\n".join(
            f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}" for s in self.sims.values()
        )
        nodes = ", ".join(n.url for n in self.nodes.values())
        node.config.write_text(
            textwrap.dedent(f"""\
            namespace: {NAMESPACE}
            mode: l4
            listen: {{address: 127.0.0.1, https_port: {node.port}}}
            upstream_tls: {{ca: {self.pki.ca}}}
            health: {{interval: 200ms, timeout: 1s, rise: 1, fall: 1}}
            timeouts: {{grace: 1s}}
            workers: {workers}
            admin: {{listen: '127.0.0.1:{node.admin_port}', token_file: {self.token_file}}}
            peers: {{nodes: [{nodes}], timeout: {timeout}, sync_interval: 1s{peers_extra}}}
            servers:
            """)
            + servers
            + "\n"
        )

    def start(self, name: str) -> Proc:
        node = self.nodes[name]
        if not node.config.exists():
            self.write(name)
        node.proc = Proc(casarray("run", "-c", str(node.config)), self.dir / f"node-{name}-{time.time()}.log")
        self.procs.append(node.proc)
        node.proc.wait_log("admin API and dashboard on", timeout=60)  # B's workers start slowly when loaded
        return node.proc

    def stop(self, name: str) -> None:
        proc = self.nodes[name].proc
        assert proc is not None
        assert proc.stop() == 0, proc.log

    def log(self, name: str) -> str:
        proc = self.nodes[name].proc
        assert proc is not None
        return proc.log

    def post(self, name: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.nodes[name].url, timeout=30, trust_env=False) as client:
            return client.post(path, headers=headers, json=body)

    def operator(self, name: str, server: str, service: str | None = None) -> str:
        with httpx.Client(base_url=self.nodes[name].url, timeout=10, trust_env=False) as client:
            status = client.get("/api/status").json()
        view = next(s for s in status["servers"] if s["name"] == server)
        return str(view["members"][service]["operator"] if service else view["operator"])

    def ctl(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            casarray("ctl", "-c", str(self.nodes[name].config), *args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "200"},
        )

    def spread(self, name: str, n: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            response = https_request("127.0.0.1", self.nodes[name].port, "/owa/", self.pki.ca)
            assert response.status == 200, response
            counts[response.server] += 1
        return counts


@pytest.fixture
def lab(tmp_path: Path, pki: CertFiles) -> Iterator[PeerLab]:
    with in_loop(PeerLab, tmp_path, pki) as lab:
        lab.start_sims()
        yield lab


def in_force(lab: PeerLab, name: str, server: str, state: str, service: str | None = None) -> float:
    """Seconds until `server` (or its member) is in `state` on node `name` (polled every 10 ms)."""
    started = time.monotonic()
    wait_until(
        lambda: lab.operator(name, server, service) == state,
        BOUND,
        interval=0.01,
        what=f"{server} {state} on node {name}",
    )
    return time.monotonic() - started


@pytest.mark.slow
def test_a_change_on_one_node_is_in_force_on_the_other(lab: PeerLab) -> None:
    lab.write("B", workers=2)  # B under a supervisor: what it takes from A must reach its workers
    lab.start("A")
    lab.start("B")
    a, b = lab.nodes["A"], lab.nodes["B"]
    assert f"peers: this node is {a.url}; the others: {b.url} (synced every 1s)" in lab.log("A")

    timed = {
        "drain": timed_change(lab, "A", "B", "/api/servers/MB2/drain", ("MB2", None, "drain")),
        "ready": timed_change(lab, "B", "A", "/api/servers/MB2/ready", ("MB2", None, "ready")),
        "maint": timed_change(lab, "A", "B", "/api/servers/MB3/services/owa/maint", ("MB3", "owa", "maint")),
    }
    print("\nin force on the other node when the API answers (API answer, then one status read there):")
    for state, (answered, seen) in timed.items():
        print(f"  {state}: {answered:.3f}s, {seen:.3f}s")
    # From the logs: when the node where it was set applied it, then when the other node did.
    for state, at, other in (("drain", "A", "B"), ("ready", "B", "A"), ("maint", "A", "B")):
        change = f"-> {state} by test from 127.0.0.1: timed"
        made, taken = logged_at(lab.log(at), change), logged_at(lab.log(other), change + " (from peer")
        print(f"  {state}: applied on {other} {taken - made:.3f}s after {at}")
    assert max(answered + seen for answered, seen in timed.values()) < BOUND
    assert lab.operator("B", "MB3") == "ready"  # the member only
    # In force on B's data plane (its two workers), not only in its status. (In l4 a member's state
    # takes its whole server out: MB3's owa is made ready again first.)
    assert lab.post("B", "/api/servers/MB3/services/owa/ready").json()["peers"][0]["ok"]
    lab.post("A", "/api/servers/MB2/drain", {"reason": "CU14", "by": "alice"})
    wait_until(lambda: set(lab.spread("B", 6)) == {"MB1", "MB3"}, BOUND, what="B's workers avoiding MB2")
    log = lab.log("B")
    assert (
        f"operator: MB2 ready -> drain by alice from 127.0.0.1: CU14 (from peer {a.url} (127.0.0.1))" in log
    )
    assert f"peers: MB2 drain pushed: {b.url} took it" in lab.log("A")

    # ctl: one line per node; --json gives the API's answer.
    ready = lab.ctl("B", "ready", "MB2", "--reason", "CU14 done")
    assert ready.returncode == 0, ready.stderr
    lines = ready.stdout.splitlines()
    assert lines[0] == "MB2: ready (CU14 done)"
    assert lines[1].startswith(f"peer {a.url}: MB2: drain -> ready by ")
    assert lines[1].endswith("(ctl) from 127.0.0.1: CU14 done")
    assert len(lines) == 2
    assert lab.operator("A", "MB2") == "ready"
    assert set(lab.spread("A", 6)) == {"MB1", "MB2", "MB3"}
    drained = lab.ctl("A", "drain", "MB1", "--service", "ews", "--json")
    assert drained.returncode == 0, drained.stderr
    result = json.loads(drained.stdout)
    assert (result["server"], result["service"], result["state"]) == ("MB1", "ews", "drain")
    assert [(p["node"], p["ok"]) for p in result["peers"]] == [(b.url, True)]
    assert result["peers"][0]["outcome"].startswith("MB1/ews: ready -> drain by ")
    assert lab.operator("B", "MB1", "ews") == "drain"

    # Each node keeps what it took: B's state file holds A's settings with their versions.
    kept = json.loads(b.config.with_name(b.config.name + ".state.json").read_text())
    assert {(s["server"], s["service"], s["state"]) for s in kept["states"]} == {
        ("MB1", "ews", "drain"),
        ("MB2", None, "ready"),
        ("MB3", "owa", "ready"),
    }
    assert all(s["changed"] >= s["since"] > 0 for s in kept["states"])


def timed_change(
    lab: PeerLab, at: str, other: str, path: str, what: tuple[str, str | None, str]
) -> tuple[float, float]:
    """Make a change on node `at` through its API; (seconds until its answer, which comes after the
    other node's, then the seconds of one status call to the other node, which already shows it)."""
    server, service, state = what
    started = time.monotonic()
    answer = lab.post(at, path, {"reason": "timed", "by": "test"})
    answered = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    peers = answer.json()["peers"]
    assert [(p["node"], p["ok"]) for p in peers] == [(lab.nodes[other].url, True)], peers
    assert peers[0]["outcome"].endswith(f"-> {state} by test from 127.0.0.1: timed")
    # The other node took it before it answered, so before this answer: its very next status shows it.
    started = time.monotonic()
    assert lab.operator(other, server, service) == state
    return answered, time.monotonic() - started


@pytest.mark.slow
def test_a_node_that_starts_takes_the_newest_states_and_keeps_its_own(lab: PeerLab) -> None:
    a, b = lab.nodes["A"], lab.nodes["B"]
    lab.start("A")
    lab.start("B")
    assert lab.ctl("A", "maint", "MB3").returncode == 0
    in_force(lab, "B", "MB3", "maint")
    lab.stop("B")

    # B is down: A keeps what it is told and says that B did not take it.
    for args in (("ready", "MB3"), ("drain", "MB2", "--reason", "CU14")):
        down = lab.ctl("A", *args)
        assert down.returncode == 1
        assert down.stdout.splitlines()[1].startswith(f"peer {b.url}: not taken: does not answer (")
        assert down.stderr.splitlines() == [
            f"error: 1 of 1 peer(s) did not take it: {b.url} (it holds on this node and on the others; "
            "a peer that missed it takes it at its next sync)"
        ]
    assert (lab.operator("A", "MB3"), lab.operator("A", "MB2")) == ("ready", "drain")

    # B starts: it takes A's newer states before it accepts a connection.
    lab.start("B")
    log = lab.log("B")
    took = f"peers: {a.url} took 2 of its 2 state(s): MB2 drain, MB3 ready"
    assert took in log
    assert log.index(took) < log.index("listening on")
    assert (lab.operator("B", "MB3"), lab.operator("B", "MB2")) == ("ready", "drain")

    # A is down: B is changed alone, then restarts alone and keeps it.
    lab.stop("A")
    assert lab.ctl("B", "drain", "MB1", "--service", "ews").returncode == 1
    lab.stop("B")
    lab.start("B")
    assert f"peers: {a.url} does not answer (" in lab.log("B")
    assert "starting with this node's own states" in lab.log("B")
    assert lab.operator("B", "MB1", "ews") == "drain"
    assert lab.operator("B", "MB2") == "drain"

    # A starts: B's drain of MB1/ews is newer than anything A holds for it, A's other states are as new
    # as B's: newest wins, per server and member.
    lab.start("A")
    assert f"peers: {b.url} took 1 of its 3 state(s): MB1/ews drain" in lab.log("A")
    assert lab.operator("A", "MB1", "ews") == "drain"
    assert (lab.operator("A", "MB3"), lab.operator("A", "MB2")) == ("ready", "drain")

    # A restarts alone while B is down, then B starts: B gives A what B holds newer.
    lab.stop("A")
    lab.stop("B")
    lab.start("A")
    assert lab.ctl("A", "ready", "MB1", "--service", "ews").returncode == 1  # B is down
    lab.stop("A")
    # Now A holds MB1/ews ready, newer than B's drain; B starts while A is down, then A starts.
    lab.start("B")
    assert lab.operator("B", "MB1", "ews") == "drain"
    lab.start("A")
    log = lab.log("A")
    assert f"peers: {b.url} holds nothing newer than this node (3 state(s))" in log
    assert f"peers: gave {b.url} this node's newer MB1/ews ready: MB1/ews: drain -> ready by " in log
    assert lab.operator("B", "MB1", "ews") == "ready"


@pytest.mark.slow
def test_a_frozen_peer_misses_the_push_and_catches_up_at_its_next_sync(lab: PeerLab) -> None:
    b = lab.nodes["B"]
    lab.write("A", timeout="500ms")
    lab.start("A")
    lab.start("B")
    proc = b.proc
    assert proc is not None
    os.killpg(proc.popen.pid, signal.SIGSTOP)  # B does not answer, its connections stay open
    try:
        answer = lab.post("A", "/api/servers/MB2/drain")
        assert answer.json()["peers"] == [
            {"node": b.url, "ok": False, "outcome": "not taken: did not answer within 500ms (peers.timeout)"}
        ]
    finally:
        os.killpg(proc.popen.pid, signal.SIGCONT)
    assert "1 did not take it (it reaches them at their next sync with this node)" in lab.log("A")
    # Resumed, B takes the drain: from the push it had queued, or at its next sync with A.
    in_force(lab, "B", "MB2", "drain")


@pytest.mark.slow
def test_a_wrong_token_is_refused_and_said(lab: PeerLab) -> None:
    a, b = lab.nodes["A"], lab.nodes["B"]
    wrong = lab.dir / "wrong.token"
    wrong.write_text("not-the-token\n")
    wrong.chmod(0o600)
    lab.write("A", peers_extra=f", token_file: {wrong}")
    lab.start("B")
    lab.start("A")
    refused = "refused: 401 wrong token (see admin.token_file) (peers.token_file, else admin.token_file, must hold that node's admin token)"
    assert f"peers: {b.url} {refused}: starting with this node's own states" in lab.log("A")

    drained = lab.ctl("A", "drain", "MB2")
    assert drained.returncode == 1
    assert drained.stdout.splitlines() == ["MB2: drain", f"peer {b.url}: not taken: {refused}"]
    assert lab.operator("A", "MB2") == "drain"
    assert "admin: 401 for POST /api/peers/states from 127.0.0.1: wrong token (see admin.token_file)" in (
        lab.log("B")
    )
    # B reads A's states with its own, right token: it takes the drain at its next sync (every 1s).
    in_force(lab, "B", "MB2", "drain")
    assert [
        line
        for line in lab.log("B").splitlines()
        if f"peers: {a.url}" in line and "took 1 of its 1 state(s): MB2 drain" in line
    ]
    # B's changes reach A at once.
    assert lab.ctl("B", "maint", "MB1").returncode == 0
    assert lab.operator("A", "MB1") == "maint"
