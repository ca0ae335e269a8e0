"""DNS records for the VIP, as zone-file lines and Windows DNS Server cmdlets."""

from __future__ import annotations

import pytest

from casarray.errors import InventoryError
from casarray.exchange.namespace.dns import AutodiscoverAs, dns_plan


def test_namespace_a_record() -> None:
    plan = dns_plan("outlook.alwayshotcafe.com", "10.0.1.250")
    assert plan.zone_lines()[1:] == ["outlook.alwayshotcafe.com.  3600 IN A     10.0.1.250"]
    assert plan.powershell_lines() == [
        "Add-DnsServerResourceRecordA -ZoneName 'alwayshotcafe.com' -Name 'outlook' "
        "-IPv4Address '10.0.1.250' -TimeToLive ([TimeSpan]::FromSeconds(3600))"
    ]


def test_autodiscover_as_a_record_by_default() -> None:
    plan = dns_plan("outlook.contoso.com", "10.0.1.250", autodiscover="autodiscover.contoso.com")
    assert [(r.name, r.type, r.data) for r in plan.records] == [
        ("outlook.contoso.com", "A", "10.0.1.250"),
        ("autodiscover.contoso.com", "A", "10.0.1.250"),
    ]


def test_autodiscover_as_cname() -> None:
    plan = dns_plan(
        "outlook.contoso.com",
        "10.0.1.250",
        autodiscover="autodiscover.contoso.com",
        autodiscover_as=AutodiscoverAs.CNAME,
    )
    assert "autodiscover.contoso.com.  3600 IN CNAME outlook.contoso.com." in plan.zone_lines()
    assert (
        "Add-DnsServerResourceRecordCName -ZoneName 'contoso.com' -Name 'autodiscover' "
        "-HostNameAlias 'outlook.contoso.com' -TimeToLive ([TimeSpan]::FromSeconds(3600))"
    ) in plan.powershell_lines()


def test_srv_record_in_both_forms() -> None:
    plan = dns_plan("outlook.contoso.com", "10.0.1.250", srv=True, ttl=300)
    assert "_autodiscover._tcp.contoso.com.  300 IN SRV   0 0 443 outlook.contoso.com." in plan.zone_lines()
    assert (
        "Add-DnsServerResourceRecord -Srv -ZoneName 'contoso.com' -Name '_autodiscover._tcp' "
        "-DomainName 'outlook.contoso.com' -Priority 0 -Weight 0 -Port 443 "
        "-TimeToLive ([TimeSpan]::FromSeconds(300))"
    ) in plan.powershell_lines()


def test_explicit_zone_gives_relative_names_and_apex() -> None:
    plan = dns_plan(
        "mail.corp.contoso.com", "10.0.1.250", zone="contoso.com", srv=True, autodiscover="contoso.com"
    )
    names = [(r.zone, r.relative_name) for r in plan.records]
    assert names == [
        ("contoso.com", "mail.corp"),
        ("contoso.com", "@"),
        ("contoso.com", "_autodiscover._tcp"),
    ]


def test_ipv6_vip_gives_aaaa() -> None:
    plan = dns_plan("outlook.contoso.com", "2001:db8::250", autodiscover="autodiscover.contoso.com")
    assert {r.type for r in plan.records} == {"AAAA"}
    assert "-IPv6Address '2001:db8::250'" in plan.powershell_lines()[0]


def test_autodiscover_equal_to_namespace_adds_nothing() -> None:
    assert len(dns_plan("outlook.contoso.com", "10.0.1.250", autodiscover="Outlook.Contoso.com").records) == 1


@pytest.mark.parametrize(
    ("kwargs", "where", "message"),
    [
        ({"vip": "10.0.1.300"}, "--vip", "not an IP address"),
        ({"vip": "0.0.0.0"}, "--vip", "cannot be a client-access address"),
        ({"vip": "224.0.0.1"}, "--vip", "cannot be a client-access address"),
        ({"namespace": "outlook"}, "--namespace", "not fully qualified"),
        ({"namespace": "outlook.contoso.com;rm"}, "--namespace", "not a valid DNS name"),
        ({"autodiscover": "auto discover.contoso.com"}, "--autodiscover", "not a valid DNS name"),
        ({"zone": "fabrikam.com"}, "--zone", "not inside the zone fabrikam.com"),
        ({"ttl": -1}, "--ttl", "out of range"),
    ],
)
def test_bad_input(kwargs: dict[str, object], where: str, message: str) -> None:
    args: dict[str, object] = {"namespace": "outlook.contoso.com", "vip": "10.0.1.250", **kwargs}
    with pytest.raises(InventoryError, match=message) as caught:
        dns_plan(**args)  # type: ignore[arg-type]
    assert caught.value.where == where
