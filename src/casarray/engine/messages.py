"""What the supervisor and its workers say to each other (engine/supervisor.py), as typed values.

One JSON object a line on the socketpair between them, `op` naming the message:
  supervisor -> worker: Health (a member's health changed), SetOperator, Serve (the first states are
                        in: start accepting), Retire (replaced by a reload: drain up to
                        timeouts.hard_stop_after), Drain (stop, or cut a retiring one short);
  worker -> supervisor: Ready (its listeners are built), Stats (its counters, every second),
                        Drained (how its drain ended, before it exits).
Both ends are our own processes, but a line is still checked field by field: a malformed one raises
ValueError (the reader skips it) rather than reaching the data plane as a half-typed dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import ClassVar

from casarray.engine.counters import Counters

__all__ = [
    "Drain",
    "Drained",
    "Health",
    "Message",
    "Ready",
    "Retire",
    "Serve",
    "SetOperator",
    "Stats",
    "decode",
    "encode",
]


# --- supervisor -> worker ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Health:
    """The supervisor's checker changed a member's health (or a new worker learns it)."""

    op: ClassVar[str] = "health"
    server: str
    service: str
    up: bool
    checked: bool  # false: never checked yet, the worker keeps its own initial state
    code: str
    reason: str

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Health:
        return cls(
            _str(d, "server"),
            _str(d, "service"),
            _bool(d, "up"),
            _bool(d, "checked"),
            _str(d, "code"),
            _str(d, "reason"),
        )


@dataclass(frozen=True, slots=True)
class SetOperator:
    """An operator state for a server (service None) or one member (balance/state.py Operator value)."""

    op: ClassVar[str] = "operator"
    server: str
    service: str | None
    state: str

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> SetOperator:
        return cls(_str(d, "server"), _optional_str(d, "service"), _str(d, "state"))


@dataclass(frozen=True, slots=True)
class Serve:
    """The first health and operator states are in: start accepting."""

    op: ClassVar[str] = "serve"

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Serve:
        return cls()


@dataclass(frozen=True, slots=True)
class Retire:
    """A reload replaced this worker: serve what it holds, up to its timeouts.hard_stop_after."""

    op: ClassVar[str] = "retire"

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Retire:
        return cls()


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop, closing what is still open after `grace` seconds (a shorter bound wins)."""

    op: ClassVar[str] = "drain"
    grace: float
    why: str | None = None  # the reason in the log line when connections are closed

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Drain:
        return cls(_float(d, "grace"), _optional_str(d, "why"))


# --- worker -> supervisor ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready:
    """The worker built its listeners (not serving until Serve)."""

    op: ClassVar[str] = "ready"

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Ready:
        return cls()


@dataclass(frozen=True, slots=True)
class Stats:
    """The worker's counters (engine/counters.py), every STATS_INTERVAL."""

    op: ClassVar[str] = "stats"
    counters: Counters

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Stats:
        return cls(Counters.from_json(d.get("counters")))


@dataclass(frozen=True, slots=True)
class Drained:
    """How a generation's drain ended (in a process, or a worker's, reported before it exits)."""

    op: ClassVar[str] = "drained"
    number: int
    seconds: float
    held: int  # connections open when it stopped accepting
    closed: int  # connections still open at its bound, closed then (0: every one ended by itself)
    why: str  # what bound it had

    def describe(self) -> str:
        if not self.closed:
            held = f"each of its {self.held} connection(s) has ended" if self.held else "nothing was open"
            return f"generation {self.number}: finished after {self.seconds:.1f}s ({held})"
        return f"generation {self.number}: {self.why}: closed {self.closed} connection(s) still open"

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Drained:
        return cls(
            _int(d, "number"), _float(d, "seconds"), _int(d, "held"), _int(d, "closed"), _str(d, "why")
        )


Message = Health | SetOperator | Serve | Retire | Drain | Ready | Stats | Drained
_BY_OP: dict[str, type[Message]] = {
    cls.op: cls for cls in (Health, SetOperator, Serve, Retire, Drain, Ready, Stats, Drained)
}


def encode(message: Message) -> bytes:
    """One JSON line."""
    data: dict[str, object] = {"op": message.op}
    for f in fields(message):
        value = getattr(message, f.name)
        data[f.name] = value.to_json() if isinstance(value, Counters) else value
    return json.dumps(data).encode() + b"\n"


def decode(line: bytes) -> Message:
    """The message on one line; ValueError if it is not one (unknown op, missing or mistyped field)."""
    data = json.loads(line)  # json.JSONDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError("a message is a JSON object")
    cls = _BY_OP.get(data.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown message {data.get('op')!r}")
    return cls.from_json(data)


def _str(d: Mapping[str, object], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _optional_str(d: Mapping[str, object], key: str) -> str | None:
    return None if d.get(key) is None else _str(d, key)


def _bool(d: Mapping[str, object], key: str) -> bool:
    value = d.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    return value


def _int(d: Mapping[str, object], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    return value


def _float(d: Mapping[str, object], key: str) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)
