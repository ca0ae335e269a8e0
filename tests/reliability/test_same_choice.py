"""Every node makes the same choice for the same client: two balancers in front of the same simulated
servers, as the two nodes of an HA pair (keepalived) or of an ECMP group (BIRD) would be.

The nodes run as separate processes with the same settings — here on one loopback address, so only
their ports differ; node B runs two workers, so neither a worker nor a process can hold a choice of its
own. Clients are real TLS clients bound to their own loopback addresses (127.0.0.9, 127.0.0.10, …)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import L7Lab
from tests.support import Response, casarray, https_request

SOURCES = ["127.0.0.9", "127.0.0.10"] + [f"127.0.1.{i}" for i in range(1, 11)]


def secret_file(directory: Path, name: str, *secrets: str) -> Path:
    path = directory / name
    path.write_text("".join(f"{secret}\n" for secret in secrets))
    path.chmod(0o600)
    return path


def via(lab: L7Lab, port: int, cookie: str | None = None, source: str | None = None) -> Response:
    headers = {"Cookie": cookie} if cookie else None
    return https_request("127.0.0.1", port, "/owa/", lab.pki.ca, headers=headers, source=source)


def set_cookie(response: Response) -> str | None:
    """`NAME=value` of the response's Set-Cookie field, or None."""
    field = response.headers.get("Set-Cookie")
    return field.split(";")[0] if field else None


def cookie_for(lab: L7Lab, port: int, server: str) -> str:
    """The cookie a balancer sets for `server` (round robin reaches it within one turn)."""
    for _ in lab.sims:
        response = via(lab, port)
        cookie = set_cookie(response)
        if response.server == server and cookie is not None:
            return cookie
    raise AssertionError(f"no cookie for {server} from the balancer on port {port}")


def two_nodes(lab: L7Lab, settings: str, mode: str = "l7") -> tuple[int, int]:
    """Node A (one process) and node B (a supervisor and two workers), the same `settings`; node B
    lists the servers in the opposite order (the choice must not depend on it)."""
    _, port_a = lab.balancer(settings, mode=mode)
    reversed_servers = lab.servers_yaml(reversed(lab.sims.values()))
    node_b, port_b = lab.balancer(settings + "workers: 2\n", servers=reversed_servers, mode=mode)
    node_b.wait_log("2 workers serving", timeout=60)
    return port_a, port_b


def test_a_cookie_set_by_one_node_pins_the_client_on_the_other(l7: L7Lab) -> None:
    l7.start_sims()
    secrets = secret_file(l7.dir, "affinity.secret", "c" * 64)
    port_a, port_b = two_nodes(l7, f"affinity: {{mode: cookie, cookie: CASID, secret_file: {secrets}}}\n")
    # Without a cookie, round robin spreads: three clients, three servers, three cookies from node A.
    first = [via(l7, port_a) for _ in range(3)]
    assert {r.server for r in first} == {"MB1", "MB2", "MB3"}
    for response in first:
        cookie = set_cookie(response)
        assert cookie is not None
        assert cookie.startswith("CASID=")
        for port in (port_b, port_a, port_b):
            again = via(l7, port, cookie)
            assert again.server == response.server  # pinned, whichever node the client reaches
            assert set_cookie(again) is None  # already the right cookie


@pytest.mark.slow
def test_forged_foreign_and_out_of_service_cookies_are_balanced_and_replaced(l7: L7Lab) -> None:
    l7.start_sims()
    secrets = secret_file(l7.dir, "affinity.secret", "c" * 64)
    proc_a, port_a = l7.balancer(f"affinity: {{mode: cookie, secret_file: {secrets}}}\n")
    proc_b, port_b = l7.balancer(f"affinity: {{mode: cookie, secret_file: {secrets}}}\nworkers: 2\n")
    proc_b.wait_log("2 workers serving", timeout=60)
    # A real cookie for MB2 from another array: same servers, same cookie name, another secret.
    other = secret_file(l7.dir, "other.secret", "d" * 64)
    _, port_other = l7.balancer(f"affinity: {{mode: cookie, secret_file: {other}}}\n")
    foreign = cookie_for(l7, port_other, "MB2")
    # MB2's genuine cookie from node A, to present once MB2 is out of service.
    genuine = cookie_for(l7, port_a, "MB2")
    assert genuine != foreign
    ignored = {
        "forged": "CASARRAY=" + "0" * 32,
        "foreign": foreign,
        "an address": "CASARRAY=127.0.0.3",  # a name or anything else fares the same (unit tests)
    }
    for what, cookie in ignored.items():
        for port, other_port in ((port_a, port_b), (port_b, port_a)):
            # Six requests: round robin reaches every server (node B's two workers each keep their own
            # turn, and one of them takes at least three), not only the one the cookie names.
            answers = [via(l7, port, cookie) for _ in range(6)]
            assert {r.server for r in answers} == {"MB1", "MB2", "MB3"}, what
            for r in answers:  # each answer pins the client anew, to the server that answered, on both nodes
                fresh = set_cookie(r)
                assert fresh is not None, what
                assert fresh != cookie, what
                assert via(l7, other_port, fresh).server == r.server, what
    l7.sims["MB2"].state.set_service("owa", False)
    proc_a.wait_log("health MB2/owa up -> down")
    proc_b.wait_log("health MB2/owa up -> down")
    for port, other_port in ((port_a, port_b), (port_b, port_a)):
        answers = [via(l7, port, genuine) for _ in range(4)]
        assert "MB2" not in {r.server for r in answers}
        for r in answers:
            fresh = set_cookie(r)
            assert fresh is not None
            assert fresh != genuine
            assert via(l7, other_port, fresh).server == r.server


