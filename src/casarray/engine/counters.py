"""The traffic counters of a data plane, as one value that adds itself.

A server appears once per pool (HTTPS, each mail port) and, under a supervisor, once per worker: the
admin side shows one line per server, so counters are summed — across pools inside a process and across
workers in the supervisor — by the same `+`. Counters are HAProxy's stats names where one exists
(scur, smax, stot, bin, bout, econ). Plain data, no clock: it crosses the supervisor's socket as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from casarray.balance.state import ServerState

__all__ = ["Counters", "ServerCounters"]


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """One server's counters (summed over its pools, or over workers)."""

    active: int = 0  # scur (a gauge)
    peak: int = 0  # smax (a gauge: summed, as each worker's own peak is a lower bound of the sum's)
    total: int = 0  # stot
    bytes_in: int = 0  # bin: client -> server
    bytes_out: int = 0  # bout: server -> client
    connect_errors: int = 0  # econ
    requests: Mapping[str, int] = field(default_factory=dict)  # member (service) -> l7 requests sent

    def __add__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            self.active + other.active,
            self.peak + other.peak,
            self.total + other.total,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
            self.connect_errors + other.connect_errors,
            _add(self.requests, other.requests),
        )

    @classmethod
    def of(cls, state: ServerState) -> ServerCounters:
        return cls(
            state.active,
            state.peak,
            state.total,
            state.bytes_in,
            state.bytes_out,
            state.connect_errors,
            {name: m.requests for name, m in state.members.items()},
        )

    def to_json(self) -> dict[str, object]:
        return {
            "active": self.active,
            "peak": self.peak,
            "total": self.total,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connect_errors": self.connect_errors,
            "requests": dict(self.requests),
        }

    @classmethod
    def from_json(cls, data: object) -> ServerCounters:
        d = _mapping(data)
        return cls(
            _int(d, "active"),
            _int(d, "peak"),
            _int(d, "total"),
            _int(d, "bytes_in"),
            _int(d, "bytes_out"),
            _int(d, "connect_errors"),
            _counts(d.get("requests", {})),
        )


@dataclass(frozen=True, slots=True)
class Counters:
    """What a frontend, a generation, a worker or all the workers together have counted."""

    clients: int = 0  # open client connections (a gauge)
    clients_total: int = 0
    refused: int = 0  # connections/requests answered or closed by the balancer itself
    queue: int = 0  # clients waiting for a slot (l4; a gauge)
    tls_handshake_failures: int = 0
    requests: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # service -> "2xx" -> n
    servers: Mapping[str, ServerCounters] = field(default_factory=dict)  # by server name
    upstream_releases: int = 0  # l7: idle upstream connections closed (timeouts.upstream_release)

    def __add__(self, other: Counters) -> Counters:
        requests = dict(self.requests)
        for service, classes in other.requests.items():
            requests[service] = _add(requests.get(service, {}), classes)
        servers = dict(self.servers)
        for name, counters in other.servers.items():
            mine = servers.get(name)
            servers[name] = counters if mine is None else mine + counters
        return Counters(
            self.clients + other.clients,
            self.clients_total + other.clients_total,
            self.refused + other.refused,
            self.queue + other.queue,
            self.tls_handshake_failures + other.tls_handshake_failures,
            requests,
            servers,
            self.upstream_releases + other.upstream_releases,
        )

    @classmethod
    def of_servers(cls, states: Iterable[ServerState]) -> Counters:
        """The server counters of pools (a server in several pools is summed under its name)."""
        total = cls()
        for state in states:
            total += cls(servers={state.name: ServerCounters.of(state)})
        return total

    def ended(self) -> Counters:
        """What is left of a worker that is gone: its totals, so counters never go down (Prometheus
        would read a reset); its gauges (open connections, peaks, queue) are not kept."""
        return replace(
            self,
            clients=0,
            queue=0,
            servers={name: replace(s, active=0, peak=0) for name, s in self.servers.items()},
        )

    def to_json(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "clients_total": self.clients_total,
            "refused": self.refused,
            "queue": self.queue,
            "tls_handshake_failures": self.tls_handshake_failures,
            "requests": {service: dict(classes) for service, classes in self.requests.items()},
            "servers": {name: s.to_json() for name, s in self.servers.items()},
            "upstream_releases": self.upstream_releases,
        }

    @classmethod
    def from_json(cls, data: object) -> Counters:
        """The inverse of to_json; a malformed value raises ValueError."""
        d = _mapping(data)
        return cls(
            _int(d, "clients"),
            _int(d, "clients_total"),
            _int(d, "refused"),
            _int(d, "queue"),
            _int(d, "tls_handshake_failures"),
            {str(k): _counts(v) for k, v in _mapping(d.get("requests", {})).items()},
            {str(k): ServerCounters.from_json(v) for k, v in _mapping(d.get("servers", {})).items()},
            _int(d, "upstream_releases"),
        )


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


def _mapping(data: object) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object, got {type(data).__name__}")
    return data


def _int(d: Mapping[str, object], key: str) -> int:
    value = d.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    return value


def _counts(data: object) -> dict[str, int]:
    d = _mapping(data)
    return {str(key): _int(d, key) for key in d}
