"""The doctor's verdicts as pure functions: DNS answers against the VIP, health and VIP rows,
certificate comparison, the exit rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import dns.asyncresolver
import dns.resolver
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from casarray.config import parse_config
from casarray.config.model import Config
from casarray.doctor.checks import (
    connect_address,
    health_row,
    server_certificate_row,
    shared_certificate_rows,
    via_row,
    via_targets,
)
from casarray.doctor.reply import Reply
from casarray.doctor.resolution import Resolution, judge, parse_nameserver, resolve
from casarray.doctor.rows import Row, failed, summary
from casarray.doctor.wire import Answer, PeerCertificate
from casarray.health.state import CheckResult
from casarray.http.decode import ResponseStart
from casarray.http.errors import ProtocolError

NAMESPACE = "outlook.alwayshotcafe.com"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def config(extra: str = "", mode: str = "l4") -> Config:
    return parse_config(
        f"namespace: {NAMESPACE}\nautodiscover: autodiscover.alwayshotcafe.com\nmode: {mode}\n"
        "listen: {address: 10.0.1.250}\n"
        "servers: [{name: MB1, address: 10.0.1.11}, {name: MB2, address: 10.0.1.12}]\n"
        + ("tls: {certificate: a.pem, key: a.key}\n" if mode == "l7" else "")
        + extra
    )


def never_local(address: str) -> bool:
    return False


# -- DNS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("10.0.0.53:5353", ("10.0.0.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        (" 127.0.0.1 ", ("127.0.0.1", 53)),
    ],
)
def test_nameserver_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example.com", "10.0.0.53:0", "10.0.0.53:x", "[::1", "[::1]x"])
def test_bad_nameservers(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_nameserver(text)


def test_name_on_the_vip_only_is_ok_and_says_who_answered() -> None:
    row = judge(Resolution(NAMESPACE, ("10.0.1.250",), "DNS 10.0.0.53"), "10.0.1.250", never_local)
    assert (row.status, row.target) == ("ok", NAMESPACE)
    assert row.detail == "→ 10.0.1.250 (DNS 10.0.0.53)"


def test_cname_chain_is_shown() -> None:
    res = Resolution("autodiscover.alwayshotcafe.com", ("10.0.1.250",), "DNS 10.0.0.53", canonical=NAMESPACE)
    assert f"via CNAME {NAMESPACE}" in judge(res, "10.0.1.250", never_local).detail


def test_other_addresses_next_to_the_vip_warn() -> None:
    res = Resolution(NAMESPACE, ("10.0.1.250", "10.0.1.11", "2001:db8::11"), "DNS 10.0.0.53")
    row = judge(res, "10.0.1.250", never_local)
    assert row.status == "warn"
    assert "10.0.1.11, 2001:db8::11 is not the VIP 10.0.1.250" in row.detail
    assert "bypass" in row.detail


def test_name_elsewhere_fails() -> None:
    row = judge(Resolution(NAMESPACE, ("10.0.1.11",), "DNS 10.0.0.53"), "10.0.1.250", never_local)
    assert row.status == "fail"
    assert "not the VIP 10.0.1.250" in row.detail


def test_unresolved_name_fails_with_the_reason() -> None:
    res = Resolution(NAMESPACE, (), "DNS 10.0.0.53", error="no such name (NXDOMAIN from DNS 10.0.0.53)")
    row = judge(res, "10.0.1.250", never_local)
    assert (row.status, row.detail) == ("fail", "no such name (NXDOMAIN from DNS 10.0.0.53)")


def test_hosts_file_only_warns() -> None:
    res = Resolution(NAMESPACE, ("10.0.1.250",), "system resolver (DNS says it does not exist)", in_dns=False)
    row = judge(res, "10.0.1.250", never_local)
    assert row.status == "warn"
    assert "system resolver" in row.detail


def test_unspecified_vip_accepts_local_addresses() -> None:
    res = Resolution(NAMESPACE, ("192.0.2.7",), "DNS 10.0.0.53")
    assert judge(res, "0.0.0.0", lambda a: a == "192.0.2.7").status == "ok"
    assert judge(res, "0.0.0.0", never_local).status == "fail"


def test_explicit_nameserver_that_does_not_answer_fails_without_fallback() -> None:
    # A port nobody listens on: the question goes unanswered within the budget.
    async def main() -> Resolution:
        return await resolve(NAMESPACE, nameservers=[("127.0.0.1", 9)], timeout=0.3)

    res = asyncio.run(main())
    assert res.error is not None
    assert res.addresses == ()
    assert "127.0.0.1:9" in res.error


# -- rows ------------------------------------------------------------------------------------------


def test_failed_only_on_fail_rows() -> None:
    rows = [Row("a", "x", "ok", ""), Row("b", "y", "warn", "")]
    assert not failed(rows)
    assert summary(rows) == "1 ok, 1 warning, 0 failures"
    rows.append(Row("c", "z", "fail", ""))
    assert failed(rows)
    assert Row("c", "z", "fail", "d").as_json() == {
        "check": "c",
        "target": "z",
        "status": "fail",
        "detail": "d",
    }


def test_health_row_in_l4_says_the_whole_server_goes() -> None:
    cfg = config()
    down = CheckResult(False, "L7STS", "HTTP 503", 0.012)
    row = health_row(cfg, cfg.servers[0], "ews", down)
    assert (row.check, row.target, row.status) == ("health", "MB1/ews", "fail")
    assert row.detail == "L7STS HTTP 503 (12 ms); l4: MB1 takes no connections while ews is down"
    ok = health_row(cfg, cfg.servers[0], "owa", CheckResult(True, "L7OK", "200 OK MB1.X", 0.003))
    assert (ok.status, ok.detail) == ("ok", "L7OK 200 OK MB1.X (3 ms)")
    l7 = config(mode="l7")
    assert "l4:" not in health_row(l7, l7.servers[0], "ews", down).detail


def test_via_rows_name_the_answering_server() -> None:
    ok = via_row("owa", NAMESPACE, Answer(True, "L7OK", "200 OK MB2.X", 200, "MB2", 0.004))
    assert (ok.status, ok.detail) == ("ok", "answered by MB2: L7OK 200 OK MB2.X (4 ms)")
    bad = via_row("owa", NAMESPACE, Answer(False, "L7STS", "HTTP 421", 421, None, 0.001))
    assert (bad.status, bad.detail) == ("fail", "no X-FEServer header: L7STS HTTP 421 (1 ms)")
    down = via_row("owa", NAMESPACE, Answer(False, "L4CON", "connect refused", None, None, 0.001))
    assert down.detail == f"L4CON connect refused (1 ms, Host {NAMESPACE})"


def test_via_targets_cover_every_service_and_the_autodiscover_name() -> None:
    cfg = config("services: [owa, autodiscover]\n")
    assert via_targets(cfg) == [
        ("owa", "/owa/healthcheck.htm", NAMESPACE),
        ("autodiscover", "/Autodiscover/healthcheck.htm", NAMESPACE),
        (
            "autodiscover (autodiscover.alwayshotcafe.com)",
            "/Autodiscover/healthcheck.htm",
            "autodiscover.alwayshotcafe.com",
        ),
    ]


def test_connect_address_of_an_unspecified_vip_is_loopback() -> None:
    assert connect_address("0.0.0.0") == "127.0.0.1"
    assert connect_address("::") == "::1"
    assert connect_address("10.0.1.250") == "10.0.1.250"


def test_fe_server_and_status_from_the_proxys_reader() -> None:
    response = ResponseStart()
    response.feed(b"HTTP/1.1 200 OK\r\nx-feserver:  MB1 \r\nContent-Length: 5\r\n\r\n200 O")
    assert (response.status, response.header(b"x-feserver"), response.body) == (200, b"MB1", b"200 O")
    assert ResponseStart().header(b"x-feserver") is None
    assert Reply(200, "OK", (("x-feserver", "MB1"),), b"").fe_server == "MB1"  # the name in any case
    assert Reply(200, "OK", (), b"").fe_server is None
    with pytest.raises(ProtocolError, match="malformed status line"):
        ResponseStart().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


# -- certificates ----------------------------------------------------------------------------------


def _der(ca: trustme.CA, *names: str) -> bytes:
    pem = ca.issue_cert(*names).cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_server_certificate_in_l4_must_cover_every_served_name() -> None:
    ca = trustme.CA()
    cfg = config()
    good = server_certificate_row(
        cfg,
        cfg.servers[0],
        PeerCertificate(_der(ca, NAMESPACE, "autodiscover.alwayshotcafe.com"), True, "L6OK"),
        NOW,
    )
    assert good.status == "ok", good
    assert "covers autodiscover.alwayshotcafe.com" in good.detail
    narrow = server_certificate_row(
        cfg, cfg.servers[0], PeerCertificate(_der(ca, NAMESPACE), True, "L6OK"), NOW
    )
    assert narrow.status == "fail"
    assert "does not cover autodiscover.alwayshotcafe.com" in narrow.detail


def test_rejected_server_certificate_fails_and_shows_what_is_presented() -> None:
    cfg = config()
    peer = PeerCertificate(_der(trustme.CA(), "wrong.example.net"), False, "L6RSP", "certificate rejected: x")
    row = server_certificate_row(cfg, cfg.servers[0], peer, NOW)
    assert row.status == "fail"
    assert "certificate rejected: x; presents" in row.detail
    assert "wrong.example.net" in row.detail
    gone = server_certificate_row(cfg, cfg.servers[1], PeerCertificate(None, False, "L4CON", "refused"), NOW)
    assert (gone.status, gone.detail) == ("fail", "L4CON refused")


def test_different_certificates_warn() -> None:
    ca = trustme.CA()
    cfg = config()
    one, two = _der(ca, NAMESPACE), _der(ca, NAMESPACE)
    same = shared_certificate_rows(
        cfg, cfg.servers, [PeerCertificate(one, True, "L6OK"), PeerCertificate(one, True, "L6OK")], None
    )
    assert [(r.check, r.status) for r in same] == [("servers share one certificate", "ok")]
    differ = shared_certificate_rows(
        cfg, cfg.servers, [PeerCertificate(one, True, "L6OK"), PeerCertificate(two, True, "L6OK")], None
    )
    assert differ[0].status == "warn"
    assert "2 different certificates" in differ[0].detail


class _SilentResolver:
    """Stands in for dnspython's resolver when no DNS server answers."""

    def __init__(self, configure: bool = True) -> None:
        self.nameservers = ["192.0.2.53"]
        self.lifetime = 0.0

    async def resolve(self, *args: object, **kwargs: object) -> object:
        raise dns.resolver.LifetimeTimeout(timeout=0.1, errors=[])


