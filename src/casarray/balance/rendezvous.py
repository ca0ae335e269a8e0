"""Rendezvous (highest-random-weight) hashing of a key, e.g. the client address.

Each (key, server) pair gets a pseudo-random score; the key goes to the highest. Removing one of N
servers moves only the keys that were on it (about 1/N), unlike `hash % N` which moves almost all.
Weighted with the logarithmic method (Schindelhauer & Schomaker, "Weighted distributed hash tables",
2005): score = -weight / ln(u), u uniform in (0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b

from casarray.balance.state import ServerState

_SCALE = float(1 << 64)


def score(key: bytes, name: str, weight: int) -> float:
    digest = blake2b(key, digest_size=8, person=name.encode()[:16]).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # in (0, 1), never 0 or 1
    return -weight / math.log(u)


class Rendezvous:
    __slots__ = ()

    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        return max(candidates, key=lambda server: score(key, server.name, server.weight))
