"""Least connections, weighted: the server with the fewest active connections per unit of weight.

Ties go round robin so equal servers share new connections evenly (HAProxy's leastconn does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

from casarray.balance.state import ServerState


class LeastConn:
    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        self._turn += 1
        count = len(candidates)
        best = candidates[self._turn % count]
        best_load = best.active / best.weight
        for i in range(1, count):
            server = candidates[(self._turn + i) % count]
            load = server.active / server.weight
            if load < best_load:
                best, best_load = server, load
        return best
