"""The Layer 4 admission core, driven with plain values: slots, the queue, refusals, retries."""

from __future__ import annotations

from casarray.balance.admission import Admission, Verdict
from casarray.balance.algorithm import Picker
from casarray.balance.state import ServerState
from casarray.config.model import Server


def servers(n: int, maxconn: int | None = None) -> list[ServerState]:
    return [
        ServerState(Server(name=f"MB{i}", address=f"10.0.1.{i}", maxconn=maxconn), f"10.0.1.{i}", 443)
        for i in range(1, n + 1)
    ]


def admission(maxconn: int = 2, queue: int = 2, timeout: float = 30.0, retries: int = 2) -> Admission[str]:
    return Admission(maxconn, queue, timeout, retries)


def test_no_eligible_server_is_refused_at_once() -> None:
    a = admission()
    assert a.admit("c1", 0.0) is Verdict.NO_SERVER
    assert a.serving == 0


def test_clients_take_slots_then_wait_then_are_refused() -> None:
    a = admission(maxconn=2, queue=1)
    a.eligible = servers(2)
    assert [a.admit(c, 0.0) for c in ("c1", "c2", "c3", "c4")] == [
        Verdict.SERVE,
        Verdict.SERVE,
        Verdict.QUEUE,
        Verdict.QUEUE_FULL,
    ]
    assert a.serving == 2
    assert a.next_waiting() is None  # no slot free yet
    a.release()
    assert a.next_waiting() == "c3"
    assert a.serving == 2


def test_waiting_clients_are_served_oldest_first_and_refused_past_their_deadline() -> None:
    a = admission(maxconn=1, queue=5, timeout=10.0)
    a.eligible = servers(1)
    assert a.admit("c1", 0.0) is Verdict.SERVE
    for i, client in enumerate(("c2", "c3", "c4")):
        assert a.admit(client, float(i)) is Verdict.QUEUE
    assert a.next_deadline() == 10.0
    assert a.expired(10.5) == ["c2"]
    a.release()
    assert a.next_waiting() == "c3"


def test_a_gone_waiting_client_is_forgotten() -> None:
    a = admission(maxconn=1, queue=5)
    a.eligible = servers(1)
    a.admit("c1", 0.0)
    a.admit("c2", 0.0)
    a.admit("c3", 0.0)
    a.forget("c2")
    a.release()
    assert a.next_waiting() == "c3"


def test_servers_at_their_own_maxconn_make_clients_wait() -> None:
    a = admission(maxconn=10)
    a.eligible = servers(2, maxconn=1)
    for server in a.eligible:
        server.opened()
    assert a.admit("c1", 0.0) is Verdict.QUEUE
    a.eligible[0].closed(0, 0)
    assert a.next_waiting() == "c1"


def test_connect_failures_move_on_to_untried_servers_within_retries() -> None:
    a = admission(retries=1)
    a.eligible = servers(3)
    picker = Picker("roundrobin")
    tried: list[ServerState] = []
    first = a.next_server(picker, "192.0.2.1", tried)
    assert first is not None
    tried.append(first)
    second = a.next_server(picker, "192.0.2.1", tried)
    assert second is not None
    assert second is not first
    tried.append(second)
    assert a.next_server(picker, "192.0.2.1", tried) is None  # retries: 1 spent


def test_source_affinity_tries_the_same_first_server_for_the_same_client() -> None:
    a = admission()
    a.eligible = servers(3)
    picker = Picker("source")
    firsts = {a.next_server(picker, "192.0.2.7", []) for _ in range(5)}
    assert len(firsts) == 1
