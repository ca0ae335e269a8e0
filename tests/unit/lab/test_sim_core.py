"""The simulated Exchange server's pure parts: path routing, knobs, control guard, auth header parsing."""

from __future__ import annotations

import base64
import re

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from requests_ntlm.requests_ntlm import _get_certificate_hash

from casarray.exchange import catalog
from casarray.lab.sim import (
    Knobs,
    RecordedRequest,
    SimState,
    classify,
    control_host_allowed,
    describe,
    health_body,
    is_initial_token,
    parse_authorization,
    parse_basic,
    parse_description,
    parse_knobs,
    parse_listen,
    seeded_blocks,
    split_host,
    tls_server_end_point,
)


@pytest.mark.parametrize("service", list(catalog.SERVICES.values()), ids=catalog.SERVICE_NAMES)
def test_every_catalog_vdir_has_a_healthcheck_matched_case_insensitively(service: catalog.Service) -> None:
    for path in (service.health_path, service.health_path.upper(), service.health_path.lower()):
        target = classify(path)
        assert (target.kind, target.service) == ("health", service)
    assert classify(f"/{service.vdir}/").service is service
    assert classify(f"/{service.vdir.upper()}/anything/deeper").kind == "vdir"
    assert classify(f"/{service.vdir}").kind == "vdir"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "root"),
        ("/_sim/state", "control"),
        ("/_sim", "control"),
        ("/nope/x", "unknown"),
        ("/owa-not/x", "unknown"),
        ("/healthcheck.htm", "unknown"),
    ],
)
def test_classify_non_vdir_paths(path: str, kind: str) -> None:
    assert classify(path).kind == kind
    assert classify(path).service is None


def test_knobs_defaults_and_values() -> None:
    assert parse_knobs({}) == Knobs()
    knobs = parse_knobs(
        {
            "sim-status": "503",
            "sim-delay": "0.25",
            "sim-size": "1000",
            "sim-chunks": "3",
            "sim-interval": "30",
            "sim-echo-headers": "1",
            "sim-digest": "yes",
            "sim-seed": "7",
            "other": "x",
        }
    )
    assert knobs == Knobs(
        status=503, delay=0.25, size=1000, chunks=3, interval=30.0, echo_headers=True, digest=True, seed=7
    )
    assert parse_knobs({"sim-digest": "0"}).digest is False


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sim-status": "abc"}, "sim-status='abc': expected a number"),
        ({"sim-status": "99"}, "expected 200..599"),
        ({"sim-delay": "-1"}, "sim-delay"),
        ({"sim-size": "1.5"}, "sim-size"),
        ({"sim-chunks": "-2"}, "sim-chunks"),
        ({"sim-seed": "-1"}, "sim-seed"),
        ({"sim-seed": str(2**32)}, "sim-seed"),
    ],
)
def test_bad_knobs_name_the_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_knobs(query)


@pytest.mark.parametrize(
    ("host", "bare"),
    [
        ("mb1.alwayshotcafe.com:8443", "mb1.alwayshotcafe.com"),
        ("127.0.0.2", "127.0.0.2"),
        ("[::1]:8443", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ],
)
def test_split_host(host: str, bare: str) -> None:
    assert split_host(host) == bare


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("mb1.alwayshotcafe.com", True),
        ("MB1.AlwaysHotCafe.com:8443", True),
        ("mb1.alwayshotcafe.com.", True),
        ("127.0.0.2:8443", True),
        ("[::1]:8443", True),
        ("outlook.alwayshotcafe.com", False),
        ("outlook.alwayshotcafe.com:8443", False),
        ("mb2.alwayshotcafe.com", False),
        ("", False),
        (None, False),
    ],
)
def test_controls_only_for_own_fqdn_or_ip(host: str | None, allowed: bool) -> None:
    assert control_host_allowed(host, "mb1.alwayshotcafe.com") is allowed


def test_seeded_blocks_are_reproducible_and_differ_by_seed_and_position() -> None:
    body = b"".join(seeded_blocks(5, 200_000))
    assert len(body) == 200_000
    assert [len(b) for b in seeded_blocks(5, 200_000)] == [65536, 65536, 65536, 3392]
    assert body == b"".join(seeded_blocks(5, 200_000))
    assert body != b"".join(seeded_blocks(6, 200_000))
    assert body[:65536] != body[65536:131072]  # a repeated or swapped block shows
    assert list(seeded_blocks(5, 0)) == []


def test_health_body_prints_the_name_upper_case() -> None:
    assert health_body("mb1", "alwayshotcafe.com") == "200 OK<br/>MB1.alwayshotcafe.com"


