import hashlib
import hmac
import math
import os
import subprocess
import sys
from collections import Counter
from typing import get_args

import pytest

from casarray.balance.affinity import AFFINITIES, AffinityCookie, algorithm_name, cookie_secret, source_key
from casarray.balance.algorithm import ALGORITHMS, Picker
from casarray.balance.leastconn import LeastConn
from casarray.balance.queue import WaitQueue
from casarray.balance.rendezvous import Rendezvous, score
from casarray.balance.roundrobin import RoundRobin
from casarray.balance.state import Member, Operator, ServerState
from casarray.config.model import Affinity, Config, MailProtocol, Server
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


# -- the algorithm table and the key rule ---------------------------------------------------------


def test_the_config_lists_the_algorithms_of_the_table() -> None:
    # A new algorithm is a row in balance/algorithm.py plus its name in these lists, nothing else.
    assert _literal_names(Config.model_fields["balance"].annotation) == set(ALGORITHMS)
    assert _literal_names(MailProtocol.model_fields["balance"].annotation) == set(ALGORITHMS)
    assert _literal_names(Affinity.model_fields["mode"].annotation) == set(AFFINITIES)


def _literal_names(annotation: object) -> set[str]:
    """The strings of a Literal, or of the Literals inside an Optional."""
    names: set[str] = set()
    for arg in get_args(annotation):
        if isinstance(arg, str):
            names.add(arg)
        else:
            names |= _literal_names(arg)
    return names


def test_only_the_source_hash_needs_a_key() -> None:
    assert {name for name, kind in ALGORITHMS.items() if kind.needs_key} == {"source"}


@pytest.mark.parametrize(
    ("balance", "affinity", "algorithm"),
    [
        ("roundrobin", "none", "roundrobin"),
        ("leastconn", "none", "leastconn"),
        ("source", "none", "source"),
        ("roundrobin", "source", "source"),  # affinity: source overrides balance
        ("leastconn", "source", "source"),
        ("roundrobin", "cookie", "roundrobin"),  # no (valid) cookie: the balance algorithm chooses
        ("leastconn", "cookie", "leastconn"),
        ("source", "cookie", "source"),
    ],
)
def test_affinity_decides_the_algorithm_and_its_key(balance: str, affinity: str, algorithm: str) -> None:
    assert algorithm_name(balance, affinity) == algorithm
    picker = Picker.of(balance, affinity)
    assert picker.name == algorithm
    assert picker.key("192.0.2.7") == (b"192.0.2.7" if algorithm == "source" else b"")
    assert type(picker.algorithm) is type(ALGORITHMS[algorithm].new())


def test_a_keyed_picker_hashes_the_client_address() -> None:
    pool = servers(1, 1, 1)
    picker = Picker("source")
    for i in range(50):
        address = f"198.51.100.{i}"
        assert picker.pick(pool, address) is Rendezvous().pick(pool, address.encode())
    # different clients land on different servers (an empty key would send them all to one)
    assert len({picker.pick(pool, f"198.51.100.{i}").name for i in range(50)}) == 3


def test_an_unkeyed_picker_ignores_the_address() -> None:
    pool = servers(1, 1)
    picker = Picker("roundrobin")
    assert [picker.pick(pool, "192.0.2.1").name for _ in range(4)] == ["MB1", "MB2", "MB1", "MB2"]


def test_an_unknown_algorithm_is_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match=r"unknown balancing algorithm 'random' \(known: roundrobin, leastconn, source\)"
    ):
        Picker("random")


# -- the affinity cookie --------------------------------------------------------------------------

NAMESPACE = "outlook.alwayshotcafe.com"
SECRET = b"s" * 32
OLD = b"o" * 32


def expected_value(secret: bytes, server: str) -> bytes:
    # The derivation every node and every release must keep: a changed value re-pins every browser.
    mac = hmac.new(secret, b"casarray affinity cookie v1\0" + server.encode(), "sha256")
    return mac.hexdigest()[:32].encode()


def test_cookie_values_are_a_mac_of_each_server_name() -> None:
    cookie = AffinityCookie("CASID", [SECRET], ["MB1", "MB2"])
    assert cookie.name == b"CASID"
    assert cookie.value("MB1") == expected_value(SECRET, "MB1")
    assert len(cookie.value("MB1")) == 32
    assert cookie.value("MB1") != cookie.value("MB2")
    assert cookie.server(cookie.value("MB2")) == "MB2"
    assert cookie.server(None) is None
    other = AffinityCookie("CASID", [b"t" * 32], ["MB1"])
    assert other.value("MB1") != cookie.value("MB1")  # another secret's cookie names nothing here
    assert other.server(cookie.value("MB1")) is None


def test_without_a_secret_file_the_key_comes_from_the_namespace() -> None:
    assert cookie_secret(NAMESPACE) == hashlib.sha256(b"casarray affinity " + NAMESPACE.encode()).digest()
    assert cookie_secret(NAMESPACE) != cookie_secret("mail.example.org")
    with pytest.raises(ValueError, match="at least one secret"):
        AffinityCookie("CASID", [], ["MB1"])


@pytest.mark.parametrize(
    "presented",
    [
        b"0" * 32,  # forged: the right shape
        expected_value(SECRET, "MB1")[:16],  # a prefix of a valid value
        expected_value(SECRET, "MB1").upper(),  # another spelling of it
        expected_value(SECRET, "MB1") + b"0",
        expected_value(OLD, "MB1"),  # a secret no longer accepted
        expected_value(SECRET, "MB3"),  # a server removed from the config, or renamed
        b"MB1",
        b"10.0.1.11",
        b"",
    ],
)
def test_a_value_that_is_not_in_the_table_names_nothing(presented: bytes) -> None:
    assert AffinityCookie("CASID", [SECRET], ["MB1", "MB2"]).server(presented) is None


def test_rotation_the_first_secret_signs_every_one_verifies() -> None:
    rotating = AffinityCookie("CASID", [SECRET, OLD], ["MB1", "MB2"])
    assert rotating.value("MB1") == expected_value(SECRET, "MB1")
    assert rotating.server(expected_value(OLD, "MB2")) == "MB2"  # still accepted...
    resigned = rotating.set_cookie("MB2", expected_value(OLD, "MB2"))  # ...and replaced by the new value
    assert (
        resigned == b"CASID=" + expected_value(SECRET, "MB2") + b"; Path=/; Secure; HttpOnly; SameSite=None"
    )
    retired = AffinityCookie("CASID", [SECRET], ["MB1", "MB2"])
    assert retired.server(expected_value(OLD, "MB2")) is None


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ([(b"Cookie", b"CASID=abc")], b"abc"),
        ([(b"cookie", b"a=1; CASID=abc; b=2")], b"abc"),
        ([(b"COOKIE", b"a=1;CASID=abc")], b"abc"),
        ([(b"Cookie", b"a=1"), (b"Cookie", b"CASID=abc")], b"abc"),  # several Cookie fields
        ([(b"Cookie", b"CASID=first; CASID=second")], b"first"),
        ([(b"Cookie", b"XCASID=abc; CASIDX=abc")], None),  # only the exact name
        ([(b"Set-Cookie", b"CASID=abc")], None),
        ([], None),
    ],
)
def test_cookie_found_in_the_request_headers(headers: list[tuple[bytes, bytes]], found: bytes | None) -> None:
    assert AffinityCookie("CASID", [SECRET], ["MB1"]).find(headers) == found


def test_set_cookie_only_when_the_client_does_not_already_hold_it() -> None:
    cookie = AffinityCookie("CASID", [SECRET], ["MB1", "MB2"])
    value = cookie.value("MB1")
    assert cookie.set_cookie("MB1", None) == b"CASID=" + value + b"; Path=/; Secure; HttpOnly; SameSite=None"
    assert cookie.set_cookie("MB1", cookie.value("MB2")) == cookie.set_cookie("MB1", None)
    assert cookie.set_cookie("MB1", value) is None


# -- the same choice on every node -----------------------------------------------------------------


def expected_score(key: bytes, name: str, weight: int) -> float:
    # The formula every node and every release must keep (a change moves clients between servers).
    person = hashlib.blake2b(name.encode(), digest_size=16).digest()
    u = (int.from_bytes(hashlib.blake2b(key, digest_size=8, person=person).digest(), "big") + 0.5) / 2.0**64
    return -weight / math.log(u)


