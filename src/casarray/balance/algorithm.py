"""The algorithm interface and the table behind the config's `balance:` key.

Each algorithm is one file (HAProxy's lb_*.c); this table is the only place that names them, and it says
whether an algorithm chooses by the client's key. Callers never decide that themselves: they hold a
`Picker`, which derives the key from the client address only when the algorithm uses one. Adding an
algorithm is a file here, a row in `ALGORITHMS`, and the name in the config's `balance:` lists
(tests/unit/test_balance.py checks the config lists and this table agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from casarray.balance.affinity import algorithm_name, source_key
from casarray.balance.leastconn import LeastConn
from casarray.balance.rendezvous import Rendezvous
from casarray.balance.roundrobin import RoundRobin
from casarray.balance.state import ServerState


class Algorithm(Protocol):
    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        """One of `candidates` (never empty) for a client identified by `key`."""
        ...


@dataclass(frozen=True, slots=True)
class AlgorithmKind:
    """One row of the table: how to make the algorithm (one state per pool) and whether it needs a key."""

    new: Callable[[], Algorithm]
    needs_key: bool  # True: it hashes the client's key (the source address); False: it ignores the key


ALGORITHMS: Final[Mapping[str, AlgorithmKind]] = MappingProxyType(
    {
        "roundrobin": AlgorithmKind(RoundRobin, needs_key=False),
        "leastconn": AlgorithmKind(LeastConn, needs_key=False),
        # HAProxy's `balance source` hashes the client address; ours is a rendezvous hash of it.
        "source": AlgorithmKind(Rendezvous, needs_key=True),
    }
)


class Picker:
    """One pool's algorithm with its key rule bound to it: l4 and l7 both call `pick(candidates, address)`.

    The key is the client's address when the algorithm needs one, else b"" (the algorithm ignores it), so
    no caller can hand a keyed algorithm an empty key by forgetting to compute it."""

    __slots__ = ("algorithm", "name", "needs_key")

    def __init__(self, name: str) -> None:
        try:
            kind = ALGORITHMS[name]
        except KeyError:
            known = ", ".join(ALGORITHMS)
            raise ValueError(f"unknown balancing algorithm {name!r} (known: {known})") from None
        self.name: Final = name
        self.algorithm: Final = kind.new()
        self.needs_key: Final = kind.needs_key

    @classmethod
    def of(cls, balance: str, affinity: str = "none") -> Picker:
        """The picker for a pool configured with `balance:` and `affinity:` (balance/affinity.py's rule)."""
        return cls(algorithm_name(balance, affinity))

    def key(self, address: str) -> bytes:
        """The key `address` (the client's IP address as text) is balanced by: the same on every node
        (balance/affinity.py source_key)."""
        return source_key(address) if self.needs_key else b""

    def pick(self, candidates: Sequence[ServerState], address: str) -> ServerState:
        """One of `candidates` (never empty) for the client at `address`."""
        return self.algorithm.pick(candidates, source_key(address) if self.needs_key else b"")
