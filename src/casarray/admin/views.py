"""The Control's plain data as JSON-ready dicts, and the one derived fact every view needs (state)."""

from __future__ import annotations

import dataclasses
from typing import Any

from casarray.engine.control import Event, MemberView, OperatorState, ServerView, Snapshot

__all__ = ["OPERATOR_STATES", "effective_operator", "event_json", "member_state", "snapshot_json"]

OPERATOR_STATES: tuple[str, ...] = tuple(state.value for state in OperatorState)

# A member is held back by whichever of its own and its server's operator states is stronger.
_STRENGTH = {OperatorState.READY.value: 0, OperatorState.DRAIN.value: 1, OperatorState.MAINT.value: 2}


def effective_operator(server: str, member: str) -> str:
    """The operator state that applies to a member: the server's, unless the member's own is stronger."""
    return server if _STRENGTH.get(server, 0) >= _STRENGTH.get(member, 0) else member


def member_state(server: ServerView, member: MemberView) -> str:
    """One word per grid cell: maint and drain (the operator's choice) before down, init, up."""
    operator = effective_operator(server.operator, member.operator)
    if operator != OperatorState.READY.value:
        return operator
    return member.health


def snapshot_json(snapshot: Snapshot, now: float) -> dict[str, Any]:
    """The Snapshot field for field, plus `time` (so a client can compute rates between two) and each
    member's `state` (so the dashboard, `ctl` and scripts colour a cell the same way)."""
    data = dataclasses.asdict(snapshot)
    data["services"] = list(snapshot.services)
    data["pools"] = {name: list(needs) for name, needs in snapshot.pools.items()}
    data["servers"] = list(data["servers"])
    for server_view, server in zip(snapshot.servers, data["servers"], strict=True):
        for name, member in server["members"].items():
            member["state"] = member_state(server_view, server_view.members[name])
    data["time"] = now
    return data


def event_json(event: Event) -> dict[str, Any]:
    return dataclasses.asdict(event)
