"""The lab's DNS server: the organisation's internal DNS, for the lab's names only.

Clients find the balancer through DNS (the seed's second step). The lab serves the records
`casarray namespace dns` prints for the namespace and the Autodiscover name (on the VIP, 127.0.0.1) and
the servers' own A records (what Active Directory registers for each Exchange server), so a client-side
check (`casarray doctor --nameserver 127.0.0.1:PORT`) resolves every name a client is told exactly as
it would on the network: the namespace to the VIP, `mb1.<domain>` to MB1 itself. The lab has no
internet: every other name does not exist (NXDOMAIN).

`answer` is the whole server, bytes in and bytes out (dnspython's message codec); `serve_dns` puts it
on a UDP socket (RFC 1035 §4.2.1; the answers are far below 512 bytes, so no TCP is needed).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from casarray.exchange.namespace.dns import DnsRecord, dns_plan
from casarray.lab import LabError

log = logging.getLogger(__name__)

TTL = 60  # seconds; the lab's names do not change while it runs
MAX_CNAME_CHAIN = 8  # aliases followed inside the lab's records (RFC 1034 §3.6.2 leaves the bound to us)


def lab_records(
    namespace: str, autodiscover: str, vip: str, servers: Sequence[tuple[str, str]]
) -> list[DnsRecord]:
    """The lab's zone: the namespace and Autodiscover records `namespace dns` gives for the VIP, then one
    A (or AAAA) record per server (FQDN, address)."""
    records = list(dns_plan(namespace, vip, autodiscover=autodiscover).records)
    for fqdn, address in servers:
        name = fqdn.lower().rstrip(".")
        records.append(DnsRecord(name.split(".", 1)[1], name, "AAAA" if ":" in address else "A", address))
    return records


def answer(records: Sequence[DnsRecord], query: bytes) -> bytes | None:
    """The response to one DNS query from `records` (None for bytes that are not a DNS message: dropped,
    as a server drops garbage it cannot even answer with FORMERR)."""
    try:
        message = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(message)
    if message.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response.to_wire()
    if len(message.question) != 1:  # RFC 9619: exactly one question
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = message.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    zones = {r.zone for r in records}
    zone = next(
        (z for z in sorted(zones, key=len, reverse=True) if name == z or name.endswith("." + z)), None
    )
    if zone is None or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.NXDOMAIN)  # nothing outside the lab exists
        return response.to_wire()
    response.flags |= dns.flags.AA  # the lab's DNS is authoritative for its zones
    owner = name
    for _ in range(MAX_CNAME_CHAIN):
        held = [r for r in records if r.name == owner]
        alias = next((r for r in held if r.type == "CNAME"), None)
        if alias is None or question.rdtype == dns.rdatatype.CNAME:
            break
        response.answer.append(_rrset(alias))
        owner = alias.data
    else:
        held = []
    wanted = dns.rdatatype.to_text(question.rdtype)
    matching = [_rrset(r) for r in held if r.type == wanted or question.rdtype == dns.rdatatype.ANY]
    if owner in zones and question.rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
        matching.append(_soa(owner))
    response.answer += matching
    # A name exists when it holds records, is a zone's apex or lies above a name that does (an empty
    # non-terminal such as _tcp.<domain>, RFC 8020): NODATA for those, NXDOMAIN for the others.
    above = any(r.name.endswith("." + name) for r in records)
    exists = owner != name or name in zones or bool(held) or above
    if not exists:
        response.set_rcode(dns.rcode.NXDOMAIN)
    if not matching:  # NXDOMAIN or NODATA: the zone's SOA for negative caching (RFC 2308 §3)
        response.authority.append(_soa(zone))
    return response.to_wire()


def _rrset(record: DnsRecord) -> dns.rrset.RRset:
    if record.type == "SRV":
        data = f"{record.priority} {record.weight} {record.port} {record.data}."
    elif record.type == "CNAME":
        data = f"{record.data}."
    else:
        data = record.data
    return dns.rrset.from_text(f"{record.name}.", TTL, "IN", record.type, data)


def _soa(zone: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        f"{zone}.", TTL, "IN", "SOA", f"ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 {TTL}"
    )


class LabDns(asyncio.DatagramProtocol):
    """`answer` on a UDP socket. `records` may be replaced while it runs (tests change DNS this way)."""

    def __init__(self, records: Sequence[DnsRecord]) -> None:
        self.records = list(records)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = answer(self.records, data)
        if reply is None:
            log.info("lab DNS: dropped %d bytes from %s:%s that are not a DNS message", len(data), *addr[:2])
            return
        assert self.transport is not None
        self.transport.sendto(reply, addr)


async def serve_dns(
    records: Sequence[DnsRecord], host: str, port: int
) -> tuple[asyncio.DatagramTransport, LabDns]:
    """The lab's DNS server on UDP host:port (port 0: any free port; the transport's sockname says)."""
    # Bound here rather than by the loop, so a port in use reads the same on asyncio and uvloop.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LabError(f"cannot listen on udp {host}:{port}: {exc.strerror or exc}", "lab DNS") from exc
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: LabDns(records), sock=sock)
    return transport, protocol
