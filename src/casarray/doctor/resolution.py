"""How a client-facing name resolves, and whether that leads to the VIP.

Clients find the balancer through DNS: the namespace (and the Autodiscover name) must resolve to the
VIP and only to it, or some clients bypass it (Microsoft, "Load balancing in Exchange Server": DNS
round robin gives neither fair distribution nor service monitoring). The doctor asks DNS with
dnspython — the system's resolv.conf servers, or the ones given with --nameserver, for example the
internal DNS servers of a split-brain zone — and, when no DNS server answers, falls back to the system
resolver (getaddrinfo: /etc/hosts, then whatever nsswitch.conf lists), saying which answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from casarray.doctor.rows import Row, Status
from casarray.netaddr import split_host_port

SYSTEM = "system resolver"
NO_RESOLV_CONF = "no DNS server configured in /etc/resolv.conf"


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one name resolved to and who said so. `error` is set when it did not resolve."""

    name: str
    addresses: tuple[str, ...]
    source: str  # "DNS 10.0.0.53" or "system resolver (…why…)"
    canonical: str | None = None  # the end of a CNAME chain, when there is one
    error: str | None = None
    in_dns: bool = True  # False when DNS said NXDOMAIN and only the system resolver knows the name


def parse_nameserver(text: str) -> tuple[str, int]:
    """'10.0.0.53', '10.0.0.53:5353', '2001:db8::53' or '[2001:db8::53]:5353' → (address, port)."""
    try:
        host, port = split_host_port(text.strip(), default_port=53)
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"expected an IP address (optionally :port), got {text!r}: {exc}") from None
    if not port:
        raise ValueError(f"expected a port 1-65535 in {text!r}")
    return host, port


async def resolve(
    name: str,
    *,
    nameservers: Sequence[tuple[str, int]] = (),
    timeout: float,  # noqa: ASYNC109 - dnspython's lifetime, and the fallback's own bound
) -> Resolution:
    """A and AAAA of `name` from DNS; the system resolver when no DNS server answers (or when DNS says
    the name does not exist, to tell a hosts-file-only name apart). With explicit `nameservers` there is
    no fallback: the question is what those servers answer."""
    resolver = _resolver(nameservers, timeout)
    if resolver is None:
        return await _system(name, timeout, NO_RESOLV_CONF)
    servers = ", ".join(_nameserver_text(ns) for ns in resolver.nameservers) or "none"
    source = f"DNS {servers}"
    qname = dns.name.from_text(name)
    results = await asyncio.gather(
        *(resolver.resolve(qname, rdtype, search=False) for rdtype in ("A", "AAAA")), return_exceptions=True
    )
    addresses: list[str] = []
    canonical: str | None = None
    unanswered: list[str] = []
    nxdomain = False
    for result in results:
        if isinstance(result, dns.resolver.Answer):
            addresses += [rdata.to_text() for rdata in result]
            if result.canonical_name != qname:
                canonical = result.canonical_name.to_text(omit_final_dot=True)
        elif isinstance(result, dns.resolver.NXDOMAIN):
            nxdomain = True
        elif isinstance(result, dns.resolver.NoAnswer):
            pass  # the name exists, without records of this type
        elif isinstance(result, dns.resolver.LifetimeTimeout):
            unanswered.append(f"no answer within {timeout:g}s")
        elif isinstance(result, dns.resolver.NoNameservers):
            unanswered.append("every DNS server failed (SERVFAIL or refused)")
        elif isinstance(result, dns.exception.DNSException):
            unanswered.append(str(result) or type(result).__name__)
        elif isinstance(result, BaseException):
            raise result
    if addresses:
        return Resolution(name, tuple(dict.fromkeys(addresses)), source, canonical)
    if nxdomain:
        if not nameservers:
            hosts = await _system(name, timeout, "")
            if hosts.error is None:
                return Resolution(
                    name, hosts.addresses, f"{SYSTEM} (DNS {servers} says it does not exist)", in_dns=False
                )
        return Resolution(name, (), source, error=f"no such name (NXDOMAIN from {source})")
    if unanswered:
        reason = f"{source}: {unanswered[0]}"
        if nameservers:
            return Resolution(name, (), source, error=reason)
        return await _system(name, timeout, f"no DNS server answered: {reason}")
    return Resolution(name, (), source, error=f"no A or AAAA record ({source})")


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record's target (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


