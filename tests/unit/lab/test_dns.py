"""The lab's DNS server as bytes in, bytes out: dnspython's messages against `lab.dns.answer`."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from casarray.exchange.namespace.dns import DnsRecord
from casarray.lab.dns import TTL, answer, lab_records

ZONE = "alwayshotcafe.com"
RECORDS = lab_records(
    f"outlook.{ZONE}",
    f"autodiscover.{ZONE}",
    "127.0.0.1",
    [(f"MB1.{ZONE}", "127.0.0.2"), (f"mb2.{ZONE}", "127.0.0.3"), (f"mb3.{ZONE}", "::3")],
)


def ask(name: str, rdtype: str = "A", records: list[DnsRecord] = RECORDS) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    reply = answer(records, query.to_wire())
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == query.id
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def test_the_lab_zone_holds_what_namespace_dns_prints_and_the_servers() -> None:
    assert [(r.name, r.type, r.data) for r in RECORDS] == [
        (f"outlook.{ZONE}", "A", "127.0.0.1"),
        (f"autodiscover.{ZONE}", "A", "127.0.0.1"),
        (f"mb1.{ZONE}", "A", "127.0.0.2"),
        (f"mb2.{ZONE}", "A", "127.0.0.3"),
        (f"mb3.{ZONE}", "AAAA", "::3"),
    ]
    for name, expected in ((f"outlook.{ZONE}", "127.0.0.1"), (f"AutoDiscover.{ZONE.upper()}.", "127.0.0.1")):
        response = ask(name)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert addresses(response) == [expected]
        assert response.answer[0].ttl == TTL
    assert addresses(ask(f"mb2.{ZONE}")) == ["127.0.0.3"]
    assert addresses(ask(f"mb3.{ZONE}", "AAAA")) == ["::3"]


def test_a_name_without_that_type_is_nodata_and_an_unknown_name_nxdomain_with_the_soa() -> None:
    for name, rdtype in ((f"outlook.{ZONE}", "AAAA"), (ZONE, "A"), (f"mb3.{ZONE}", "A")):
        response = ask(name, rdtype)
        assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, []), name
        assert response.authority[0].rdtype == dns.rdatatype.SOA
    response = ask(f"mb4.{ZONE}")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].name.to_text() == f"{ZONE}."
    assert addresses(ask(ZONE, "SOA"))[0].startswith(f"ns.{ZONE}. hostmaster.{ZONE}. 1 ")
    # Outside the lab nothing exists, and the lab does not claim to be its authority.
    response = ask("example.org")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert not response.flags & dns.flags.AA


def test_aliases_are_followed_and_an_srv_names_its_target() -> None:
    records = [
        DnsRecord(ZONE, f"outlook.{ZONE}", "A", "10.0.1.250"),
        DnsRecord(ZONE, f"autodiscover.{ZONE}", "CNAME", f"outlook.{ZONE}"),
        DnsRecord(ZONE, f"_autodiscover._tcp.{ZONE}", "SRV", f"outlook.{ZONE}", 0, 0, 443),
    ]
    response = ask(f"autodiscover.{ZONE}", records=records)
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(response) == [f"outlook.{ZONE}.", "10.0.1.250"]
    assert addresses(ask(f"autodiscover.{ZONE}", "CNAME", records)) == [f"outlook.{ZONE}."]
    assert addresses(ask(f"_autodiscover._tcp.{ZONE}", "SRV", records)) == [f"0 0 443 outlook.{ZONE}."]
    empty_non_terminal = ask(f"_tcp.{ZONE}", "SRV", records)  # RFC 8020: it exists, it holds nothing
    assert (empty_non_terminal.rcode(), empty_non_terminal.answer) == (dns.rcode.NOERROR, [])
    loop = [
        DnsRecord(ZONE, f"a.{ZONE}", "CNAME", f"b.{ZONE}"),
        DnsRecord(ZONE, f"b.{ZONE}", "CNAME", f"a.{ZONE}"),
    ]
    assert addresses(ask(f"a.{ZONE}", records=loop))[-1] in (f"a.{ZONE}.", f"b.{ZONE}.")  # bounded


def test_what_is_not_one_question_is_refused_as_dns_says() -> None:
    assert answer(RECORDS, b"\x00\x01garbage") is None
    query = dns.message.make_query(f"outlook.{ZONE}", "A")
    query.question.append(dns.message.make_query(f"mb1.{ZONE}", "A").question[0])
    reply = answer(RECORDS, query.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    notify = dns.message.make_query(ZONE, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = answer(RECORDS, notify.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP
