"""Network namespaces for high-availability tests: hosts on Ethernet segments, run as root.

A `Topology` owns everything it creates and removes it all in `close()`, also after a failure:

- namespaces (`ip netns add`), named `<tag>-<label>` where the tag is new for every Topology, so a
  namespace left behind by a killed run can never clash with the next one;
- segments: one Linux bridge each, in a namespace of its own, so nothing is added to the root
  namespace (the host's own interfaces, routes and addresses are never touched);
- veth pairs: one end in a host's namespace (named as asked, e.g. eth0), the other a bridge port;
- processes started in a namespace (`ip netns exec`), their stdout and stderr in a file under the
  topology's directory.

Addresses come from 10.77.0.0/16 by default; every segment is private to its namespaces, so two
topologies (two test runs side by side) may use the same numbers.

    with Topology(tmp_path) as topo:
        lan = topo.segment("lan", "10.77.0.0/24")
        a, b = topo.namespace("a"), topo.namespace("b")
        lan.attach(a, host=11), lan.attach(b, host=12)     # a.eth0 10.77.0.11/24, b.eth0 10.77.0.12/24
        b.start("nc", "nc", "-lk", "10.77.0.12", "5000")    # log in tmp_path/b.nc.log
        a.run("nc", "-z", "10.77.0.12", "5000")
        router = topo.router("r", lan, topo.segment("wan", "10.77.1.0/24"))   # eth0 and eth1, forwarding
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support import Proc, wait_until

IP = "ip"
COMMAND_TIMEOUT = 30.0  # seconds one `ip` command may take on a loaded machine
STOP_TIMEOUT = 5.0  # seconds processes get to exit after SIGTERM on close, before SIGKILL


class NetnsError(AssertionError):
    """An `ip` command failed: the command, its exit status and what it printed."""


def run_ip(
    *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`ip ARGS`; a failure raises NetnsError naming the command and its stderr."""
    done = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


