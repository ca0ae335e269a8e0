"""`casarray announce` against a real BIRD and a real casarray on one node (a network namespace): the VIP
route follows casarray's health, BIRD's own restarts and reconfigurations are put right, trouble reaching
BIRD is logged once, and stopping withdraws. No router is needed: what BIRD would announce is its
static protocol's state and its route table (`birdc show protocols`, `show route`)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from casarray.lab.pki import CertFiles
from tests.ha.bird import Bird
from tests.ha.bird import unavailable_reason as bird_missing
from tests.ha.cluster import Array, casarray_args
from tests.ha.netns import Topology
from tests.support import wait_until

pytestmark = pytest.mark.netns

VIP = "10.77.9.1"
TIMEOUT = 30.0  # seconds a change may take on a loaded machine (expected: one to three check intervals)


@pytest.fixture(autouse=True)
def _bird_installed() -> None:
    reason = bird_missing()
    if reason is not None:
        pytest.skip(reason)


def test_the_vip_route_follows_casarray_health_and_survives_bird_restarts(
    topology: Topology, ha_pki: CertFiles
) -> None:
    lan = topology.segment("lan", "10.77.0.0/24")
    array = Array(topology, lan, ha_pki)
    array.sims(1)
    node = array.node("node1", host=11)
    node.namespace.run("ip", "address", "add", f"{VIP}/32", "dev", "lo")
    node.start_casarray(array.config(VIP))
    assert node.config is not None
    exported = subprocess.run(
        casarray_args("export", "bird", "-c", str(node.config), "--router", "10.77.0.1", "--asn", "65000"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    bird = Bird.start(node.namespace, "bird", exported)

    def announced() -> bool:
        return bird.protocols()["casarray_vip4"].startswith("up") and bird.has_route(f"{VIP}/32")

    def withdrawn() -> bool:
        return bird.protocols()["casarray_vip4"].startswith("down") and not bird.has_route(f"{VIP}/32")

    assert withdrawn()  # bird.conf starts it disabled: nothing announced before anyone checked casarray
    announce = node.namespace.start(
        "announce",
        *casarray_args(
            "announce", "-c", str(node.config), "--socket", str(bird.socket), "--interval", "500ms"
        ),
    )
    announce.wait_log(
        f"announcing {VIP}/32: casarray is healthy (ok: listener {VIP}:443 accepts", timeout=TIMEOUT
    )
    wait_until(announced, TIMEOUT, 0.05, "the VIP route in BIRD")

    # The node's only server in maintenance: nothing to send clients to, so the VIP is withdrawn; the
    # reason shows as the protocol's message in `birdc show protocols all`.
    ctl = ("ctl", "-c", str(node.config))
    node.namespace.run(*casarray_args(*ctl, "maint", "MB1"))
    announce.wait_log(f"withdrawing {VIP}/32: casarray is not healthy (fail: no server takes new traffic", timeout=TIMEOUT)  # fmt: skip
    wait_until(withdrawn, TIMEOUT, 0.05, "the VIP route gone from BIRD")
    assert (
        "Message:        casarray announce: fail: no server takes new traffic"
        in bird.birdc("show", "protocols", "all", "casarray_vip4").stdout
    )
    node.namespace.run(*casarray_args(*ctl, "ready", "MB1"))
    announce.wait_log(f"announcing {VIP}/32: casarray is healthy", timeout=TIMEOUT, count=2)
    wait_until(announced, TIMEOUT, 0.05, "the VIP route back in BIRD")

    # `birdc configure` (systemctl reload bird) restarts the protocol as bird.conf has it, disabled: the
    # next check enables it again, and says so.
    bird.birdc("configure")
    announce.wait_log("BIRD had casarray_vip4 disabled (restarted or reconfigured?): enabled it again", timeout=TIMEOUT)  # fmt: skip
    wait_until(announced, TIMEOUT, 0.05, "the VIP route back after birdc configure")

    # BIRD gone: one error line, not one per check; BIRD back: one line, and the route is there again.
    bird.stop()
    announce.wait_log("Unable to connect to server control socket", timeout=TIMEOUT)
    bird = Bird.start(node.namespace, "bird2", exported, socket=bird.socket)
    announce.wait_log("BIRD answers again: casarray_vip4 enabled", timeout=TIMEOUT)
    wait_until(announced, TIMEOUT, 0.05, "the VIP route in the restarted BIRD")
    assert announce.log.count("Unable to connect to server control socket") == 1

    # Stopped: nothing watches casarray any more, so the VIP is withdrawn on the way out.
    announce.signal(signal.SIGTERM)
    assert announce.popen.wait(TIMEOUT) == 0
    assert f"stopping: withdrawing {VIP}/32" in announce.log
    assert withdrawn()
    # One line per transition: the log holds nothing else.
    lines = [line for line in announce.log.splitlines() if " casarray.announce: " in line]
    assert len(lines) == 8, "\n".join(lines)
