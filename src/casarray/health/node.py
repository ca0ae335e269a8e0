"""Can this balancer serve? The verdict `casarray ctl health` gives keepalived and BGP watchers, judged
from the admin API's status (`GET /api/status`, a `Snapshot` as JSON). Pure: plain data in, a verdict out.

A pool is served when at least one server is in it: every service the pool needs is available on that
server (health up, and neither the member nor the server in drain or maint). The pools are the
snapshot's (l7: one per service, l4: one for the listener, one per mail port). Required are all of
them, or those named (`--service`): a service name selects every pool that needs it, a pool name
("l4", "imap:993") that pool.

Draining every server is an operator's decision, and a node with nothing to send clients to is not
healthy: both count as not served. The same verdict on every node (operator states reach all nodes)
then moves nothing between nodes, and takes the nodes out together only when none could serve anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeHealth", "judge", "required_pools"]


@dataclass(frozen=True, slots=True)
class NodeHealth:
    ok: bool
    reason: str  # one line: what is served, or what is not
    serving: dict[str, tuple[str, ...]]  # required pool -> the servers in it now


def required_pools(pools: Mapping[str, Sequence[str]], wanted: Sequence[str]) -> list[str]:
    """The pools `wanted` names (all when empty), in the snapshot's order. A name matches a pool or any
    service a pool needs, case-insensitively; ValueError names what matches nothing."""
    if not wanted:
        return list(pools)
    chosen: list[str] = []
    for name in wanted:
        key = name.strip().lower()
        found = [
            pool for pool, needs in pools.items() if key == pool.lower() or key in (s.lower() for s in needs)
        ]
        if not found:
            raise ValueError(f"no pool or service {name!r} (pools: {', '.join(pools)})")
        chosen += [pool for pool in found if pool not in chosen]
    return [pool for pool in pools if pool in chosen]


def judge(status: Mapping[str, Any], wanted: Sequence[str] = ()) -> NodeHealth:
    """The verdict on one `/api/status` answer. ValueError when it is not one (a field missing or of
    the wrong kind) or when `wanted` names no pool."""
    try:
        pools: dict[str, tuple[str, ...]] = {str(k): tuple(map(str, v)) for k, v in status["pools"].items()}
        servers = [(str(s["name"]), dict(s["members"])) for s in status["servers"]]
        available = {
            (name, str(service)): bool(member["available"])
            for name, members in servers
            for service, member in members.items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a casarray status answer (missing or odd field: {exc})") from None
    if not pools:
        raise ValueError("the status names no pool (a casarray older than `ctl health`?)")
    required = required_pools(pools, wanted)
    serving = {
        pool: tuple(
            name
            for name, _ in servers
            if all(available.get((name, service), False) for service in pools[pool])
        )
        for pool in required
    }
    empty = [pool for pool in required if not serving[pool]]
    if empty:
        return NodeHealth(
            False,
            f"no server takes new traffic for {_names(empty)} (down, drained or in maintenance)",
            serving,
        )
    fewest = min(required, key=lambda pool: len(serving[pool]))
    return NodeHealth(
        True,
        f"{_names(required)}: each has a server (fewest: {fewest} {len(serving[fewest])} of {len(servers)})",
        serving,
    )


def _names(pools: Sequence[str]) -> str:
    return ", ".join(pools) if len(pools) <= 4 else f"{len(pools)} pools ({', '.join(pools[:3])}, …)"