_unavailable: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why this machine cannot build network namespaces (not root, no `ip`, a container that forbids
    it), or None when it can: one `ip netns add` and `del` of a probe namespace, done once."""
    if not _unavailable:
        _unavailable.append(_probe())
    return _unavailable[0]


def _probe() -> str | None:
    if shutil.which(IP) is None:
        return "the ip command (iproute2) is not installed"
    name = f"casarray-probe-{os.getpid()}-{secrets.token_hex(3)}"
    added = run_ip("netns", "add", name, check=False)
    if added.returncode != 0:
        return f"`ip netns add` is not permitted here ({added.stderr.strip() or 'exit ' + str(added.returncode)})"
    run_ip("netns", "del", name, check=False)
    return None


@dataclass(frozen=True, slots=True)
class Interface:
    """One end of a veth pair inside a host namespace, on a segment."""

    namespace: Namespace
    name: str  # e.g. eth0
    address: str  # e.g. 10.77.0.11
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.prefixlen}"


@dataclass(eq=False)
class Namespace:
    """A network namespace of a topology: run commands and start processes in it."""

    topology: Topology
    label: str  # the test's name for it ("node1"); files under the topology's directory use it
    name: str  # the real, unique namespace name
    interfaces: dict[str, Interface] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        """`args` as run inside this namespace."""
        return [IP, "netns", "exec", self.name, *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` here to the end; a failure (with `check`) raises NetnsError with its output."""
        done = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
        if check and done.returncode != 0:
            raise NetnsError(
                f"in {self.label}: {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def start(self, label: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start `args` here in a session of its own; stdout and stderr go to <dir>/<ns>.<label>.log.
        The topology stops it on close (SIGTERM, then SIGKILL to its process group)."""
        log = self.topology.directory / f"{self.label}.{label}.log"
        proc = Proc(self.command(*args), log, env=env)
        self.topology.processes.append(proc)
        return proc

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a per-namespace sysctl (net.ipv4.ip_forward, net.ipv4.ip_nonlocal_bind, …)."""
        path = Path("/proc/sys") / key.replace(".", "/")
        self.run("sh", "-c", f'echo {value} > "$1"', "sh", str(path))

    def addresses(self) -> set[str]:
        """Every address on this namespace's interfaces (without prefix lengths)."""
        data = json.loads(run_ip("-n", self.name, "-j", "address", "show").stdout or "[]")
        return {info["local"] for link in data for info in link.get("addr_info", [])}

    def has_address(self, address: str) -> bool:
        return address in self.addresses()

    def route(self, destination: str, via: str) -> None:
        """A static route here, e.g. route("default", "10.77.0.1")."""
        run_ip("-n", self.name, "route", "replace", destination, "via", via)

    def __str__(self) -> str:
        return self.label


@dataclass(eq=False)
class Segment:
    """An Ethernet segment: a bridge in a namespace of its own, hosts attached by veth pairs."""

    topology: Topology
    label: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    switch: Namespace  # holds the bridge and the host-side veth ends
    bridge: str = "br0"
    ports: int = 0

    def attach(self, namespace: Namespace, ifname: str | None = None, host: int | None = None) -> Interface:
        """Connect `namespace` to this segment through a new interface (default name: eth<N>, N the
        number of interfaces it has) with address number `host` in the network (default: the next
        free one from 11), and bring it up."""
        ifname = ifname or f"eth{len(namespace.interfaces)}"
        if ifname in namespace.interfaces:
            raise NetnsError(f"{namespace.label} already has an interface {ifname}")
        if host is None:
            used = {int(i.address.split(".")[-1]) for i in self.topology.interfaces_on(self)}
            host = next(n for n in range(11, 250) if n not in used)
        address = str(self.network.network_address + host)
        self.ports += 1
        port = f"p{self.ports}"  # inside the switch namespace: short and unique there
        run_ip(
            "-n",
            self.switch.name,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            namespace.name,
        )
        run_ip("-n", self.switch.name, "link", "set", port, "master", self.bridge, "up")
        interface = Interface(namespace, ifname, address, self.network)
        run_ip("-n", namespace.name, "address", "add", interface.cidr, "dev", ifname)
        run_ip("-n", namespace.name, "link", "set", ifname, "up")
        namespace.interfaces[ifname] = interface
        return interface


class Topology:
    """Namespaces, segments and processes of one test; `close()` (or leaving the `with`) removes all."""

    def __init__(self, directory: Path, tag: str | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # Unique per run: a namespace a killed run left behind keeps its name and harms nobody.
        self.tag = tag or f"ca{os.getpid() % 10000:04d}{secrets.token_hex(2)}"
        self.namespaces: list[Namespace] = []
        self.segments: list[Segment] = []
        self.processes: list[Proc] = []

    def namespace(self, label: str) -> Namespace:
        """A new namespace with its loopback up."""
        if any(ns.label == label for ns in self.namespaces):
            raise NetnsError(f"the topology already has a namespace {label!r}")
        ns = Namespace(self, label, f"{self.tag}-{label}")
        run_ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        run_ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def segment(self, label: str, network: str = "10.77.0.0/24") -> Segment:
        """A new segment: a bridge (no STP: ports forward at once; multicast flooded, as VRRP needs)."""
        switch = self.namespace(f"sw-{label}")
        segment = Segment(self, label, ipaddress.ip_network(network), switch)
        run_ip(
            "-n",
            switch.name,
            "link",
            "add",
            segment.bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        )
        run_ip("-n", switch.name, "link", "set", segment.bridge, "up")
        self.segments.append(segment)
        return segment

    def host(self, label: str, segment: Segment, host: int | None = None) -> tuple[Namespace, Interface]:
        """A namespace with one interface (eth0) on `segment`."""
        ns = self.namespace(label)
        return ns, segment.attach(ns, "eth0", host)

    def router(self, label: str, *segments: Segment, host: int = 1) -> Namespace:
        """A namespace with one interface on each segment (eth0, eth1, …; address number `host` on
        each) that forwards IPv4 between them."""
        ns = self.namespace(label)
        for segment in segments:
            segment.attach(ns, host=host)
        ns.sysctl("net.ipv4.ip_forward", 1)
        return ns

    def interfaces_on(self, segment: Segment) -> list[Interface]:
        return [i for ns in self.namespaces for i in ns.interfaces.values() if i.network == segment.network]

    def close(self) -> None:
        """Stop every process started here (SIGTERM to all at once, SIGKILL to the process group of any
        still running after STOP_TIMEOUT), kill whatever else still runs in these namespaces (a daemon's
        children), delete the namespaces. Never raises: it runs after failures."""
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.processes:
            with contextlib.suppress(Exception):
                try:
                    proc.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                proc.stop()  # closes the log file
        for ns in reversed(self.namespaces):
            with contextlib.suppress(Exception):
                self._kill_rest(ns)
            with contextlib.suppress(Exception):
                run_ip("netns", "del", ns.name, check=False)
        self.namespaces.clear()

    @staticmethod
    def _kill_rest(ns: Namespace) -> None:
        pids = run_ip("netns", "pids", ns.name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not run_ip("netns", "pids", ns.name, check=False).stdout.split(), 5.0, 0.05)

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
