"""Zero-downtime reload: SIGHUP under steady load, invalid configs refused, states carried over."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from tests.integration.conftest import Lab
from tests.support import https_request


def load(lab: Lab, port: int, stop: threading.Event, results: list[int], errors: list[str]) -> None:
    deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            results.append(
                https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca, timeout=5).status
            )
        except OSError as exc:
            errors.append(repr(exc))


def test_five_reloads_under_load_fail_no_request(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    config = Path(proc.args[-1])
    original = config.read_text()
    stop = threading.Event()
    results: list[int] = []
    errors: list[str] = []
    workers = [threading.Thread(target=load, args=(lab, port, stop, results, errors)) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for i in range(5):
            balance = ("leastconn", "roundrobin")[i % 2]
            config.write_text(original + f"balance: {balance}\n")
            proc.signal(signal.SIGHUP)
            proc.wait_log(f"generation {i + 2} serving")
            time.sleep(0.2)  # let traffic flow on the new generation
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert errors == []
    assert len(results) > 50
    assert set(results) == {200}
    assert proc.log.count("reloaded ") == 5


def test_an_invalid_config_is_refused_and_the_old_one_keeps_serving(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    config = Path(proc.args[-1])
    good = config.read_text()
    config.write_text(good + "balance: fastest\n")
    proc.signal(signal.SIGHUP)
    proc.wait_log("reload refused, the running config keeps serving")
    assert "balance: found 'fastest'; expected 'roundrobin', 'leastconn' or 'source'" in proc.log
    assert https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca).status == 200
    config.write_text(good.replace("servers:", "servers:\n  - {name: GHOST, address: no-such-host.invalid}"))
    proc.signal(signal.SIGHUP)
    proc.wait_log("cannot resolve 'no-such-host.invalid'")
    assert https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca).status == 200
    assert "generation 2 serving" not in proc.log


def test_a_reload_keeps_health_states(lab: Lab) -> None:
    lab.sims3()
    proc, port = lab.balancer()
    lab.control("MB2", "/_sim/service/owa/down")
    proc.wait_log("server MB2 leaves the l4 pool")
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 2 serving")
    servers = {https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca).server for _ in range(6)}
    assert servers == {"MB1", "MB3"}  # MB2 stays out: its down state was carried over, not re-learnt
