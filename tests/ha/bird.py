"""BIRD 2 inside a `Topology` (tests/ha/netns.py): start it in a namespace on a control socket of its
own, ask it with birdc; and the upstream router of an ECMP setup, as an admin would configure it.

    bird = Bird.start(router_ns, "bird", router_config(...))    # log in <dir>/<ns>.bird.log
    bird.established()                                        # BGP sessions up
    bird.next_hops("10.77.9.1/32")                            # {"10.77.0.11", "10.77.0.12"}
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.ha.netns import COMMAND_TIMEOUT, Namespace, NetnsError
from tests.support import Proc, wait_until

BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"

# sockaddr_un.sun_path holds 108 bytes: pytest's tmp_path can be longer.
_SOCKET_PATH_LIMIT = 100


def unavailable_reason() -> str | None:
    if not (Path(BIRD).exists() and Path(BIRDC).exists()):
        return f"{BIRD} or {BIRDC} absent (apt-get install bird2)"
    return None


@dataclass
class Bird:
    namespace: Namespace
    config: Path
    socket: Path
    proc: Proc

    @classmethod
    def start(cls, namespace: Namespace, label: str, config_text: str, socket: Path | None = None) -> Bird:
        """`bird -f` in `namespace` with `config_text` (written to <dir>/<ns>.<label>.conf); its stderr in
        <dir>/<ns>.<label>.log; its control socket `socket` (default <dir>/<ns>.<label>.ctl). Waits until
        the socket answers."""
        topology = namespace.topology
        config = topology.directory / f"{namespace.label}.{label}.conf"
        config.write_text(config_text)
        socket = socket or topology.directory / f"{namespace.label}.{label}.ctl"
        if len(str(socket)) > _SOCKET_PATH_LIMIT:
            socket = Path(tempfile.mkdtemp(prefix="cabird")) / f"{namespace.label}.{label}.ctl"
        proc = namespace.start(label, BIRD, "-f", "-c", str(config), "-s", str(socket))
        bird = cls(namespace, config, socket, proc)
        wait_until(bird._answers, 30.0, 0.05, f"BIRD's control socket in {namespace.label}")
        return bird

    def _answers(self) -> bool:
        if self.proc.popen.poll() is not None:
            raise NetnsError(f"bird in {self.namespace.label} exited:\n{self.proc.log}")
        return self.socket.exists() and self.birdc("show", "status", check=False).returncode == 0

    def birdc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """birdc against this BIRD's socket (a file: reachable from any namespace)."""
        done = subprocess.run(
            [BIRDC, "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and done.returncode != 0:
            raise NetnsError(f"birdc {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def protocols(self) -> dict[str, str]:
        """Protocol name -> its state and info ("up Established", "down", "start Active" ...)."""
        found = {}
        for line in self.birdc("show", "protocols").stdout.splitlines()[2:]:
            fields = line.split()
            if len(fields) >= 4:
                found[fields[0]] = " ".join([fields[3], *fields[5:]])
        return found

    def established(self) -> list[str]:
        """The BGP sessions that are up."""
        return [name for name, state in self.protocols().items() if state.endswith("Established")]

    def next_hops(self, prefix: str) -> set[str]:
        """The next hops of every route BIRD holds for `prefix` (`show route for`)."""
        out = self.birdc("show", "route", "for", prefix).stdout
        return set(re.findall(r"via (\S+) on ", out))

    def has_route(self, prefix: str) -> bool:
        """Whether BIRD's table holds a route for exactly `prefix` (a blackhole route has no next hop)."""
        done = self.birdc("show", "route", prefix, check=False)
        return any(line.split()[:1] == [prefix] for line in done.stdout.splitlines())

    def stop(self) -> None:
        self.proc.kill()


def kernel_next_hops(namespace: Namespace, address: str) -> set[str]:
    """The gateways of the kernel's route to `address` in `namespace` (one, or several: ECMP)."""
    done = namespace.run("ip", "-j", "route", "show", f"{address}/32" if ":" not in address else address)
    routes = json.loads(done.stdout or "[]")
    hops: set[str] = set()
    for route in routes:
        if "gateway" in route:
            hops.add(route["gateway"])
        hops.update(hop["gateway"] for hop in route.get("nexthops", []) if "gateway" in hop)
    return hops


def router_config(
    router_id: str, asn: int, nodes: str, node_asn: int, vips: str, *, bfd: bool = False, hold_time: int = 3
) -> str:
    """The upstream router's bird.conf (docs/high-availability.md has the same): BGP sessions
    accepted from any node of the `nodes` network (dynamic neighbors), only host routes inside `vips`
    taken from them, and every equal path of a VIP merged into one ECMP kernel route. The BGP events
    ("Hold timer expired", "BFD session down") are logged, so a test sees what took a node out."""
    network = ipaddress.ip_network(vips)
    bits = network.max_prefixlen
    bfd_lines = "protocol bfd {\n}\n\n" if bfd else ""
    return (
        "log stderr all;\n"
        f"router id {router_id};\n\n"
        "protocol device {\n}\n\n"
        f"{bfd_lines}"
        "protocol kernel {\n"
        f"    ipv{network.version} {{ export where source = RTS_BGP; }};\n"
        "    merge paths on;  # every equal BGP path to a VIP in one multipath route\n"
        "}\n\n"
        "protocol bgp casarray_nodes {\n"
        f"    local as {asn};\n"
        f"    neighbor range {nodes} as {node_asn};  # any node of the segment may connect\n"
        "    direct;\n"
        f"    hold time {hold_time};\n"
        "    error wait time 5, 60;  # a node back after a failure is taken back in 5 s (BIRD's default: 60)\n"
        "    debug { states, events };\n"
        + ("    bfd on;\n" if bfd else "")
        + f"    ipv{network.version} {{\n"
        f"        import where net ~ [ {network}{{{bits},{bits}}} ];  # only the VIPs, as host routes\n"
        "        export none;\n"
        "    };\n"
        "}\n"
    )
