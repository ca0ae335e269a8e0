from collections import Counter

from casarray.balance.leastconn import LeastConn
from casarray.balance.queue import WaitQueue
from casarray.balance.rendezvous import Rendezvous
from casarray.balance.roundrobin import RoundRobin
from casarray.balance.state import Member, Operator, ServerState
from casarray.config.model import Server
from casarray.health.state import CheckResult, HealthState


def servers(*weights: int) -> list[ServerState]:
    return [
        ServerState(Server(name=f"MB{i + 1}", address=f"10.0.1.{i + 11}", weight=w), f"10.0.1.{i + 11}", 443)
        for i, w in enumerate(weights)
    ]


def test_rendezvous_removing_one_of_five_moves_only_its_keys() -> None:
    pool = servers(1, 1, 1, 1, 1)
    algo = Rendezvous()
    keys = [f"192.0.2.{i // 256}.{i % 256}".encode() for i in range(10_000)]
    before = {k: algo.pick(pool, k).name for k in keys}
    removed = pool.pop(2)
    after = {k: algo.pick(pool, k).name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert len(moved) <= 0.25 * len(keys)
    assert all(before[k] == removed.name for k in moved)  # only the removed server's clients move
    assert 0.15 * len(keys) < len(moved)  # and they were about a fifth
    assert set(Counter(before.values())) == {f"MB{i}" for i in range(1, 6)}


def test_rendezvous_respects_weights() -> None:
    pool = servers(3, 1)
    algo = Rendezvous()
    counts = Counter(algo.pick(pool, str(i).encode()).name for i in range(8000))
    assert 0.70 < counts["MB1"] / 8000 < 0.80


def test_smooth_weighted_roundrobin_interleaves() -> None:
    pool = servers(5, 1, 1)
    algo = RoundRobin()
    picks = [algo.pick(pool, b"").name for _ in range(7)]
    assert Counter(picks) == {"MB1": 5, "MB2": 1, "MB3": 1}
    assert picks[:3] != ["MB1", "MB1", "MB1"]


def test_roundrobin_equal_weights_cycles() -> None:
    pool = servers(1, 1, 1)
    algo = RoundRobin()
    assert [algo.pick(pool, b"").name for _ in range(6)] == ["MB1", "MB2", "MB3"] * 2


def test_leastconn_prefers_the_least_loaded_per_weight() -> None:
    pool = servers(1, 1, 2)
    pool[0].active, pool[1].active, pool[2].active = 3, 1, 4
    assert LeastConn().pick(pool, b"").name == "MB2"
    pool[1].active = 5
    assert LeastConn().pick(pool, b"").name == "MB3"  # 4/2 beats 3/1


def test_leastconn_spreads_ties() -> None:
    pool = servers(1, 1, 1)
    algo = LeastConn()
    assert len({algo.pick(pool, b"").name for _ in range(3)}) == 3


def test_server_serves_all_required_services_only() -> None:
    (server,) = servers(1)
    for name in ("owa", "ews"):
        server.members[name] = Member(server, name, HealthState(2, 2))
        server.members[name].health.record(CheckResult(True, "L7OK", "", 0.0), 0.0)
    assert server.serves_all(("owa", "ews"))
    server.members["ews"].health.record(CheckResult(False, "L7STS", "HTTP 503", 0.0), 1.0)
    server.members["ews"].health.record(CheckResult(False, "L7STS", "HTTP 503", 0.0), 2.0)
    assert not server.serves_all(("owa", "ews"))
    assert server.serves_all(("owa",))
    assert server.why_out(("owa", "ews")) == "ews down"
    server.operator = Operator.DRAIN
    assert server.why_out(("owa",)) == "operator state drain"


def test_maxconn_marks_a_server_full() -> None:
    server = ServerState(Server(name="MB1", address="x", maxconn=2), "x", 443)
    server.opened()
    assert not server.full
    server.opened()
    assert server.full
    assert (server.peak, server.total) == (2, 2)
    server.closed(10, 20)
    assert not server.full
    assert (server.bytes_in, server.bytes_out) == (10, 20)


def test_queue_is_fifo_bounded_and_expires() -> None:
    queue: WaitQueue[str] = WaitQueue(2)
    assert queue.push("a", deadline=10.0)
    assert queue.push("b", deadline=11.0)
    assert not queue.push("c", deadline=12.0)  # full
    assert queue.next_deadline() == 10.0
    assert queue.expired(10.5) == ["a"]
    assert queue.pop() == "b"
    assert queue.pop() is None
    queue.push("d", 20.0)
    queue.push("e", 20.0)
    assert queue.remove("d")
    assert not queue.remove("d")
    assert len(queue) == 1