def test_no_dns_answer_falls_back_to_the_system_resolver_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns.asyncresolver, "Resolver", _SilentResolver)
    res = asyncio.run(resolve("localhost", timeout=1.0))
    assert res.error is None
    assert "127.0.0.1" in res.addresses or "::1" in res.addresses
    assert res.source.startswith("system resolver (no DNS server answered: DNS 192.0.2.53")
    assert judge(res, "127.0.0.1", never_local).status == "ok"


def test_no_resolver_configuration_falls_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def unconfigured(configure: bool = True) -> object:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.asyncresolver, "Resolver", unconfigured)
    res = asyncio.run(resolve("localhost", timeout=1.0))
    assert res.source == "system resolver (no DNS server configured in /etc/resolv.conf)"


def test_summary_per_server_and_per_service() -> None:
    from casarray.doctor import Row, per_server, per_service

    rows = [
        Row("server certificate", "MB1", "ok", "verified"),
        Row("server certificate", "MB2", "warn", "expires in 10 days"),
        Row("health", "MB1/owa", "ok", "L7OK"),
        Row("health", "MB1/ews", "ok", "L7OK"),
        Row("health", "MB2/owa", "ok", "L7OK"),
        Row("health", "MB2/ews", "fail", "L7STS HTTP 503"),
        Row("health via the VIP", "owa", "ok", "answered by MB1"),
        Row("health via the VIP", "ews", "ok", "answered by MB1"),
    ]
    servers = {t.name: (t.status, t.detail) for t in per_server(rows, ["MB1", "MB2"])}
    assert servers == {
        "MB1": ("ok", "2 of 2 services healthy; certificate ok"),
        "MB2": ("fail", "1 of 2 services healthy (failing: ews); server certificate: warn"),
    }
    services = {t.name: (t.status, t.detail) for t in per_service(rows, ["owa", "ews"])}
    assert services == {
        "owa": ("ok", "healthy on 2 of 2 servers; through the VIP: ok"),
        "ews": ("fail", "healthy on 1 of 2 servers (failing on MB2); through the VIP: ok"),
    }
