"""DNS records that put the namespace (and Autodiscover) on the balancer's VIP.

Two renderings of the same records: zone-file lines (RFC 1035 §5 master-file format, absolute names)
and the Windows DNS Server cmdlets (Add-DnsServerResourceRecordA/AAAA/CName, Add-DnsServerResourceRecord
-Srv). Facts behind the choices:

- Autodiscover as an A record by default: with Kerberos behind a load balancer "A records are
  recommended over CNAMEs" so clients ask for a ticket for the shared name (Microsoft: "Configuring
  Kerberos authentication for load-balanced Client Access services"). A CNAME to the namespace is the
  alternative Microsoft's mail-flow steps show.
- The SRV record `_autodiscover._tcp.<domain>` (priority 0, weight 0, port 443, target the namespace)
  is the last step of Outlook's Autodiscover lookup (Microsoft: "Autodiscover service in Exchange
  Server"); RFC 2782 requires its target to be an address record, never an alias.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from casarray.errors import InventoryError
from casarray.exchange.namespace.names import host_name
from casarray.exchange.namespace.powershell import ps_string

AUTODISCOVER_SRV = "_autodiscover._tcp"
HTTPS_PORT = 443
DEFAULT_TTL_S = 3600


class AutodiscoverAs(enum.StrEnum):
    A = "a"
    CNAME = "cname"


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One resource record; `name` and names in `data` are absolute, without the trailing dot."""

    zone: str
    name: str
    type: str  # A, AAAA, CNAME or SRV
    data: str  # the address, the alias target, or the SRV target
    priority: int = 0
    weight: int = 0
    port: int = 0

    @property
    def relative_name(self) -> str:
        """The owner name inside its zone; "@" for the zone apex."""
        if self.name == self.zone:
            return "@"
        return self.name[: -len(self.zone) - 1]


@dataclass(frozen=True, slots=True)
class DnsPlan:
    namespace: str
    vip: str
    ttl: int
    records: tuple[DnsRecord, ...]

    def zone_lines(self) -> list[str]:
        """The records as master-file lines with absolute names."""
        width = max(len(r.name) for r in self.records) + 2
        lines = [f"; {self.namespace} on {self.vip}"]
        for record in self.records:
            data = f"{record.data}." if record.type in ("CNAME", "SRV") else record.data
            if record.type == "SRV":
                data = f"{record.priority} {record.weight} {record.port} {data}"
            lines.append(f"{record.name + '.':<{width}} {self.ttl} IN {record.type:<5} {data}")
        return lines

    def powershell_lines(self) -> list[str]:
        """The records as Windows DNS Server cmdlets (run on the DNS server or add -ComputerName)."""
        ttl = f"-TimeToLive ([TimeSpan]::FromSeconds({self.ttl}))"
        lines = []
        for r in self.records:
            where = f"-ZoneName {ps_string(r.zone)} -Name {ps_string(r.relative_name)}"
            if r.type == "A":
                lines.append(f"Add-DnsServerResourceRecordA {where} -IPv4Address {ps_string(r.data)} {ttl}")
            elif r.type == "AAAA":
                lines.append(
                    f"Add-DnsServerResourceRecordAAAA {where} -IPv6Address {ps_string(r.data)} {ttl}"
                )
            elif r.type == "CNAME":
                lines.append(
                    f"Add-DnsServerResourceRecordCName {where} -HostNameAlias {ps_string(r.data)} {ttl}"
                )
            else:
                lines.append(
                    f"Add-DnsServerResourceRecord -Srv {where} -DomainName {ps_string(r.data)} "
                    f"-Priority {r.priority} -Weight {r.weight} -Port {r.port} {ttl}"
                )
        return lines


def dns_plan(
    namespace: str,
    vip: str,
    *,
    autodiscover: str | None = None,
    zone: str | None = None,
    autodiscover_as: AutodiscoverAs = AutodiscoverAs.A,
    srv: bool = False,
    ttl: int = DEFAULT_TTL_S,
) -> DnsPlan:
    """The records for `namespace` (and `autodiscover`) on `vip`; InventoryError for a bad input."""
    name = host_name(namespace, what="--namespace")
    address = _address(vip)
    if ttl < 0 or ttl > 2**31 - 1:  # RFC 2181 §8: a TTL is an unsigned 31-bit number of seconds
        raise InventoryError(f"{ttl} is out of range", where="--ttl", hint="0 to 2147483647 seconds")
    zone_name = host_name(zone, what="--zone", fqdn=False) if zone is not None else None
    kind = "A" if address.version == 4 else "AAAA"
    records = [DnsRecord(_zone_of(name, zone_name), name, kind, str(address))]
    if autodiscover is not None:
        alias = host_name(autodiscover, what="--autodiscover")
        if alias != name:
            alias_zone = _zone_of(alias, zone_name)
            if autodiscover_as is AutodiscoverAs.CNAME:
                records.append(DnsRecord(alias_zone, alias, "CNAME", name))
            else:
                records.append(DnsRecord(alias_zone, alias, kind, str(address)))
    if srv:
        domain = zone_name or _parent(name)
        records.append(DnsRecord(domain, f"{AUTODISCOVER_SRV}.{domain}", "SRV", name, 0, 0, HTTPS_PORT))
    return DnsPlan(namespace=name, vip=str(address), ttl=ttl, records=tuple(records))


def _address(vip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(vip.strip())
    except ValueError:
        raise InventoryError(
            f"{vip!r} is not an IP address",
            where="--vip",
            hint="the balancer's virtual address, e.g. 10.0.1.250",
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise InventoryError(
            f"{vip!r} cannot be a client-access address",
            where="--vip",
            hint="give the unicast address the balancer listens on",
        )
    return address


def _zone_of(name: str, zone: str | None) -> str:
    """The zone that holds `name`: `zone` when given (and `name` is inside it), else its parent."""
    if zone is None:
        return _parent(name)
    if name != zone and not name.endswith("." + zone):
        raise InventoryError(
            f"{name} is not inside the zone {zone}",
            where="--zone",
            hint="give the zone that holds the namespace, or leave --zone out",
        )
    return zone


def _parent(name: str) -> str:
    return name.split(".", 1)[1]
