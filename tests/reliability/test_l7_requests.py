"""What a client sends reaches a server only as the balancer parsed, checked and routed it: no field named
in Connection changes framing, Host or the proxy's own headers; no dot-segment reaches a server; the Host
check covers name and port; the client's forwarding fields never pass. Real TLS on loopback; every test
asserts at the client and at the server (nothing of a refused request arrives)."""

from __future__ import annotations

import pytest

from casarray.http.h1 import PROTECTED
from tests.integration.conftest import L7Lab, get
from tests.support import NAMESPACE, read_response, tls_connection

SMUGGLED = b"GET /owa/smuggled HTTP/1.1\r\nHost: " + NAMESPACE.encode() + b"\r\n\r\n"


def vdir_paths(lab: L7Lab) -> list[str]:
    return [r.path for sim in lab.sims.values() for r in sim.state.requests if r.kind != "health"]


def test_connection_cannot_unframe_reroute_or_unforward_a_request(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer()
    for field in sorted(PROTECTED):
        with tls_connection("127.0.0.1", port, l7.pki.ca) as tls:
            tls.sendall(
                b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: " + NAMESPACE.encode() + b"\r\n"
                b"Connection: keep-alive, "
                + field
                + b"\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
                + SMUGGLED
            )
            status, headers, body = read_response(tls)
            assert status == 400, field
            assert field.decode() in body.decode()
            assert headers["connection"] == "close"
    assert vdir_paths(l7) == []  # neither the POST nor the request in its body reached the server
    assert proc.log.count("which would change the message's framing or routing") == len(PROTECTED)


def test_dot_segments_are_resolved_before_routing_and_never_forwarded(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer("services: [owa, ews, mapi, autodiscover]\n")  # ecp and oab are not served
    for path in ("/owa/../ecp/", "/owa/%2e%2e/ecp/", "/owa/.%2E/oab/oab.xml", "/ews/../_sim/state"):
        assert get(l7, port, path).status == 404, path
    for path in ("/owa/..%2fecp/", "/owa/%5c../ecp/", "/owa\\..\\ecp/"):
        assert get(l7, port, path).status == 400, path
    assert vdir_paths(l7) == []
    # A dot-segment that stays inside a served vdir is resolved, and the server gets the result.
    resp = get(l7, port, "/ecp/../ews/./x/%2e%2E/Exchange.asmx?q=/../keep")
    assert resp.status == 200
    assert vdir_paths(l7) == ["/ews/Exchange.asmx?q=/../keep"]


def test_host_check_covers_the_port_and_redirects_use_configured_names(l7: L7Lab) -> None:
    l7.start_sims(1)
    proc, port = l7.balancer()
    for host in (
        f"{NAMESPACE}:x@evil.example",
        f"{NAMESPACE}:@evil.example",
        f"{NAMESPACE}:{port + 1}",
        f"{NAMESPACE}:99999",
        f"evil.example@{NAMESPACE}",
    ):
        resp = get(l7, port, "/", headers={"Host": host})
        assert resp.status == 421, host
        assert "Location" not in resp.headers
    resp = get(l7, port, "/", headers={"Host": f"OUTLOOK.AlwaysHotCafe.com.:{port}"})
    assert (resp.status, resp.headers["Location"]) == (302, f"https://{NAMESPACE}:{port}/owa/")
    resp = get(l7, port, "/owa", headers={"Host": f"{NAMESPACE}:443"})
    assert (resp.status, resp.headers["Location"]) == (302, f"https://{NAMESPACE}/owa/")
    assert vdir_paths(l7) == []
    assert "421 host 'outlook.alwayshotcafe.com:x@evil.example' is not served here" in proc.log


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarding_fields_from_clients_are_dropped(l7: L7Lab, trusted: bool) -> None:
    l7.start_sims(1)
    _, port = l7.balancer("trusted_proxies: [127.0.0.0/8]\n" if trusted else "")
    resp = get(
        l7,
        port,
        "/owa/?sim-echo-headers=1",
        headers={
            "Forwarded": "for=6.6.6.6;proto=http",
            "X-Real-IP": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "http",
        },
    )
    echoed = resp.body.decode()
    assert resp.status == 200
    assert "6.6.6.6" not in echoed
    assert "evil.example" not in echoed
    assert "X-Forwarded-Proto: https" in echoed
    assert "X-Forwarded-For: 127.0.0.1" in echoed