def test_description_round_trips() -> None:
    text = describe("MB1", "rpc", "RPC_IN_DATA", "/rpc/rpcproxy.dll?mb1:6001", 42, "ALWAYSHOTCAFE\\alice")
    assert parse_description(text) == {
        "server": "MB1",
        "service": "rpc",
        "method": "RPC_IN_DATA",
        "path": "/rpc/rpcproxy.dll?mb1:6001",
        "body_bytes": "42",
        "user": "ALWAYSHOTCAFE\\alice",
    }
    assert "user=" not in describe("MB1", "owa", "GET", "/owa/", 0)
    assert "body_sha256=" not in describe("MB1", "owa", "GET", "/owa/", 0)
    digest = "ab" * 32
    assert (
        parse_description(describe("MB1", "ews", "POST", "/ews/", 3, body_sha256=digest))["body_sha256"]
        == digest
    )


def test_parse_authorization() -> None:
    token = base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00rest").decode()
    assert parse_authorization(f"NTLM {token}") == ("NTLM", b"NTLMSSP\x00\x01\x00\x00\x00rest")
    assert parse_authorization(f"negotiate {token}") == ("Negotiate", b"NTLMSSP\x00\x01\x00\x00\x00rest")
    assert parse_authorization("Basic dXNlcjpwdw==") is None
    assert parse_authorization("NTLM") is None
    assert parse_authorization("NTLM not*base64") is None


def test_parse_basic() -> None:
    def basic(raw: bytes, scheme: str = "Basic") -> str:
        return f"{scheme} {base64.b64encode(raw).decode()}"

    assert parse_basic(basic(b"ALWAYSHOTCAFE\\alice:Passw0rd!")) == ("ALWAYSHOTCAFE\\alice", "Passw0rd!")
    assert parse_basic(basic(b"alice:pa:ss", "basic")) == ("alice", "pa:ss")  # RFC 7617: ':' ends the user
    assert parse_basic(basic("jos\u00e9:p\u00e4ss".encode())) == ("jos\u00e9", "p\u00e4ss")
    assert parse_basic(basic("jos\u00e9:x".encode("latin-1"))) == ("jos\u00e9", "x")
    assert parse_basic(basic(b"alice:")) == ("alice", "")
    for bad in (basic(b"no colon"), basic(b":nouser"), "Basic", "Basic ***", basic(b"a:b", "NTLM")):
        assert parse_basic(bad) is None


def test_initial_tokens() -> None:
    assert is_initial_token(b"NTLMSSP\x00\x01\x00\x00\x00")
    assert not is_initial_token(b"NTLMSSP\x00\x03\x00\x00\x00")
    assert is_initial_token(b"\x60\x28\x06\x06")  # SPNEGO NegTokenInit
    assert not is_initial_token(b"\xa1\x10")  # SPNEGO NegTokenResp


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.2:8443", ("127.0.0.2", 8443)), ("[::1]:0", ("::1", 0)), (" 127.0.0.1:1 ", ("127.0.0.1", 1))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.2", "mb1:8443", "127.0.0.2:99999", "127.0.0.2:x", ":8443", ""])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.2:8443|IP address|port"):
        parse_listen(text)


def test_state_down_up_and_reset() -> None:
    state = SimState(max_recorded=3)
    state.set_service("ews", False)
    assert not state.service_up("ews")
    assert state.service_up("owa")
    state.server_up = False
    assert not state.service_up("owa")
    state.set_service("ews", True)
    state.server_up = True
    assert state.service_up("ews")
    state.latency = 1.0
    state.set_service("mapi", False)
    state.reset()
    assert (state.latency, state.services_down, state.server_up) == (0.0, set(), True)


def test_recorded_requests_are_bounded_and_filtered() -> None:
    state = SimState(max_recorded=3)
    for i, kind in enumerate(["health", "vdir", "vdir", "vdir", "health"]):
        state.requests.append(
            RecordedRequest(
                seq=state.next_seq(),
                time=0.0,
                method="GET",
                path=f"/{i}",
                headers=(("Host", "x"),),
                body_bytes=0,
                peer="127.0.0.1:1",
                kind=kind,
                service="owa" if i % 2 else "ews",
                status=200,
                user=None,
            )
        )
    assert [r.seq for r in state.requests] == [3, 4, 5]
    assert [r.seq for r in state.select(kind="vdir")] == [3, 4]
    assert [r.seq for r in state.select(service="owa")] == [4]
    assert [r.seq for r in state.select(since=4)] == [5]
    assert state.requests[0].as_json()["headers"] == [["Host", "x"]]


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
def test_channel_binding_matches_what_an_ntlm_client_computes(key_type: trustme.KeyType) -> None:
    pem = trustme.CA(key_type=key_type).issue_cert("mb1.alwayshotcafe.com", key_type=key_type)
    chain = pem.cert_chain_pems[0].bytes()
    der = x509.load_pem_x509_certificate(chain).public_bytes(Encoding.DER)
    assert tls_server_end_point(chain) == b"tls-server-end-point:" + _get_certificate_hash(der)
