"""The algorithm interface and the name → class table used by the config's `balance:` key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from casarray.balance.leastconn import LeastConn
from casarray.balance.rendezvous import Rendezvous
from casarray.balance.roundrobin import RoundRobin
from casarray.balance.state import ServerState


class Algorithm(Protocol):
    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        """One of `candidates` (never empty) for a client identified by `key`."""
        ...


def make_algorithm(balance: str, affinity: str = "none") -> Algorithm:
    """`affinity: source` overrides the algorithm with the rendezvous hash, as `balance: source` does."""
    if balance == "source" or affinity == "source":
        return Rendezvous()
    if balance == "leastconn":
        return LeastConn()
    return RoundRobin()
