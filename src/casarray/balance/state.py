"""Runtime state of the servers as the balancer sees them: members, operator state, counters.

No I/O and no asyncio: the engine and the health checker update these objects, the algorithms read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from casarray.config.model import Server
from casarray.health.state import HealthState


class Operator(enum.Enum):
    """What the operator decided. A member takes new traffic only when up and READY."""

    READY = "ready"
    DRAIN = "drain"  # no new connections or requests; in-flight ones finish
    MAINT = "maint"  # out now


@dataclass(slots=True, eq=False)
class Member:
    """One server inside one service's pool."""

    server: ServerState
    service: str
    health: HealthState
    operator: Operator = Operator.READY
    requests: int = 0  # l7 requests sent to this member

    @property
    def available(self) -> bool:
        return self.health.up and self.operator is Operator.READY and self.server.operator is Operator.READY


@dataclass(slots=True, eq=False)
class ServerState:
    """One Exchange server: where it is, its members (one per service) and its traffic counters."""

    config: Server
    address: str  # resolved IP address
    port: int  # the server's port for this pool (443, or a mail port)
    members: dict[str, Member] = field(default_factory=dict)
    operator: Operator = Operator.READY
    active: int = 0  # scur
    peak: int = 0  # smax
    total: int = 0  # stot
    bytes_in: int = 0  # bin: client -> server
    bytes_out: int = 0  # bout: server -> client
    connect_errors: int = 0  # econ

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weight(self) -> int:
        return self.config.weight

    @property
    def full(self) -> bool:
        return self.config.maxconn is not None and self.active >= self.config.maxconn

    def serves_all(self, services: tuple[str, ...]) -> bool:
        """Layer 4 sees no paths, so a server takes connections only when every required service is up."""
        if self.operator is not Operator.READY or self.weight == 0:
            return False
        return all(self.members[name].available for name in services)

    def why_out(self, services: tuple[str, ...]) -> str:
        """Why `serves_all` is false, for the log line."""
        if self.operator is not Operator.READY:
            return f"operator state {self.operator.value}"
        if self.weight == 0:
            return "weight 0"
        down = [name for name in services if not self.members[name].available]
        return f"{', '.join(down)} down" if down else "available"

    def opened(self) -> None:
        self.active += 1
        self.total += 1
        if self.active > self.peak:
            self.peak = self.active

    def closed(self, bytes_in: int, bytes_out: int) -> None:
        self.active -= 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
