"""The counters value (engine/counters.py): one `+` for pools and for workers, and its JSON round trip."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casarray.balance.state import Member, ServerState
from casarray.config.model import Server
from casarray.engine.counters import Counters, ServerCounters
from casarray.health.state import HealthState

small = st.integers(min_value=0, max_value=10**12)
names = st.sampled_from(["ex1", "ex2", "ex3"])
services = st.sampled_from(["owa", "ews", "mapi", "imap:993"])
server_counters = st.builds(
    ServerCounters, small, small, small, small, small, small, st.dictionaries(services, small, max_size=3)
)
counters = st.builds(
    Counters,
    small,
    small,
    small,
    small,
    small,
    st.dictionaries(services, st.dictionaries(st.sampled_from(["2xx", "4xx", "5xx"]), small), max_size=3),
    st.dictionaries(names, server_counters, max_size=3),
    small,
)


def _state(name: str, port: int, **values: int) -> ServerState:
    state = ServerState(Server(name=name, address="192.0.2.1"), "192.0.2.1", port)
    for key, value in values.items():
        setattr(state, key, value)
    return state


def test_a_server_in_two_pools_is_summed_under_its_name() -> None:
    https = _state("ex1", 443, active=2, peak=3, total=10, bytes_in=100, bytes_out=1000, connect_errors=1)
    https.members["owa"] = Member(https, "owa", HealthState(2, 3))
    https.members["owa"].requests = 7
    imap = _state("ex1", 993, active=1, peak=1, total=4, bytes_in=5, bytes_out=6)
    other = _state("ex2", 443, total=1)
    got = Counters.of_servers([https, imap, other])
    assert got.servers == {
        "ex1": ServerCounters(3, 4, 14, 105, 1006, 1, {"owa": 7}),
        "ex2": ServerCounters(total=1, requests={}),
    }


def test_workers_add_up_field_by_field() -> None:
    a = Counters(
        2, 10, 1, 0, 1, {"owa": {"2xx": 5}}, {"ex1": ServerCounters(1, 2, 3, 4, 5, 6, {"owa": 5})}, 7
    )
    b = Counters(
        1, 5, 2, 3, 0, {"owa": {"2xx": 1, "5xx": 2}, "ews": {"2xx": 1}}, {"ex2": ServerCounters(total=9)}, 2
    )
    total = a + b + Counters()
    assert total == Counters(
        3,
        15,
        3,
        3,
        1,
        {"owa": {"2xx": 6, "5xx": 2}, "ews": {"2xx": 1}},
        {"ex1": ServerCounters(1, 2, 3, 4, 5, 6, {"owa": 5}), "ex2": ServerCounters(total=9)},
        9,
    )
    assert a == Counters(
        2, 10, 1, 0, 1, {"owa": {"2xx": 5}}, {"ex1": ServerCounters(1, 2, 3, 4, 5, 6, {"owa": 5})}, 7
    )


def test_a_gone_worker_keeps_its_totals_not_its_gauges() -> None:
    worker = Counters(
        4, 9, 1, 2, 0, {"owa": {"2xx": 3}}, {"ex1": ServerCounters(2, 5, 9, 1, 1, 0, {"owa": 3})}, 6
    )
    assert worker.ended() == Counters(
        0, 9, 1, 0, 0, {"owa": {"2xx": 3}}, {"ex1": ServerCounters(0, 0, 9, 1, 1, 0, {"owa": 3})}, 6
    )


@given(counters, counters, counters)
def test_addition_is_associative_and_commutative(a: Counters, b: Counters, c: Counters) -> None:
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert a + Counters() == a


@given(counters)
def test_json_round_trip(value: Counters) -> None:
    assert Counters.from_json(json.loads(json.dumps(value.to_json()))) == value


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"clients": "3"},
        {"clients": True},
        {"servers": {"ex1": {"total": 1.5}}},
        {"requests": {"owa": {"2xx": None}}},
        {"requests": {"owa": []}},
    ],
)
def test_malformed_json_is_refused(data: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        Counters.from_json(data)
