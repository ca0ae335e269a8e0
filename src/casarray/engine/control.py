"""What the operations side (admin API, dashboard, metrics, `ctl`) sees of a running balancer and may
change. Plain data out (`Snapshot`), a few verbs in (`Control`): the admin code never touches the
data plane's objects, so the same API serves one process or a supervisor summing several workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from casarray.balance.state import Operator as OperatorState
from casarray.engine.opstate import Setting

__all__ = ["Adoption", "Control", "Event", "MemberView", "OperatorState", "ServerView", "Setting", "Snapshot"]


@dataclass(frozen=True, slots=True)
class MemberView:
    """One (server, service): its health and what the operator set."""

    server: str
    service: str
    health: str  # "init", "up" or "down"
    code: str  # last check result code (L7OK, L7STS, L4CON, ...), "" before the first check
    reason: str  # last check reason ("HTTP 503", "connect refused", ...)
    check_ms: float  # duration of the last check
    since: float  # epoch seconds of the last health change
    operator: str  # OperatorState value set on this member (the server's own state applies too)
    available: bool  # takes new traffic now (up, member and server ready)
    requests: int  # l7 requests sent to this member (0 in l4)
    check_buckets: tuple[int, ...] = ()  # checks per duration bucket (health.state.CHECK_BUCKETS, +Inf)
    check_sum: float = 0.0  # seconds spent in all checks
    # Who set `operator`, why and when (epoch seconds); empty/0 for a state nobody set.
    operator_reason: str = ""
    operator_by: str = ""
    operator_since: float = 0.0


@dataclass(frozen=True, slots=True)
class ServerView:
    name: str
    address: str
    port: int
    operator: str
    active: int  # scur: open connections to this server
    peak: int  # smax
    total: int  # stot
    bytes_in: int  # bin: client -> server
    bytes_out: int  # bout: server -> client
    connect_errors: int  # econ
    members: dict[str, MemberView]
    operator_reason: str = ""  # who set `operator`, why and when (as on MemberView)
    operator_by: str = ""
    operator_since: float = 0.0


@dataclass(frozen=True, slots=True)
class Event:
    """One state change, for the dashboard's log: a health transition or an operator action."""

    time: float  # epoch seconds
    server: str
    service: str  # "" for a whole server
    old: str
    new: str
    code: str  # check result code, or "operator" / "reload"
    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    mode: str
    namespace: str
    services: tuple[str, ...]
    servers: tuple[ServerView, ...]
    clients: int  # open client connections
    clients_total: int
    refused: int  # connections/requests answered or closed by the balancer itself
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> status class -> count
    queue: int = 0  # clients waiting for a slot (l4)
    tls_handshake_failures: int = 0
    reloads: int = 0
    workers: int = 1
    started: float = 0.0  # epoch seconds
    # What `casarray ctl health` needs to judge this node: where the HTTPS listener is ("10.0.1.250:443",
    # "[2001:db8::1]:443"), and each pool a listener picks servers from with the services a server must
    # have available to be in it (l7: one pool per service; l4: "l4", every required service; one per
    # mail port, "imap:993").
    https_listener: str = ""
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    upstream_releases: int = 0  # l7: idle upstream connections closed (timeouts.upstream_release)


@dataclass(frozen=True, slots=True)
class Adoption:
    """What a node did with an operator setting written on another node (admin/peers.py)."""

    setting: Setting
    # taken: it was newer and is in force now; same: this node held that very setting already;
    # kept: this node holds a newer one; unknown: this node's config has no such server or service.
    result: Literal["taken", "same", "kept", "unknown"]
    outcome: str  # in words: "ready -> drain by alice (ctl): CU14", "kept: maint set later here …"

    @property
    def holds(self) -> bool:
        """The node holds the setting now (the peer's word is in force there)."""
        return self.result in ("taken", "same")


class Control(Protocol):
    """Implemented by the running balancer (or the supervisor of several workers)."""

    def snapshot(self) -> Snapshot: ...

    def events(self, since: float = 0.0) -> Sequence[Event]:
        """State changes newer than `since` (epoch seconds), oldest first; a bounded history."""
        ...

    def set_operator(
        self, server: str, service: str | None, state: OperatorState, *, reason: str = "", by: str = ""
    ) -> None:
        """Set a server's (service None) or one member's operator state, with why and by whom. KeyError
        names the unknown server or service. Survives a reload and a restart (engine/opstate.py)."""
        ...

    def operator_settings(self) -> Sequence[Setting]:
        """Every operator setting held (the ready ones too), with its version: what peers read."""
        ...

    def adopt_operators(self, settings: Sequence[Setting], source: str) -> list[Adoption]:
        """Apply the settings written on another node (`source`, for the log) that are newer than the
        ones held, keep them, log one line for each that changes something; never pushes them on."""
        ...

    async def reload(self) -> str:
        """Re-read the config file. Returns a one-line outcome; raises CasarrayError (config errors
        listed) when the new config is refused — the old one keeps serving."""
        ...