def test_a_secret_is_rotated_by_reload_without_unpinning_anyone(l7: L7Lab) -> None:
    l7.start_sims()
    old, new = "c" * 64, "f" * 64
    secrets = secret_file(l7.dir, "affinity.secret", old)
    proc, port = l7.balancer(f"affinity: {{mode: cookie, secret_file: {secrets}}}\n")
    signed_old = cookie_for(l7, port, "MB2")
    secret_file(l7.dir, "affinity.secret", new, old)  # the new secret first: it signs, both are accepted
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 2 serving")
    answer = via(l7, port, signed_old)
    assert answer.server == "MB2"  # still pinned
    signed_new = set_cookie(answer)  # and re-signed with the new secret
    assert signed_new is not None
    assert signed_new != signed_old
    assert via(l7, port, signed_new).server == "MB2"
    secret_file(l7.dir, "affinity.secret", new)  # the old secret retired
    proc.signal(signal.SIGHUP)
    proc.wait_log("generation 3 serving")
    assert set_cookie(via(l7, port, signed_new)) is None  # the current cookie holds
    assert {via(l7, port, signed_old).server for _ in range(3)} == {
        "MB1",
        "MB2",
        "MB3",
    }  # the old one: ignored
    secrets.write_text("short\n")  # a broken file: the reload is refused, the running secrets stay
    proc.signal(signal.SIGHUP)
    proc.wait_log("reload refused, the running config keeps serving")
    assert "affinity.secret_file: " in proc.log
    assert via(l7, port, signed_new).server == "MB2"


@pytest.mark.parametrize("mode", ["l7", "l4"])
def test_the_same_source_address_lands_on_the_same_server_via_either_node(l7: L7Lab, mode: str) -> None:
    l7.start_sims()
    port_a, port_b = two_nodes(l7, "affinity: source\n", mode=mode)
    chosen: dict[str, str] = {}
    for source in SOURCES:
        seen = {via(l7, port, source=source).server for port in (port_a, port_b, port_a, port_b)}
        assert len(seen) == 1, (source, seen)
        chosen[source] = seen.pop()
    assert len(set(chosen.values())) >= 2  # the hash spreads clients: not everyone on one server


def test_without_a_shared_secret_check_and_run_warn_and_a_bad_secret_file_is_refused(l7: L7Lab) -> None:
    # health off: the one server counts as up, and nothing needs to answer on it
    proc, _ = l7.balancer(
        "affinity: cookie\n",
        servers="  - {name: MB1, address: 127.0.0.2, port: 1}",
        health="{enabled: false}",
    )
    assert "affinity.secret_file is not set" in proc.log  # the running node says it
    config = Path(proc.args[-1])
    code, out, err = check(config)
    assert code == 0
    assert out.startswith(f"{config}: valid")
    assert f"{config}: warning: affinity.secret_file is not set" in err
    assert "several nodes" in err
    secrets = secret_file(l7.dir, "affinity.secret", "e" * 64)
    text = config.read_text().replace(
        "affinity: cookie\n", f"affinity: {{mode: cookie, secret_file: {secrets}}}\n"
    )
    config.write_text(text)
    code, out, err = check(config)
    assert (code, err) == (0, "")  # a secret only its owner reads: nothing to warn about
    assert out.startswith(f"{config}: valid")
    secrets.chmod(0o644)
    assert f"warning: affinity.secret_file: {secrets} can be read by every user" in check(config)[2]
    secrets.write_text("short\n")
    code, out, err = check(config)
    assert code == 1
    assert f"affinity.secret_file: {secrets}:1: found a secret of 5 characters; expected at least 32" in err


def check(config: Path) -> tuple[int, str, str]:
    done = subprocess.run(casarray("check", "-c", str(config)), capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr
