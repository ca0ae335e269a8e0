"""Idle upstream connections over real sockets: simulated Exchange servers doing real NTLM (pyspnego
acceptor) and Basic behind a `casarray run` process, requests-ntlm and requests clients.

An upstream connection that carried NTLM stays with its client across any idle time; one that carried
only Basic or anonymous requests is closed once its client has been idle for timeouts.upstream_release,
and the client's next request gets a new one. The simulated servers record every request with the
address:port of the connection it came on (the balancer's side), so which connection carried what, and
for whom, is read off the servers."""

from __future__ import annotations

import concurrent.futures
import functools
from collections import defaultdict
from dataclasses import dataclass, field

import requests
from requests.auth import HTTPBasicAuth
from requests_ntlm import HttpNtlmAuth

from casarray.lab.sim import RecordedRequest
from tests.integration.conftest import USERS, L7Lab, session
from tests.support import free_port, wait_until

EWS = "/EWS/Exchange.asmx"
EAS = "/Microsoft-Server-ActiveSync"
ANONYMOUS = "/owa/healthcheck.htm"  # the one path an NTLM server answers without a challenge
CLIENT_ID = "X-Test-Client"


def recorded(lab: L7Lab) -> list[tuple[str, RecordedRequest]]:
    """(server, request) for every request a client of this test sent, oldest first per server."""
    return [
        (name, r)
        for name, sim in lab.sims.items()
        for r in list(sim.state.requests)
        if any(k == CLIENT_ID for k, _ in r.headers)
    ]


def client_of(request: RecordedRequest) -> str:
    return next(v for k, v in request.headers if k == CLIENT_ID)


def open_upstreams(lab: L7Lab) -> int:
    return sum(sim.state.connections_open for sim in lab.sims.values())


def upstream_releases(admin_port: int) -> int:
    status = requests.get(f"http://127.0.0.1:{admin_port}/api/status", timeout=10).json()
    return int(status["upstream_releases"])


def releases_are(admin_port: int, count: int) -> bool:
    return upstream_releases(admin_port) == count


def release_lab(lab: L7Lab, servers: int, release: str) -> tuple[int, int]:
    """Sims with NTLM and Basic, a balancer releasing after `release`, no health checks (so every
    connection a sim sees comes from a client of the test); its HTTPS and admin ports."""
    lab.start_sims(servers, ntlm=True)
    admin_port = free_port()
    _, port = lab.balancer(
        f"timeouts: {{upstream_release: {release}}}\n"
        f"admin: {{listen: '127.0.0.1:{admin_port}'}}\n"
        "log: {level: debug}\n",
        health="{enabled: false}",
    )
    return port, admin_port


@dataclass
class Client:
    """One client connection to the balancer (a requests session keeps it alive) and how it
    authenticates: "ntlm" (once, then the connection is authenticated), "basic" (every request) or
    "anonymous"."""

    name: str
    kind: str
    user: str
    http: requests.Session
    answers: list[str] = field(default_factory=list)

    def request(self, port: int) -> None:
        path = {"ntlm": EWS, "basic": EAS, "anonymous": ANONYMOUS}[self.kind]
        if self.kind == "basic":
            self.http.auth = HTTPBasicAuth(f"CORP\\{self.user}", f"Pass-{self.user}")
        elif self.kind == "ntlm" and not self.answers:
            self.http.auth = HttpNtlmAuth(f"CORP\\{self.user}", f"Pass-{self.user}")
        response = self.http.get(
            f"https://127.0.0.1:{port}{path}", headers={CLIENT_ID: self.name}, timeout=30
        )
        assert response.status_code == 200, (self.name, response.status_code, response.text[:200])
        if self.kind == "ntlm":
            # Later requests carry no Authorization: IIS keeps the user on the connection, so an
            # answer as this user proves the request rode the connection that authenticated.
            self.http.auth = None
        self.answers.append(response.text)


def test_an_ntlm_client_keeps_its_upstream_a_basic_one_gets_a_new_one(l7: L7Lab) -> None:
    port, admin_port = release_lab(l7, 1, "1s")
    sim = l7.sims["MB1"]
    ntlm = Client("ntlm", "ntlm", "user01", session(l7, port))
    basic = Client("basic", "basic", "user02", session(l7, port))
    with ntlm.http, basic.http:
        ntlm.request(port)  # 401 challenge, NTLM handshake, 200: private from the challenge on
        basic.request(port)  # Basic on every request: nothing is kept on the connection
        assert open_upstreams(l7) == 2
        # Both connections idle; the NTLM one went idle first, so when the sweep releases the Basic
        # one, the NTLM one had been idle longer than upstream_release too.
        wait_until(lambda: upstream_releases(admin_port) == 1, 30, what="the Basic upstream released")
        wait_until(lambda: open_upstreams(l7) == 1, 10, what="the released connection closed at the server")
        ntlm.request(port)
        basic.request(port)
    assert "user=CORP\\user01" in ntlm.answers[1]  # no Authorization sent: the connection remembered
    assert "user=CORP\\user02" in basic.answers[1]
    peers: dict[str, list[str]] = defaultdict(list)
    for _, r in recorded(l7):
        peers[client_of(r)].append(r.peer)
    assert len(set(peers["ntlm"])) == 1  # handshake and both requests on one upstream connection
    assert len(peers["basic"]) == 2
    assert peers["basic"][0] != peers["basic"][1]  # released, then a new one for the next request
    assert sim.state.connections_total == 3
    assert upstream_releases(admin_port) == 1  # the NTLM one was never released


def test_interleaved_clients_never_share_an_upstream_connection(l7: L7Lab) -> None:
    """Eighteen client connections — NTLM, Basic and anonymous — over three servers, in rounds: each
    round every client sends a request at once, then all sit idle until every releasable upstream is
    released. Reopened connections go wherever round robin sends them (affinity none), so servers see
    connections opened, closed and opened again for many clients at once; each one must carry the
    requests of one client only."""
    port, admin_port = release_lab(l7, 3, "500ms")
    clients = [
        Client(f"{kind}-{i}", kind, USERS[n], session(l7, port))
        for n, (kind, i) in enumerate((kind, i) for kind in ("ntlm", "basic", "anonymous") for i in range(6))
    ]
    releasable = sum(c.kind != "ntlm" for c in clients)
    rounds = 4
    try:
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            for n in range(1, rounds + 1):
                list(pool.map(lambda c: c.request(port), clients))
                wait_until(
                    functools.partial(releases_are, admin_port, releasable * n),
                    60,
                    what=f"round {n}: every Basic and anonymous upstream released",
                )
                wait_until(lambda: open_upstreams(l7) == 6, 20, what="only the six NTLM upstreams still open")
    finally:
        for c in clients:
            c.http.close()

    by_connection: dict[tuple[str, str], set[str]] = defaultdict(set)
    connections_of: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for server, r in recorded(l7):
        by_connection[(server, r.peer)].add(client_of(r))
        connections_of[client_of(r)].add((server, r.peer))
    shared = {conn: names for conn, names in by_connection.items() if len(names) > 1}
    assert not shared, f"upstream connections that carried several clients' requests: {shared}"
    for c in clients:
        if c.kind == "ntlm":
            assert len(connections_of[c.name]) == 1, c.name  # pinned for life
            assert all(f"user=CORP\\{c.user}" in a for a in c.answers), c.name
        else:
            assert len(connections_of[c.name]) == rounds, c.name  # a new one every round
            if c.kind == "basic":
                assert all(f"user=CORP\\{c.user}" in a for a in c.answers), c.name
    assert len({server for server, _ in by_connection}) == 3  # reopened connections spread over servers
