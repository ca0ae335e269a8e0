"""The node verdict of `ctl health` (health/node.py) on plain status data."""

from __future__ import annotations

from typing import Any

import pytest

from casarray.health.node import judge, required_pools


def status(pools: dict[str, list[str]], servers: dict[str, dict[str, bool]]) -> dict[str, Any]:
    """An /api/status answer cut to what the verdict reads: pools, and each member's `available`."""
    return {
        "pools": pools,
        "servers": [
            {"name": name, "members": {service: {"available": up} for service, up in members.items()}}
            for name, members in servers.items()
        ],
    }


L7 = {"owa": ["owa"], "ews": ["ews"], "imap:993": ["imap:993"]}


def test_every_pool_with_a_server_is_healthy_and_names_the_thinnest() -> None:
    verdict = judge(
        status(
            L7,
            {
                "MB1": {"owa": True, "ews": False, "imap:993": True},
                "MB2": {"owa": True, "ews": True, "imap:993": True},
            },
        )
    )
    assert verdict.ok
    assert verdict.reason == "owa, ews, imap:993: each has a server (fewest: ews 1 of 2)"
    assert verdict.serving == {"owa": ("MB1", "MB2"), "ews": ("MB2",), "imap:993": ("MB1", "MB2")}


def test_a_pool_without_a_server_fails_unless_another_is_asked_for() -> None:
    snap = status(L7, {"MB1": {"owa": True, "ews": False, "imap:993": False}})
    verdict = judge(snap)
    assert not verdict.ok
    assert verdict.reason == "no server takes new traffic for ews, imap:993 (down, drained or in maintenance)"
    assert judge(snap, ["OWA"]).ok
    assert not judge(snap, ["imap:993"]).ok


def test_l4_needs_one_server_with_every_required_service() -> None:
    pools = {"l4": ["owa", "ews"], "pop3:110": ["pop3:110"]}
    crossed = status(pools, {"MB1": {"owa": True, "ews": False}, "MB2": {"owa": False, "ews": True}})
    # Every service is up somewhere, but no server has both: l4 sends no connection anywhere.
    verdict = judge(crossed, ["l4"])
    assert not verdict.ok
    assert verdict.serving == {"l4": ()}
    # A service name selects the pools that need it.
    assert required_pools(pools, ["ews"]) == ["l4"]
    assert judge(status(pools, {"MB1": {"owa": True, "ews": True}}), ["ews"]).ok


def test_a_member_missing_from_a_server_does_not_count_as_available() -> None:
    assert not judge(status({"ews": ["ews"]}, {"MB1": {"owa": True}})).ok


def test_unknown_names_and_answers_that_are_no_status_are_errors() -> None:
    with pytest.raises(ValueError, match=r"no pool or service 'nope' \(pools: owa, ews, imap:993\)"):
        judge(status(L7, {}), ["nope"])
    with pytest.raises(ValueError, match="not a casarray status answer"):
        judge({"servers": []})
    with pytest.raises(ValueError, match="names no pool"):
        judge({"pools": {}, "servers": []})


def test_many_pools_are_summed_up_in_one_short_line() -> None:
    pools = {name: [name] for name in ("owa", "ecp", "ews", "mapi", "rpc", "oab")}
    verdict = judge(status(pools, {"MB1": dict.fromkeys(pools, False)}))
    assert (
        verdict.reason
        == "no server takes new traffic for 6 pools (owa, ecp, ews, …) (down, drained or in maintenance)"
    )
