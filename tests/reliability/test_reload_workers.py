"""Reload with `workers: 2`: serialised and coalesced, bounded in processes, exactly the validated
config in the workers, and a worker that keeps crashing restarted with back-off."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest

from casarray.lab.sim import SimCas
from tests.integration.conftest import L7Lab
from tests.reliability.reloading import Connection, Load, children, start_balancer
from tests.support import wait_until


@pytest.mark.slow
def test_a_hup_storm_is_coalesced_bounded_and_invisible_to_clients(l7: L7Lab) -> None:
    l7.start_sims(3)
    proc, port, config = start_balancer(l7, "l7", "workers: 2\n")
    proc.wait_log("2 workers serving")
    original = config.read_text()
    load = Load(port, l7.pki.ca)
    load.start(keepalive=2, fresh=2)
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        deadline = time.monotonic() + 50
        while not sampling.is_set() and time.monotonic() < deadline:
            peak[0] = max(peak[0], len(children(proc.popen.pid)))
            time.sleep(0.02)  # the sampling period

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_until(lambda: load.ok >= 20, 15, what="requests flowing")
        for i in range(15):  # 15 HUPs in about 2 s
            config.write_text(original + f"balance: {('leastconn', 'roundrobin')[i % 2]}\n")
            proc.signal(signal.SIGHUP)
            time.sleep(2 / 15)  # the storm's pace
        stable = [time.monotonic(), proc.log.count("reloaded ")]

        def settled() -> bool:
            # No reload for a second and only the serving workers left.
            count = proc.log.count("reloaded ")
            if count != stable[1] or len(children(proc.popen.pid)) != 2:
                stable[:] = [time.monotonic(), count]
                return False
            return time.monotonic() - stable[0] > 1.0

        try:
            wait_until(settled, 40, what="the storm to settle")
            done = load.ok
            wait_until(lambda: load.ok >= done + 20, 15, what="requests after the storm")
            calm = ""
        except AssertionError as exc:  # reported after what matters more
            calm = str(exc)
    finally:
        sampling.set()
        load.finish()
        sampler.join(5)
    log = proc.log
    reloads = log.count("reloaded ")
    print(f"storm: {reloads} reloads, peak {peak[0]} workers, {load.ok} requests, {len(load.errors)} errors")
    assert 2 <= reloads < 15, reloads
    assert "coalesced" in log
    # 2 serving + 2 starting + at most 3 old sets of 2 draining
    assert peak[0] <= 10, f"{peak[0]} worker processes at once"
    assert " -> down" not in log  # no false health transition
    assert load.errors == []
    assert 503 not in load.statuses
    assert load.wrong == []
    assert calm == ""


@pytest.mark.slow
def test_a_config_edited_during_a_reload_never_reaches_the_workers(l7: L7Lab) -> None:
    """The file is replaced by an invalid one while the reload validates it (a new server's first
    check is under way): the workers must start on what was validated, not on what the file holds."""
    l7.start_sims(3)
    proc, port, config = start_balancer(l7, "l7", "workers: 2\n")
    proc.wait_log("2 workers serving")
    slow = SimCas("MB4", certificate=l7.pki.certificate, key=l7.pki.key, host="127.0.0.5")
    l7.loop.run(slow.start())
    l7.sims["MB4"] = slow
    slow.state.latency = 1.5  # its first checks take the whole health timeout (1 s)
    good = config.read_text().replace(
        "servers:\n", f"servers:\n  - {{name: MB4, address: {slow.host}, port: {slow.port}}}\n"
    )
    config.write_text(good)
    proc.signal(signal.SIGHUP)
    wait_until(lambda: slow.state.requests, what="the new server's first check (the reload validating)")
    config.write_text(good + "balance: fastest\n")  # edited between validation and worker start
    wait_until(
        lambda: "2 new workers" in proc.log or "exited with status" in proc.log,
        20,
        what="the reload's new workers",
    )
    assert "exited with status" not in proc.log
    proc.signal(signal.SIGHUP)  # the edited file is refused as such
    proc.wait_log("reload refused")
    config.write_text(good + "balance: leastconn\n")
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 3 serving")
    wait_until(lambda: proc.log.count("2 new workers") == 2, 20, what="generation 3's workers")
    assert "exited with status" not in proc.log
    wait_until(lambda: len(children(proc.popen.pid)) == 2, 20, what="the old workers to finish")
    conn = Connection(port, l7.pki.ca)
    for _ in range(6):
        conn.request("GET", "/owa/healthcheck.htm")
        assert conn.getresponse().read().startswith(b"200 OK")
    conn.close()


@pytest.mark.slow
def test_a_worker_that_keeps_crashing_is_restarted_with_back_off(l7: L7Lab) -> None:
    """A replacement worker that cannot start (its CA file is gone) is retried 0.5, 1, 2 s apart, not in
    a tight loop; once the file is back, the next attempt serves."""
    l7.start_sims(1)
    ca = l7.dir / "ca-copy.pem"
    shutil.copy(l7.pki.ca, ca)
    proc, port, _ = start_balancer(l7, "l7", "workers: 2\n", ca=ca)
    proc.wait_log("2 workers serving")
    ca.unlink()
    victim = min(children(proc.popen.pid))
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    proc.wait_log(f"(pid {victim}) exited with status -9: starting a new one")
    proc.wait_log("starting a new one in 2s", timeout=20)
    elapsed = time.monotonic() - started
    log = proc.log
    assert "starting a new one in 0.5s" in log
    assert "starting a new one in 1s" in log
    assert elapsed >= 1.5  # the back-off waits are real
    assert log.count("exited with status 1") <= 4
    shutil.copy(l7.pki.ca, ca)
    wait_until(lambda: len(children(proc.popen.pid)) == 2, 20, what="a replacement that starts")
    proc.wait_log("serving generation 1", count=3, timeout=20)
    conn = Connection(port, l7.pki.ca)
    for _ in range(4):
        conn.request("GET", "/owa/healthcheck.htm")
        assert conn.getresponse().read().startswith(b"200 OK")
    conn.close()