async def resolve_srv(
    name: str,
    *,
    nameservers: Sequence[tuple[str, int]] = (),
    timeout: float,  # noqa: ASYNC109 - dnspython's lifetime
) -> tuple[list[SrvRecord], str | None]:
    """The SRV records of `name`, lowest priority first and, within one, heaviest weight first (RFC 2782
    picks by weight at random; a check wants one stable order), and the reason when there are none.
    There is no system-resolver fallback: getaddrinfo has no SRV."""
    resolver = _resolver(nameservers, timeout)
    if resolver is None:
        return [], NO_RESOLV_CONF
    try:
        answer = await resolver.resolve(dns.name.from_text(name), "SRV", search=False)
    except dns.resolver.NXDOMAIN:
        return [], "no such name (NXDOMAIN)"
    except dns.resolver.NoAnswer:
        return [], "no SRV record"
    except dns.resolver.LifetimeTimeout:
        return [], f"no answer within {timeout:g}s"
    except dns.exception.DNSException as exc:
        return [], str(exc) or type(exc).__name__
    records = [
        SrvRecord(rdata.priority, rdata.weight, rdata.port, rdata.target.to_text(omit_final_dot=True))
        for rdata in answer
    ]
    records.sort(key=lambda r: (r.priority, -r.weight, r.target))
    return records, None


def _resolver(nameservers: Sequence[tuple[str, int]], timeout: float) -> dns.asyncresolver.Resolver | None:
    """A resolver asking `nameservers` (else /etc/resolv.conf's), None when there are none."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration:
        return None
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    resolver.lifetime = timeout
    return resolver


async def _system(
    name: str,
    timeout: float,  # noqa: ASYNC109 - same budget as the DNS question
    why: str,
) -> Resolution:
    source = f"{SYSTEM} ({why})" if why else SYSTEM
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        return Resolution(name, (), source, error=f"no answer within {timeout:g}s from the {SYSTEM}")
    except socket.gaierror as exc:
        return Resolution(name, (), source, error=f"does not resolve: {exc.strerror}")
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    return Resolution(name, addresses, source)


def _nameserver_text(nameserver: object) -> str:
    if isinstance(nameserver, dns.nameserver.Do53Nameserver):
        address, port = nameserver.address, nameserver.port
        host = f"[{address}]" if ":" in address else address
        return host if port == 53 else f"{host}:{port}"
    return str(nameserver)


def judge(resolution: Resolution, vip: str, is_local: Callable[[str], bool]) -> Row:
    """The row for one name: ok when it resolves to the VIP only; warn when other addresses come with
    it (those clients bypass the balancer) or only a hosts file knows it; fail otherwise. With an
    unspecified VIP (0.0.0.0 / ::) every local address of this host counts as the VIP."""
    check, target = "name resolves to the VIP", resolution.name
    if resolution.error is not None:
        return Row(check, target, "fail", resolution.error)
    shown = ", ".join(resolution.addresses)
    via = f" via CNAME {resolution.canonical}" if resolution.canonical else ""
    where = f"{shown}{via} ({resolution.source})"
    vip_ip = ipaddress.ip_address(vip)
    if vip_ip.is_unspecified:
        ours = [a for a in resolution.addresses if is_local(a)]
        vip_text = f"an address of this host (listen.address {vip})"
    else:
        ours = [a for a in resolution.addresses if ipaddress.ip_address(a) == vip_ip]
        vip_text = f"the VIP {vip}"
    others = [a for a in resolution.addresses if a not in ours]
    status: Status
    if not ours:
        status, detail = "fail", f"→ {where}: not {vip_text}"
    elif others:
        status = "warn"
        detail = (
            f"→ {where}: {', '.join(others)} is not {vip_text}; clients given that address bypass "
            "the balancer (DNS round robin has no health checks)"
        )
    elif not resolution.in_dns:
        status = "warn"
        detail = f"→ {where}: only this host's resolver knows it; clients ask DNS"
    else:
        status, detail = "ok", f"→ {where}"
    return Row(check, target, status, detail)


def is_local_address(address: str) -> bool:
    """Is `address` one of this host's? (binding to it succeeds only then)"""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True
