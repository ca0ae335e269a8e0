"""An Exchange array and casarray nodes inside a `Topology` (tests/ha/netns.py): simulated servers each
in a namespace of its own, balancer nodes sharing one config, clients that ask the VIP in a loop, and
watchers of a node's operator states.

    array = Array(topo, lan, pki)            # lan: a Segment, pki: the lab PKI (tests/ha/conftest.py)
    array.sims(3)                             # MB1..MB3 on .21-.23, port 443
    config = array.config(VIP)                # one casarray.yaml text for every node
    node = array.node("node1", host=11)       # a namespace on lan, ip_nonlocal_bind=1
    node.start_casarray(config)               # casarray run, log in <dir>/node1.casarray.log
    client = array.client("client", VIP)      # tests/ha/client.py in its own namespace
    client.results()                          # one dict per request so far
    watch = array.watch("watch", "http://10.77.0.12:9090", token_file, namespace=client.namespace)
    watch.wait_state("MB2", "drain")          # tests/ha/status.py: when node2's status first showed it
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casarray.lab.pki import CertFiles
from tests.ha.netns import Interface, Namespace, Segment, Topology
from tests.support import DOMAIN, NAMESPACE, Proc, wait_until

HTTPS_PORT = 443
ADMIN = "127.0.0.1:9090"  # each node's own loopback: the same admin.listen in every node's config
START_TIMEOUT = 60.0  # seconds a python child may take to be ready on a loaded machine
CLIENT = Path(__file__).with_name("client.py")
STATUS = Path(__file__).with_name("status.py")


def casarray_args(*args: str) -> list[str]:
    """The casarray command line, with this interpreter (so the test's sources and venv are used)."""
    return [sys.executable, "-m", "casarray", *args]


@dataclass
class Sim:
    name: str
    namespace: Namespace
    address: str
    proc: Proc


@dataclass
class Node:
    """A balancer host: a namespace on the segment that may bind addresses it does not hold yet."""

    array: Array
    namespace: Namespace
    interface: Interface
    config: Path | None = None
    casarray: Proc | None = None
    runs: int = 0

    @property
    def label(self) -> str:
        return self.namespace.label

    @property
    def directory(self) -> Path:
        """<dir>/<label>: this node's files (config, operator states, keepalived's)."""
        path = self.array.topology.directory / self.label
        path.mkdir(exist_ok=True)
        return path

    def start_casarray(self, config_text: str, wait: bool = True) -> Proc:
        """Write `config_text` to <dir>/<label>/casarray.yaml (a directory per node: each keeps its own
        operator-state file next to it, as two hosts would) and run it; wait until it listens."""
        self.config = self.directory / "casarray.yaml"
        self.config.write_text(config_text)
        return self.restart_casarray(wait)

    def restart_casarray(self, wait: bool = True) -> Proc:
        """Run casarray again with the config written by start_casarray (log: casarray<N>.log)."""
        assert self.config is not None, "start_casarray first"
        self.runs += 1
        self.casarray = self.namespace.start(
            f"casarray{self.runs}", *casarray_args("run", "-c", str(self.config))
        )
        if wait:
            self.wait_casarray()
        return self.casarray

    def wait_casarray(self) -> None:
        """Until casarray listens, and its admin API too when the config has one (what keepalived's
        check and a BGP watcher ask)."""
        assert self.casarray is not None
        assert self.config is not None
        self.casarray.wait_log("listening on", timeout=START_TIMEOUT)
        if "admin:" in self.config.read_text():
            self.casarray.wait_log("admin API and dashboard on", timeout=START_TIMEOUT)

    def kill_casarray(self) -> None:
        """SIGKILL: the process dies at once, as in a crash (no graceful drain)."""
        assert self.casarray is not None
        self.casarray.kill()

    def holds(self, address: str) -> bool:
        return self.namespace.has_address(address)


@dataclass
class Client:
    namespace: Namespace
    out: Path
    proc: Proc

    def results(self) -> list[dict[str, Any]]:
        """Every request written so far (a line being written is left for the next call)."""
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8").splitlines()
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                break
        return found

    def wait_successes(self, count: int, after: float = 0.0, timeout: float = 30.0) -> None:
        def enough() -> bool:
            return sum(1 for r in self.results() if r["ok"] and r["t"] >= after) >= count

        wait_until(enough, timeout, 0.05, f"{count} successful requests in {self.namespace.label}")

    def finished(self) -> bool:
        return self.proc.popen.poll() is not None


@dataclass
class Watch:
    """tests/ha/status.py watching one node's operator states from a namespace."""

    namespace: Namespace
    out: Path
    proc: Proc

    def changes(self) -> list[tuple[float, dict[str, str]]]:
        """(when it was seen, epoch seconds; each server's operator state) for every change so far."""
        if not self.out.exists():
            return []
        found = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            try:
                change = json.loads(line)
            except ValueError:
                break  # being written: left for the next call
            found.append((change["t"], change["states"]))
        return found

    def wait_state(self, server: str, state: str, timeout: float = 30.0) -> float:
        """Wait until the node's status shows `server` in `state`; when the watcher first saw it."""

        def seen() -> float | None:
            changes = self.changes()
            if changes and changes[-1][1].get(server) == state:
                return changes[-1][0]
            return None

        wait_until(lambda: seen() is not None, timeout, 0.01, f"{server} {state} in {self.out.name}")
        when = seen()
        assert when is not None
        return when


@dataclass
class Array:
    """Simulated Exchange servers, casarray nodes and clients on one segment."""

    topology: Topology
    segment: Segment
    pki: CertFiles
    servers: list[Sim] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def sims(self, count: int = 3, *extra: str, first_host: int = 21) -> list[Sim]:
        """MB1..MB<count>, each `casarray sim-cas` in a namespace of its own on port 443 (`extra`: more
        sim-cas options, e.g. "--imap", "143")."""
        started = []
        for _ in range(count):
            name = f"MB{len(self.servers) + 1}"
            ns, interface = self.topology.host(name.lower(), self.segment, first_host + len(self.servers))
            proc = ns.start(
                "sim",
                *casarray_args(
                    "sim-cas", "--name", name, "--listen", f"{interface.address}:{HTTPS_PORT}", "--domain", DOMAIN,
                    "--cert", str(self.pki.certificate), "--key", str(self.pki.key), *extra,
                ),
            )  # fmt: skip
            sim = Sim(name, ns, interface.address, proc)
            self.servers.append(sim)
            started.append(sim)
        for sim in started:
            sim.proc.wait_log("listening on", timeout=START_TIMEOUT)
        return started

    def config(
        self, vip: str, extra: str = "", mode: str = "l7", admin: str = f"{{listen: '{ADMIN}'}}"
    ) -> str:
        """The config every node runs: the VIP on port 443, the sims, the admin API (default: on each
        node's own loopback), one process, quick health checks, a short stop grace."""
        servers = "\n".join(f"  - {{name: {s.name}, address: {s.address}}}" for s in self.servers)
        tls = f"tls: {{certificate: {self.pki.certificate}, key: {self.pki.key}}}\n" if mode == "l7" else ""
        return (
            f"namespace: {NAMESPACE}\n"
            f"mode: {mode}\n"
            f"listen: {{address: {vip}, https_port: {HTTPS_PORT}}}\n"
            f"{tls}"
            f"upstream_tls: {{ca: {self.pki.ca}}}\n"
            f"servers:\n{servers}\n"
            "health: {interval: 1s, timeout: 1s, rise: 1, fall: 2}\n"
            "timeouts: {grace: 1s}\n"  # a stopped node lets go quickly: the tests' teardown waits for it
            f"admin: {admin}\n"
            "workers: 1\n" + textwrap.dedent(extra)
        )

    def node(self, label: str, host: int) -> Node:
        """A namespace on the segment with net.ipv4.ip_nonlocal_bind=1 (casarray binds the VIP before
        it holds it, docs/keepalived-export.md)."""
        ns, interface = self.topology.host(label, self.segment, host)
        ns.sysctl("net.ipv4.ip_nonlocal_bind", 1)
        node = Node(self, ns, interface)
        self.nodes.append(node)
        return node

    def client(
        self,
        label: str,
        address: str,
        *,
        namespace: Namespace | None = None,
        count: int = 2000,
        duration: float = 60.0,
        interval: float = 0.05,
        timeout: float = 1.0,
        port: int = HTTPS_PORT,
        sources: tuple[str, ...] = (),
        cookies: tuple[str, ...] = (),
    ) -> Client:
        """tests/ha/client.py asking https://<address>/owa/healthcheck.htm (SNI and Host the namespace),
        a new connection per request, bounded by `count` and `duration`. In `namespace`, or a new one
        on the segment. Request N is sent from the Nth of `sources` and with the Nth of `cookies` in
        turn (default: the namespace's own address, no cookie)."""
        if namespace is None:
            namespace, _ = self.topology.host(label, self.segment)
        out = self.topology.directory / f"{label}.requests.jsonl"
        proc = namespace.start(
            "client",
            sys.executable, str(CLIENT), "--address", address, "--port", str(port), "--host", NAMESPACE,
            "--ca", str(self.pki.ca), "--out", str(out), "--count", str(count), "--duration", str(duration),
            "--interval", str(interval), "--timeout", str(timeout),
            *(f"--source={source}" for source in sources), *(f"--cookie={cookie}" for cookie in cookies),
        )  # fmt: skip
        return Client(namespace, out, proc)

    def watch(self, label: str, admin: str, token_file: Path, *, namespace: Namespace) -> Watch:
        """tests/ha/status.py in `namespace`, asking the admin API at `admin` (http://host:port) every
        10 ms for 120 s at most; returns once it has its first answer."""
        out = self.topology.directory / f"{label}.states.jsonl"
        proc = namespace.start(
            label,
            sys.executable, str(STATUS), "--url", admin, "--token-file", str(token_file), "--out", str(out),
            "--duration", "120", "--interval", "0.01",
        )  # fmt: skip
        watch = Watch(namespace, out, proc)
        wait_until(watch.changes, START_TIMEOUT, 0.05, f"the first answer of {admin}/api/status")
        return watch
