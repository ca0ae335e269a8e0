"""The log of pool changes (engine/pools.py): one line per change, none when nothing changed."""

import logging

import pytest

from casarray.balance.state import Member, Operator, ServerState
from casarray.config.model import Server
from casarray.engine.pools import ServerPoolLog, ServicePoolLog
from casarray.health.state import HealthState


def _pool(*names: str, services: tuple[str, ...] = ("owa", "ews")) -> list[ServerState]:
    states = []
    for i, name in enumerate(names, 1):
        state = ServerState(Server(name=name, address=f"192.0.2.{i}"), f"192.0.2.{i}", 443)
        for service in services:
            state.members[service] = Member(state, service, HealthState(2, 3))
        states.append(state)
    return states


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [f"{r.levelname} {r.getMessage()}" for r in caplog.records]
    caplog.clear()
    return lines


def test_l4_pool_joins_leaves_and_empties(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    mb1, mb2 = pool = _pool("MB1", "MB2")
    log = ServerPoolLog("l4", pool, ("owa", "ews"))
    log.refresh()
    assert _lines(caplog) == []  # nothing checked yet: nothing joins, nothing "leaves"
    for state in pool:
        for member in state.members.values():
            member.health.force_up(0.0)
    log.refresh()
    assert _lines(caplog) == [
        "INFO server MB1 joins the l4 pool (2 of 2 up)",
        "INFO server MB2 joins the l4 pool (2 of 2 up)",
    ]
    log.refresh()
    assert _lines(caplog) == []
    mb2.members["ews"].health.up = False
    log.refresh()
    assert _lines(caplog) == ["WARNING server MB2 leaves the l4 pool: ews down (1 of 2 up)"]
    mb1.operator = Operator.MAINT
    log.refresh()
    assert _lines(caplog) == [
        "WARNING server MB1 leaves the l4 pool: operator state maint (0 of 2 up)",
        "ERROR no server is up: new connections will be closed at once",
    ]


def test_l7_service_loses_and_regains_its_last_member(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    mb1, mb2 = pool = _pool("MB1", "MB2")
    log = ServicePoolLog(["owa", "ews"], pool)
    mb1.members["owa"].health.force_up(0.0)
    log.refresh()
    assert _lines(caplog) == ["ERROR no server is available for ews: its requests get 503"]
    mb2.members["ews"].health.force_up(0.0)
    log.refresh()
    log.refresh()
    assert _lines(caplog) == ["INFO ews is available again"]
