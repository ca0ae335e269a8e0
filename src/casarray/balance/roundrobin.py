"""Smooth weighted round robin (the interleaving nginx uses): weights 5,1,1 give a a b a c a a, not a a a a a b c."""

from __future__ import annotations

from collections.abc import Sequence

from casarray.balance.state import ServerState


class RoundRobin:
    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        current = self._current
        total = 0
        best: ServerState | None = None
        best_weight = 0
        for server in candidates:
            weight = current.get(server.name, 0) + server.weight
            current[server.name] = weight
            total += server.weight
            if best is None or weight > best_weight:
                best, best_weight = server, weight
        assert best is not None, "pick() needs at least one candidate"
        current[best.name] = best_weight - total
        return best
