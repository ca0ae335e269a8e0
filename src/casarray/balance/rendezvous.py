"""Rendezvous (highest-random-weight) hashing of a key, e.g. the client address.

Each (key, server) pair gets a pseudo-random score; the key goes to the highest. Removing one of N
servers moves only the keys that were on it (about 1/N), unlike `hash % N` which moves almost all.
Weighted with the logarithmic method (Schindelhauer & Schomaker, "Weighted distributed hash tables",
2005): score = -weight / ln(u), u uniform in (0, 1).

The same choice on every node, every worker and every run: a score depends on the key, the server's
whole name and its weight only — BLAKE2b (RFC 7693), never Python's per-process randomised `hash()`, no
state kept between picks, and ties broken by name, so neither the order of the servers in the config
nor which worker asks changes the answer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from hashlib import blake2b

from casarray.balance.state import ServerState

_SCALE = float(1 << 64)


@functools.lru_cache(maxsize=4096)
def _personal(name: str) -> bytes:
    """The 16 bytes that make a server's hash its own. BLAKE2b's `person` parameter takes 16 bytes at
    most (RFC 7693 §2.8): a digest of the whole name, so servers named EXCHANGE-MBX-PROD01 and
    EXCHANGE-MBX-PROD02 (the same first 16 bytes) still score differently."""
    return blake2b(name.encode(), digest_size=16).digest()


def score(key: bytes, name: str, weight: int) -> float:
    digest = blake2b(key, digest_size=8, person=_personal(name)).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # in (0, 1), never 0 or 1
    return -weight / math.log(u)


class Rendezvous:
    __slots__ = ()

    def pick(self, candidates: Sequence[ServerState], key: bytes) -> ServerState:
        return max(candidates, key=lambda server: (score(key, server.name, server.weight), server.name))