def test_the_rendezvous_score_is_a_function_of_key_name_and_weight_only() -> None:
    for i in range(50):
        key = f"198.51.100.{i}".encode()
        assert score(key, "MB1", 3) == expected_score(key, "MB1", 3)


def test_servers_whose_names_share_16_bytes_still_share_the_clients() -> None:
    # BLAKE2b's personalisation holds 16 bytes: the name's first 16 alone once gave both the same score,
    # and the first in the config took every client.
    pool = [
        ServerState(Server(name=name, address=address), address, 443)
        for name, address in (("EXCHANGE-MBX-PROD01", "10.0.1.11"), ("EXCHANGE-MBX-PROD02", "10.0.1.12"))
    ]
    counts = Counter(Rendezvous().pick(pool, f"192.0.2.{i}".encode()).name for i in range(200))
    assert set(counts) == {"EXCHANGE-MBX-PROD01", "EXCHANGE-MBX-PROD02"}
    assert min(counts.values()) > 60


def test_the_order_of_the_servers_does_not_change_the_choice() -> None:
    pool = servers(1, 2, 1, 1, 3)
    reordered = list(reversed(pool))
    for i in range(500):
        key = f"203.0.113.{i % 256}:{i}".encode()
        assert Rendezvous().pick(pool, key) is Rendezvous().pick(reordered, key)


def test_the_choice_is_the_same_in_another_process() -> None:
    # Another interpreter with another hash seed stands in for another worker or another node.
    addresses = [f"198.51.100.{i}" for i in range(200)]
    program = (
        "import sys\n"
        "from casarray.balance.algorithm import Picker\n"
        "from casarray.balance.state import ServerState\n"
        "from casarray.config.model import Server\n"
        "pool = [ServerState(Server(name=f'MB{i}', address=f'10.0.1.{i}', weight=i % 3 + 1), '', 443)"
        " for i in range(1, 6)]\n"
        "picker = Picker.of('roundrobin', 'source')\n"
        "print(' '.join(picker.pick(pool, a).name for a in sys.argv[1:]))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", program, *addresses],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.split()
    pool = [
        ServerState(Server(name=f"MB{i}", address=f"10.0.1.{i}", weight=i % 3 + 1), "", 443)
        for i in range(1, 6)
    ]
    picker = Picker.of("roundrobin", "source")
    here = [picker.pick(pool, a).name for a in addresses]
    assert found == here
    assert len(set(here)) == 5


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", b"192.0.2.7"),
        ("::ffff:192.0.2.7", b"192.0.2.7"),  # an IPv4 client seen by a node listening on ::
        ("2001:db8::7", b"2001:db8::7"),
        ("::ffff:0:7", b"::ffff:0:7"),  # not an IPv4-mapped address
        ("fe80::7%eth0", b"fe80::7"),  # the zone is the receiving node's interface
        ("fe80::7%3", b"fe80::7"),
    ],
)
def test_the_source_key_is_the_client_address_in_one_form(address: str, key: bytes) -> None:
    assert source_key(address) == key
    assert Picker("source").key(address) == key


def test_a_mapped_ipv4_client_lands_where_the_plain_address_does() -> None:
    pool = servers(1, 1, 1)
    picker = Picker("source")
    for i in range(50):
        assert picker.pick(pool, f"::ffff:198.51.100.{i}") is picker.pick(pool, f"198.51.100.{i}")


def test_nodes_that_disagree_on_one_server_disagree_only_on_its_clients() -> None:
    # Node A sees MB3 down, node B sees it up: every client whose first choice is not MB3 lands on the
    # same server through either node; MB3's own clients go to their second choice through A.
    pool = servers(1, 1, 1, 1)
    picker = Picker("source")
    node_b = {f"192.0.2.{i}": picker.pick(pool, f"192.0.2.{i}").name for i in range(256)}
    node_a = {a: picker.pick([s for s in pool if s.name != "MB3"], a).name for a in node_b}
    differ = {a for a in node_b if node_a[a] != node_b[a]}
    assert differ == {a for a, name in node_b.items() if name == "MB3"}
    assert 0 < len(differ) < 256 // 2
