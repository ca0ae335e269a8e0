"""The admin API over real loopback sockets, on a fake Control: auth, errors, changes, stream, page."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from contextlib import ExitStack

import httpx
import pytest

from casarray.engine.control import Event, OperatorState, Setting
from casarray.errors import ConfigError
from tests.support import LoopThread
from tests.unit.admin.conftest import TOKEN, Running

Start = Callable[..., Running]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(running: Running) -> httpx.Client:
    return httpx.Client(base_url=running.url, timeout=5, trust_env=False)


def test_reads_on_loopback_need_no_token(start_admin: Start) -> None:
    running = start_admin()
    with client(running) as http:
        resp = http.get("/api/status")
        assert resp.status_code == 200
        data = resp.json()
        assert [s["name"] for s in data["servers"]] == ["MB1", "MB2"]
        assert data["servers"][0]["members"]["ews"]["state"] == "up"
        assert abs(data["time"] - time.time()) < 5
        assert http.get("/api/events").json()["events"] == []
        assert http.get("/metrics").status_code == 200
        assert http.get("/api/openapi.json").json()["openapi"] == "3.1.0"


def test_changes_need_the_token(start_admin: Start) -> None:
    running = start_admin()
    with client(running) as http:
        missing = http.post("/api/servers/MB1/drain")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="casarray"'
        assert "token is required" in missing.json()["error"]
        wrong = http.post("/api/servers/MB1/drain", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert http.post("/api/reload").status_code == 401
        assert running.control.calls == []
        ok = http.post("/api/servers/mb1/drain", headers=AUTH)
        assert ok.status_code == 200
        assert ok.json() == {
            "server": "MB1",
            "service": None,
            "state": "drain",
            "reason": "",
            "by": "api from 127.0.0.1",
            "outcome": "MB1: drain",
        }
        assert running.control.calls == [("MB1", None, OperatorState.DRAIN)]
        member = http.post("/api/servers/MB2/services/EWS/maint", headers=AUTH)
        assert member.json() == {
            "server": "MB2",
            "service": "ews",
            "state": "maint",
            "reason": "",
            "by": "api from 127.0.0.1",
            "outcome": "MB2/ews: maint",
        }
        status = http.get("/api/status").json()
        assert status["servers"][0]["operator"] == "drain"
        assert status["servers"][1]["members"]["ews"]["state"] == "maint"


def test_beyond_loopback_every_request_needs_the_token(start_admin: Start) -> None:
    running = start_admin(loopback=False)
    with client(running) as http:
        for path in ("/api/status", "/api/events", "/metrics", "/api/openapi.json", "/api/stream", "/nope"):
            assert http.get(path).status_code == 401, path
        assert http.get("/api/status", headers=AUTH).status_code == 200
        assert http.post("/api/servers/MB1/maint", headers=AUTH).status_code == 200
        page = http.get("/")  # the page holds no data: it asks for the token for its API calls
        assert page.status_code == 200


def test_beyond_loopback_without_a_token_file_is_locked(start_admin: Start) -> None:
    running = start_admin(loopback=False, token=None)
    with client(running) as http:
        for resp in (http.get("/api/status"), http.post("/api/servers/MB1/drain"), http.get("/metrics")):
            assert resp.status_code == 403
            assert "admin.token_file is not set" in resp.json()["error"]
    assert running.control.calls == []


def test_loopback_without_a_token_file_allows_local_changes_but_not_browsers_elsewhere(
    start_admin: Start,
) -> None:
    running = start_admin(token=None)
    with client(running) as http:
        assert http.post("/api/servers/MB1/drain").status_code == 200
        csrf = http.post("/api/servers/MB1/maint", headers={"Origin": "https://evil.example.com"})
        assert csrf.status_code == 403
        assert "cross-origin" in csrf.json()["error"]
        rebinding = http.get("/api/status", headers={"Host": f"evil.example.com:{running.server.port}"})
        assert rebinding.status_code == 403
        same_origin = http.post("/api/servers/MB1/ready", headers={"Origin": running.url})
        assert same_origin.status_code == 200
    assert [c[2] for c in running.control.calls] == [OperatorState.DRAIN, OperatorState.READY]


def test_unknown_names_are_named(start_admin: Start) -> None:
    running = start_admin()
    with client(running) as http:
        server = http.post("/api/servers/MB9/drain", headers=AUTH)
        assert server.status_code == 404
        assert server.json() == {"error": "no server 'MB9' (servers: MB1, MB2)"}
        service = http.post("/api/servers/MB1/services/imap/drain", headers=AUTH)
        assert service.status_code == 404
        assert service.json()["error"] == "no service 'imap' (services: owa, ews)"
        state = http.post("/api/servers/MB1/offline", headers=AUTH)
        assert state.status_code == 400
        assert state.json() == {
            "error": "unknown state 'offline': expected one of ready, drain, maint",
            "expected": ["ready", "drain", "maint"],
        }
        since = http.get("/api/events?since=yesterday")
        assert since.status_code == 400
        assert "since" in since.json()["error"]
        nothing = http.get("/api/nothing")
        assert nothing.status_code == 404
        assert nothing.json()["error"] == "no endpoint /api/nothing (see /api/openapi.json)"
        method = http.delete("/api/status", headers=AUTH)
        assert method.status_code == 405
        assert method.json()["error"].startswith("method DELETE not allowed on /api/status")
    assert running.control.calls == []


def test_reload_outcome_and_refusal(start_admin: Start) -> None:
    running = start_admin()
    with client(running) as http:
        ok = http.post("/api/reload", headers=AUTH)
        assert ok.json() == {"outcome": "reloaded test.yaml: generation 2 serving"}
        running.control.reload_error = ConfigError("test.yaml:3: servers: expected a list\ntest.yaml:9: boom")
        refused = http.post("/api/reload", headers=AUTH)
        assert refused.status_code == 409
        body = refused.json()
        assert body["error"].startswith("reload refused, the running config keeps serving: test.yaml:3")
        assert body["problems"] == ["test.yaml:3: servers: expected a list", "test.yaml:9: boom"]


def test_a_reload_fault_is_json_and_logged(start_admin: Start, caplog: pytest.LogCaptureFixture) -> None:
    running = start_admin()
    running.control.reload_error = RuntimeError("boom")  # type: ignore[assignment]
    with client(running) as http:
        failed = http.post("/api/reload", headers=AUTH)
    assert failed.status_code == 500
    assert failed.json() == {"error": "reload failed: RuntimeError: boom (see the balancer's log)"}
    assert [r.getMessage() for r in caplog.records if r.name == "casarray.admin"][
        -1
    ] == "admin: reload failed"


def test_events_since(start_admin: Start) -> None:
    running = start_admin()
    running.control.log = [
        Event(100.0, "MB1", "ews", "up", "down", "L7STS", "HTTP 503"),
        Event(200.0, "MB1", "ews", "down", "up", "L7OK", "HTTP 200"),
    ]
    with client(running) as http:
        assert len(http.get("/api/events").json()["events"]) == 2
        newer = http.get("/api/events", params={"since": "150"}).json()["events"]
        assert newer == [
            {
                "time": 200.0,
                "server": "MB1",
                "service": "ews",
                "old": "down",
                "new": "up",
                "code": "L7OK",
                "reason": "HTTP 200",
            }
        ]


def test_stream_pushes_snapshots_and_events_and_ends_on_close(
    start_admin: Start, loop_thread: LoopThread
) -> None:
    running = start_admin(interval=0.1)
    running.control.log = [Event(100.0, "MB1", "owa", "init", "up", "L7OK", "HTTP 200")]
    kinds: list[str] = []
    changed = False
    with client(running) as http, http.stream("GET", "/api/stream") as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        started = time.monotonic()
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kinds.append(line.split(":", 1)[1].strip())
                if kinds[-1] == "snapshot" and not changed:
                    running.control.set_operator("MB2", None, OperatorState.MAINT)
                    changed = True
            if kinds.count("snapshot") >= 3:
                break
        assert time.monotonic() - started < 3
        start = time.monotonic()
        loop_thread.run(running.server.close())  # an open stream must not hold the shutdown
        assert time.monotonic() - start < 2
    assert kinds[:2] == ["event", "snapshot"]  # the recent history first, then the state
    assert kinds.count("event") == 2  # the maint change arrived as its own event


def test_event_streams_are_capped_and_the_refusals_logged(
    start_admin: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # Every stream builds a snapshot per interval on the balancer's own loop: 200 of them slowed
    # client traffic to seconds. admin.max_streams caps them; beyond it 503 and a log line.
    running = start_admin(interval=0.1, max_streams=2)
    with ExitStack() as streams:
        http = streams.enter_context(client(running))
        readers = []  # kept: dropping a line iterator closes its connection
        for _ in range(2):
            stream = streams.enter_context(http.stream("GET", "/api/stream"))
            assert stream.status_code == 200
            readers.append(stream.iter_lines())
            next(readers[-1])  # open and served
        with caplog.at_level(logging.WARNING, logger="casarray.admin"):
            for _ in range(5):
                with client(running) as other:
                    busy = other.get("/api/stream")
                    assert busy.status_code == 503
                    assert busy.headers["Retry-After"] == "10"
                    assert "admin.max_streams: 2" in busy.json()["error"]
            with client(running) as other:
                assert other.head("/api/stream").status_code == 200  # headers only: not a stream
                assert other.get("/api/status").status_code == 200  # polling still works
        lines = [r.getMessage() for r in caplog.records if "/api/stream" in r.getMessage()]
        assert len(lines) == 1  # the first in full; the other four go into one count line
        assert lines[0].startswith("admin: 503 for GET /api/stream from 127.0.0.1")
        assert running.server.api.streams == 2
    # Both streams closed by their clients: the slots come back.
    deadline = time.monotonic() + 5
    while running.server.api.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    with client(running) as http, http.stream("GET", "/api/stream") as stream:
        assert stream.status_code == 200


def test_dashboard_page_is_self_contained_and_locked_down(start_admin: Start) -> None:
    running = start_admin()
    with client(running) as http:
        page = http.get("/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert (
        re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text) is None
    )  # nothing fetched elsewhere
    assert "/api/stream" in page.text


@pytest.mark.parametrize("path", ["/api/status", "/metrics", "/api/stream"])
def test_head_requests_work(start_admin: Start, path: str) -> None:
    running = start_admin()
    with client(running) as http:
        assert http.head(path).status_code == 200


def test_an_operator_change_carries_its_reason_and_who(start_admin: Start) -> None:
    running = start_admin(token=None)
    with httpx.Client(base_url=running.url, trust_env=False, timeout=5) as http:
        answer = http.post("/api/servers/MB2/drain", json={"reason": "CU14\nforged", "by": "alice"})
        assert answer.status_code == 200
        assert (answer.json()["reason"], answer.json()["by"]) == ("CU14 forged", "alice from 127.0.0.1")
        assert running.control.notes == [("CU14 forged", "alice from 127.0.0.1")]
        status = http.get("/api/status").json()
        mb2 = status["servers"][1]
        assert (mb2["operator"], mb2["operator_reason"], mb2["operator_by"]) == (
            "drain",
            "CU14 forged",
            "alice from 127.0.0.1",
        )
        bad = http.post("/api/servers/MB2/drain", content=b"CU14", headers={"Content-Type": "text/plain"})
        assert bad.status_code == 400
        assert "expected a JSON object" in bad.json()["error"]
        assert http.post("/api/servers/MB2/ready", json=["x"]).status_code == 400
        assert http.post("/api/servers/MB2/ready", json={"reason": 5}).status_code == 400


def test_nodes_read_each_other_s_states_and_hand_over_changes_with_the_token(start_admin: Start) -> None:
    running = start_admin()
    setting = Setting("MB2", None, OperatorState.DRAIN, "CU14", "alice", 1.0, 2.0)
    running.control.settings = [setting]
    with client(running) as http:
        got = http.get("/api/peers/states")  # a read: no token on loopback
        assert got.json() == {
            "version": 1,
            "states": [
                {
                    "server": "MB2",
                    "service": None,
                    "state": "drain",
                    "reason": "CU14",
                    "by": "alice",
                    "since": 1.0,
                    "changed": 2.0,
                }
            ],
        }
        body = {**got.json(), "node": "http://10.0.1.2:9090"}
        assert http.post("/api/peers/states", json=body).status_code == 401
        assert running.control.adopted == []
        taken = http.post("/api/peers/states", json=body, headers=AUTH)
        assert taken.json() == {
            "results": [
                {
                    "server": "MB2",
                    "service": None,
                    "state": "drain",
                    "result": "taken",
                    "holds": True,
                    "outcome": "MB2: ready -> drain by alice: CU14",
                }
            ]
        }
        assert running.control.adopted == [(setting, "peer http://10.0.1.2:9090 (127.0.0.1)")]
        for content, words in (
            (b"{nope", "not JSON"),
            (b'{"version": 2, "states": []}', "version 2, expected 1"),
            (b'{"version": 1, "states": [{"server": "MB2", "state": "off"}]}', "states[0].state: 'off'"),
        ):
            refused = http.post("/api/peers/states", content=content, headers=AUTH)
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert error.startswith(
                'expected a state document: {"version": 1, "states": [...], "node": URL} ('
            )
            assert words in error
    assert len(running.control.adopted) == 1
