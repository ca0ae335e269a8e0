"""Reload loses nothing (docs/reliability.md): one balancer process, l7 and l4, over real TLS.

The old generation keeps serving what it holds: an idle keep-alive connection is closed only after its
next response (sent with `Connection: close`) or at its keep-alive timeout; connections accepted around
the reload are served; requests and streams finish, bounded by `timeouts.hard_stop_after` — never by
`timeouts.grace`, which bounds a stop. Clients here never retry: every error counts.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time

import pytest

from casarray.lab.sim import PENDING
from tests.integration.conftest import L7Lab
from tests.reliability.reloading import Connection, Load, open_tls, start_balancer
from tests.support import NAMESPACE, read_response, wait_until

MODES = ["l7", "l4"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_twenty_reloads_under_keepalive_and_new_connection_load_lose_no_request(l7: L7Lab, mode: str) -> None:
    l7.start_sims(3)
    # grace 0s: a reload that used the stop bound would cut every connection it holds at once.
    proc, port, config = start_balancer(l7, mode, "timeouts: {grace: 0s}\n")
    original = config.read_text()
    load = Load(port, l7.pki.ca)
    # l4 cannot end a keep-alive connection between two requests: its clients make 10 requests per
    # connection, as browsers and Outlook eventually do, so each old generation empties on its own.
    load.start(keepalive=3, fresh=2, per_connection=0 if mode == "l7" else 10)
    try:
        for i in range(20):
            done = load.ok
            wait_until(lambda d=done: load.ok >= d + 15 or load.errors, 15, what="requests flowing")
            config.write_text(original + f"balance: {('leastconn', 'roundrobin')[i % 2]}\n")
            proc.signal(signal.SIGHUP)
            proc.wait_log(f"generation {i + 2} serving")
            # The old generation serves what it holds (each keep-alive client's next response closes)
            # and then goes; waiting for it keeps this test to reloads, not to the draining cap.
            wait_until(
                lambda n=i + 1: f"generation {n}: finished" in proc.log or load.errors,
                15,
                what=f"generation {i + 1} to finish",
            )
            if load.errors:
                break
    finally:
        load.finish()
    assert load.errors == []
    assert load.wrong == []
    assert load.ok > 300
    assert proc.log.count("reloaded ") == 20


def _upload(port: int, l7: L7Lab, size: int, pieces: int, every: float, out: dict[str, object]) -> None:
    """RPC_IN_DATA with a body trickled over pieces * every seconds; the sim answers once it has it all."""
    piece = size // pieces
    with open_tls(port, l7.pki.ca) as sock:
        sock.sendall(
            b"RPC_IN_DATA /rpc/rpcproxy.dll?mb1.alwayshotcafe.com:6001 HTTP/1.1\r\n"
            b"Host: " + NAMESPACE.encode() + b"\r\nContent-Length: %d\r\n\r\n" % size
        )
        try:
            for _ in range(pieces):
                sock.sendall(b"r" * piece)
                time.sleep(every)  # the client's own pace: this is what a trickling upload is
            out["response"] = read_response(sock)
        except OSError as exc:
            out["error"] = repr(exc)


def _stream(port: int, l7: L7Lab, chunks: int, interval: float, out: dict[str, object]) -> None:
    """A MAPI/HTTP notification wait: chunked PENDING lines, one per interval."""
    conn = Connection(port, l7.pki.ca, timeout=30)
    try:
        conn.request("POST", f"/mapi/emsmdb/?sim-chunks={chunks}&sim-interval={interval}", body=b"x")
        resp = conn.getresponse()
        out["status"] = resp.status
        out["body"] = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = repr(exc)
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_an_upload_and_a_stream_longer_than_the_grace_survive_a_reload(l7: L7Lab, mode: str) -> None:
    """8 s of upload and of streamed answer with `grace: 2s` prove what an hour would: the reload does
    not bound what the old generation holds by the stop grace."""
    l7.start_sims(3)
    proc, port, config = start_balancer(l7, mode, "timeouts: {grace: 2s}\n")
    size = 16 * 4096
    upload: dict[str, object] = {}
    stream: dict[str, object] = {}
    threads = [
        threading.Thread(target=_upload, args=(port, l7, size, 16, 0.5, upload)),
        threading.Thread(target=_stream, args=(port, l7, 8, 1.0, stream)),
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: any(s.state.connections_open for s in l7.sims.values()), what="requests under way")
    config.write_text(config.read_text() + "balance: leastconn\n")
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 2 serving")
    for thread in threads:
        thread.join(30)
    assert "error" not in upload, upload
    status, _, body = upload["response"]  # type: ignore[misc]
    assert status == 200
    assert f"body_bytes={size}\n".encode() in body
    received = [r for s in l7.sims.values() for r in s.state.requests if r.method == "RPC_IN_DATA"]
    assert [r.body_bytes for r in received] == [size]  # the server got every byte, once
    assert "error" not in stream, stream
    assert stream["status"] == 200
    assert stream["body"] == PENDING * 8
    proc.wait_log("generation 1: finished")
    assert "hard stop" not in proc.log


@pytest.mark.parametrize("mode", MODES)
def test_the_hard_stop_bounds_what_the_old_generation_holds(l7: L7Lab, mode: str) -> None:
    l7.start_sims(1)
    proc, port, config = start_balancer(l7, mode, "timeouts: {grace: 30s, hard_stop_after: 1s}\n")
    stream: dict[str, object] = {}
    thread = threading.Thread(target=_stream, args=(port, l7, 60, 0.25, stream))
    thread.start()
    wait_until(lambda: l7.sims["MB1"].state.connections_open, what="a stream under way")
    started = time.monotonic()
    config.write_text(config.read_text() + "balance: leastconn\n")
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 1: hard stop after 1s (timeouts.hard_stop_after): closed 1 connection")
    thread.join(20)
    assert time.monotonic() - started < 10  # cut at the hard stop, long before its 15 s end
    assert "error" in stream or len(stream.get("body", b"")) < len(PENDING) * 60


def test_idle_keepalive_connections_of_the_old_generation_close_after_their_next_response(
    l7: L7Lab,
) -> None:
    l7.start_sims(1)
    proc, port, config = start_balancer(l7, "l7", "timeouts: {grace: 0s}\n")
    conns = [Connection(port, l7.pki.ca) for _ in range(3)]
    for conn in conns:
        conn.request("GET", "/owa/healthcheck.htm")
        assert conn.getresponse().read().startswith(b"200 OK")
    config.write_text(config.read_text() + "balance: leastconn\n")
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 2 serving")
    proc.wait_log("generation 1: stopped accepting")
    # Still open on the old generation: the next request on each is served, with Connection: close.
    for conn in conns:
        conn.request("GET", "/owa/healthcheck.htm")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Connection") == "close"
        assert resp.read().startswith(b"200 OK")
        conn.close()
    proc.wait_log("generation 1: finished")


@pytest.mark.slow
def test_generations_left_draining_are_capped(l7: L7Lab) -> None:
    """Each generation holds one long stream; the fifth reload leaves four draining, so the oldest goes."""
    l7.start_sims(1)
    proc, port, config = start_balancer(l7, "l7")
    original = config.read_text()
    streams: list[dict[str, object]] = []
    threads: list[threading.Thread] = []
    for i in range(4):
        stream: dict[str, object] = {}
        streams.append(stream)
        threads.append(threading.Thread(target=_stream, args=(port, l7, 40, 0.25, stream)))
        threads[-1].start()
        wait_until(lambda n=i + 1: l7.sims["MB1"].state.connections_open >= n, what="one more stream")
        config.write_text(original + f"balance: {('leastconn', 'roundrobin')[i % 2]}\n")
        proc.signal(signal.SIGHUP)
        proc.wait_log(f"generation {i + 2} serving")
    proc.wait_log("generation 1: more than 3 generations draining: closed 1 connection")
    assert "generation 2: more than" not in proc.log
    for thread in threads:
        thread.join(20)
    assert "error" in streams[0] or len(streams[0].get("body", b"")) < len(PENDING) * 40
    for stream in streams[1:]:
        assert stream.get("body") == PENDING * 40, stream


def test_hups_during_a_reload_are_coalesced(l7: L7Lab) -> None:
    l7.start_sims(2)
    proc, port, config = start_balancer(l7, "l7")
    # The reload checks a new server first, and that server answers slowly: the reload lasts the
    # health timeout (1 s), and every HUP below arrives while it runs.
    l7.sims["MB2"].state.latency = 1.5
    config.write_text(config.read_text().replace("name: MB2,", "name: MB9,"))
    for _ in range(10):
        proc.signal(signal.SIGHUP)
        time.sleep(0.02)  # apart, so that the kernel delivers each one (pending signals merge)
    proc.wait_log("generation 2 serving")
    proc.wait_log("generation 3 serving")  # the one reload that follows, for all nine HUPs
    assert proc.log.count("coalesced") >= 7
    time.sleep(0.5)  # nothing more may come: give a wrongly queued reload the time to show
    assert proc.log.count("reloaded ") == 2
    conn = Connection(port, l7.pki.ca)
    conn.request("GET", "/owa/healthcheck.htm")
    assert conn.getresponse().status == 200
    conn.close()


def test_a_huge_config_file_is_parsed_off_the_serving_loop(l7: L7Lab) -> None:
    """While a big file is parsed, requests keep their latency (the parse runs in a thread)."""
    l7.start_sims(1)
    proc, port, config = start_balancer(l7, "l7")
    original = config.read_text()
    entries = "".join(f"  - {{name: n{i}, value: {i}, more: [a, b, c]}}\n" for i in range(4000))
    config.write_text(original + "padding:\n" + entries)  # an unknown key: refused after the parse
    conn = Connection(port, l7.pki.ca)
    worst = 0.0
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reload refused" not in proc.log and time.monotonic() < deadline:
        t = time.monotonic()
        conn.request("GET", "/owa/healthcheck.htm")
        assert conn.getresponse().read().startswith(b"200 OK")
        worst = max(worst, time.monotonic() - t)
    conn.close()
    assert "reload refused" in proc.log
    # Parsed on the loop, the file stalled every request for ~1.6 s; in a thread, requests go on.
    assert worst < 1.0, f"a request waited {worst:.2f}s while the config was parsed"
