"""Every check of one config, run concurrently with bounded timeouts; the result is a list of rows.

What is checked, from the balancer's side (sources: shared research, exchange-load-balancing.md):
1. the namespace and the Autodiscover name resolve to the VIP, and only to it (§1.2);
2. certificates — l7: the listener's certificate covers every served name, is not about to expire, its
   key matches, and it is the very certificate the Exchange servers present: Extended Protection (on by
   default from Exchange 2019 CU14) accepts SSL bridging only when the balancer presents the same
   certificate and key as the servers (§1.7; HAProxy issue 1828). Both modes: each server's certificate
   verifies against upstream_tls.ca with the check name, and in l4, where clients see it, covers every
   served name; all servers present one certificate, since Exchange encrypts its authentication cookie
   with it and a server holding another cannot read it (§1.1);
3. each server answers each configured service's /<vdir>/healthcheck.htm directly — with the
   balancer's own probe (§1.3);
4. through the VIP, each service's healthcheck.htm answers 200 "200 OK", and X-FEServer names the
   server that answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from casarray.config.model import Config, Server
from casarray.doctor import certs
from casarray.doctor.certs import CertificateFacts
from casarray.doctor.resolution import Resolution, is_local_address, judge, resolve
from casarray.doctor.rows import Row, Status
from casarray.doctor.wire import Answer, PeerCertificate, fetch_certificate, get_via, unverified_context
from casarray.engine.tls import upstream_context
from casarray.errors import CasarrayError
from casarray.exchange import catalog
from casarray.health.checker import HttpsProbe, probe_https
from casarray.health.state import CheckResult

T = TypeVar("T")

CONCURRENCY = 32  # network exchanges in flight at once: an array of 16 servers x 9 services is 144 checks

_ORDER: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


def worst(*statuses: Status) -> Status:
    return max(statuses, key=_ORDER.__getitem__, default="ok")


async def run_doctor(
    config: Config,
    *,
    nameservers: Sequence[tuple[str, int]] = (),
    now: datetime | None = None,
    is_local: Callable[[str], bool] = is_local_address,
) -> list[Row]:
    """Run every check of `config`; each network exchange is bounded by health.timeout."""
    timeout = config.health.timeout
    moment = now if now is not None else datetime.now(UTC)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(awaitable: Awaitable[T]) -> T:
        async with limit:
            return await awaitable

    setup: list[Row] = []
    context: ssl.SSLContext | None
    try:
        context = upstream_context(config)
    except CasarrayError as exc:
        context = None
        setup.append(Row("upstream TLS", exc.where or "upstream_tls", "fail", str(exc)))
    probe_context = context if context is not None else unverified_context()
    servers = list(config.servers)
    pairs = [(server, service) for server in servers for service in config.services]
    vip_targets = via_targets(config)
    vip_address = connect_address(config.listen.address)

    resolutions, peers, checks, answers = await asyncio.gather(
        asyncio.gather(
            *(bounded(resolve(name, nameservers=nameservers, timeout=timeout)) for name in config.names)
        ),
        asyncio.gather(
            *(
                bounded(
                    fetch_certificate(
                        server.address, server.port, config.check_server_name, probe_context, timeout
                    )
                )
                for server in servers
            )
        ),
        asyncio.gather(
            *(
                bounded(
                    probe_https(
                        HttpsProbe(
                            server.address,
                            server.port,
                            catalog.get(service).health_path,
                            config.check_server_name,
                            probe_context,
                            timeout,
                        )
                    )
                )
                for server, service in pairs
            )
        ),
        asyncio.gather(
            *(
                bounded(get_via(vip_address, config.listen.https_port, path, host, probe_context, timeout))
                for _, path, host in vip_targets
            )
        ),
    )

    rows = list(setup)
    rows += [dns_row(resolution, config, is_local) for resolution in resolutions]
    listener: CertificateFacts | None = None
    if config.mode == "l7" and config.tls is not None:
        listener_part, listener = listener_rows(config, moment)
        rows += listener_part
    rows += [server_certificate_row(config, s, p, moment) for s, p in zip(servers, peers, strict=True)]
    rows += shared_certificate_rows(config, servers, peers, listener)
    rows += [health_row(config, s, svc, r) for (s, svc), r in zip(pairs, checks, strict=True)]
    rows += [via_row(label, host, a) for (label, _, host), a in zip(vip_targets, answers, strict=True)]
    return rows


def connect_address(listen: str) -> str:
    """Where to reach the VIP from this host: an unspecified listen address means every local one."""
    ip = ipaddress.ip_address(listen)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return listen


def via_targets(config: Config) -> list[tuple[str, str, str]]:
    """(label, path, host) of the requests sent through the VIP: every service on the namespace, and
    Autodiscover on its own name too (that is the name Outlook asks for it)."""
    targets: list[tuple[str, str, str]] = [
        (name, catalog.get(name).health_path, config.namespace) for name in config.services
    ]
    if config.autodiscover and "autodiscover" in config.services:
        path = catalog.get("autodiscover").health_path
        targets.append((f"autodiscover ({config.autodiscover})", path, config.autodiscover))
    return targets


def dns_row(resolution: Resolution, config: Config, is_local: Callable[[str], bool]) -> Row:
    return judge(resolution, config.listen.address, is_local)


# -- certificates ----------------------------------------------------------------------------------


def listener_rows(config: Config, now: datetime) -> tuple[list[Row], CertificateFacts | None]:
    """l7: the certificate clients see — readable, key matching, every name covered, not expiring."""
    assert config.tls is not None
    rows: list[Row] = []
    main: CertificateFacts | None = None
    covering: list[tuple[str, CertificateFacts]] = []
    pairs = [(config.tls.certificate, config.tls.key)] + [(p.certificate, p.key) for p in config.tls.extra]
    for index, (cert_path, key_path) in enumerate(pairs):
        row, found = _listener_pair(cert_path, key_path)
        rows.append(row)
        if found is None:
            continue
        if index == 0:
            main = found
        covering.append((cert_path, found))
        status, detail = certs.validity(found, now)
        rows.append(Row("listener certificate validity", cert_path, status, detail))
    if covering:
        for name in config.names:
            rows.append(_coverage_row(name, covering))
    return rows, main


def listener_problems(config: Config, now: datetime) -> list[tuple[tuple[str | int, ...], str]]:
    """The listener checks that need no network (l7), as (config key, problem) pairs: what `casarray
    check` reports and `casarray init` refuses. A certificate that does not name a served name, a key
    that is not its own or an expired certificate is an error before the balancer starts, not a surprise
    in clients (RFC 6125 §6.4: a client checks the name it asked for against the DNS SANs)."""
    if config.tls is None:
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    covering: list[tuple[str, CertificateFacts]] = []
    pairs: list[tuple[tuple[str | int, ...], str, str]] = [
        (("tls", "certificate"), config.tls.certificate, config.tls.key)
    ]
    pairs += [
        (("tls", "extra", i, "certificate"), p.certificate, p.key) for i, p in enumerate(config.tls.extra)
    ]
    for loc, cert_path, key_path in pairs:
        row, found = _listener_pair(cert_path, key_path)
        if row.status == "fail":
            problems.append((loc, f"{cert_path}: {row.detail}"))
        if found is None:
            continue
        covering.append((cert_path, found))
        status, detail = certs.validity(found, now)
        if status == "fail":
            problems.append((loc, f"{cert_path}: {detail}"))
    names: list[tuple[tuple[str | int, ...], str]] = [(("namespace",), config.namespace)]
    if config.autodiscover:
        names.append((("autodiscover",), config.autodiscover))
    for loc, name in names if covering else ():
        coverage = _coverage_row(name, covering)
        if coverage.status == "fail":
            problems.append(
                (
                    loc,
                    f"{name} is not on the certificate clients see, so they would refuse it: {coverage.detail}",
                )
            )
    return problems


def _listener_pair(cert_path: str, key_path: str) -> tuple[Row, CertificateFacts | None]:
    check = "listener certificate"
    try:
        chain = certs.load_pem_chain(Path(cert_path).read_bytes())
    except OSError as exc:
        return Row(check, cert_path, "fail", f"cannot read: {exc.strerror or exc}"), None
    except ValueError as exc:
        return Row(check, cert_path, "fail", f"not a PEM certificate: {exc}"), None
    found = certs.facts(chain[0])
    try:
        key = certs.load_private_key(Path(key_path).read_bytes())
    except OSError as exc:
        return Row(check, cert_path, "fail", f"cannot read the key {key_path}: {exc.strerror or exc}"), found
    except ValueError as exc:
        return Row(check, cert_path, "fail", f"the key {key_path} is not usable: {exc}"), found
    if not certs.key_matches(chain[0], key):
        return Row(check, cert_path, "fail", f"the key {key_path} does not belong to this certificate"), found
    return (
        Row(
            check,
            cert_path,
            "ok",
            f"{found.subject}, issued by {found.issuer}; key matches; SHA-256 {found.sha256}",
        ),
        found,
    )


def _coverage_row(name: str, covering: list[tuple[str, CertificateFacts]]) -> Row:
    check = "listener certificate covers"
    for path, found in covering:
        san = found.covering(name)
        if san is not None:
            return Row(check, name, "ok", f"DNS name {san} in {path}")
    names = "; ".join(f"{path}: {', '.join(found.dns_names) or 'none'}" for path, found in covering)
    return Row(check, name, "fail", f"no certificate names it (DNS names {names})")


def server_certificate_row(config: Config, server: Server, peer: PeerCertificate, now: datetime) -> Row:
    """The certificate a server presents with SNI = the check name: verified, valid, and in l4 (where
    clients see this very certificate) covering every served name."""
    check, target = "server certificate", server.name
    if peer.der is None:
        return Row(check, target, "fail", f"{peer.code} {peer.error}")
    found = certs.facts_from_der(peer.der)
    parts: list[str] = []
    statuses: list[Status] = []
    if not config.upstream_tls.verify:
        statuses.append("warn")
        parts.append("not verified (upstream_tls.verify: false)")
    elif not peer.verified:
        statuses.append("fail")
        why = peer.error or "not verified: no usable upstream_tls.ca"
        parts.append(f"{why}; presents {certs.describe(found)}")
    else:
        trust = f"upstream_tls.ca {config.upstream_tls.ca}" if config.upstream_tls.ca else "the system store"
        parts.append(f"verified for {config.check_server_name} against {trust}")
    if config.mode == "l4":
        for name in config.names:
            san = found.covering(name)
            if san is None:
                statuses.append("fail")
                parts.append(f"does not cover {name} (DNS names: {', '.join(found.dns_names) or 'none'})")
            else:
                parts.append(f"covers {name}" + (f" ({san})" if san != name else ""))
    status, validity = certs.validity(found, now)
    statuses.append(status)
    parts.append(validity)
    parts.append(f"SHA-256 {certs.short_fingerprint(found.sha256)}")
    return Row(check, target, worst(*statuses), "; ".join(parts))


def shared_certificate_rows(
    config: Config,
    servers: Sequence[Server],
    peers: Sequence[PeerCertificate],
    listener: CertificateFacts | None,
) -> list[Row]:
    """l7: each server presents the listener's certificate (Extended Protection with SSL bridging);
    both modes: all servers present one certificate (Exchange's authentication cookie)."""
    rows: list[Row] = []
    prints = {
        server.name: certs.fingerprint(peer.der)
        for server, peer in zip(servers, peers, strict=True)
        if peer.der is not None
    }
    if listener is not None:
        check = "same certificate as the listener"
        for server in servers:
            seen = prints.get(server.name)
            if seen is None:
                rows.append(Row(check, server.name, "warn", "cannot compare: no certificate fetched"))
            elif seen == listener.sha256:
                rows.append(Row(check, server.name, "ok", f"SHA-256 {certs.short_fingerprint(seen)}"))
            else:
                rows.append(
                    Row(
                        check,
                        server.name,
                        "warn",
                        f"{server.name} presents SHA-256 {certs.short_fingerprint(seen)}, the listener "
                        f"{certs.short_fingerprint(listener.sha256)}: with Extended Protection, Exchange "
                        "accepts SSL bridging only when the balancer presents the same certificate and key "
                        "as the servers (Microsoft, Exchange Extended Protection)",
                    )
                )
    if len(prints) >= 2:
        groups: dict[str, list[str]] = {}
        for name, value in prints.items():
            groups.setdefault(value, []).append(name)
        check, target = "servers share one certificate", ", ".join(prints)
        if len(groups) == 1:
            (value,) = groups
            rows.append(Row(check, target, "ok", f"SHA-256 {certs.short_fingerprint(value)}"))
        else:
            shown = "; ".join(f"{', '.join(n)}: {certs.short_fingerprint(v)}" for v, n in groups.items())
            rows.append(
                Row(
                    check,
                    target,
                    "warn",
                    f"{len(groups)} different certificates ({shown}): Exchange encrypts its authentication "
                    "cookie with the certificate, so a client moved to a server with another one must "
                    "log on again (Microsoft, Load balancing in Exchange Server)",
                )
            )
    return rows


# -- health ----------------------------------------------------------------------------------------


def health_row(config: Config, server: Server, service: str, result: CheckResult) -> Row:
    target = f"{server.name}/{service}"
    ms = f"{result.duration * 1000:.0f} ms"
    if result.ok:
        return Row("health", target, "ok", f"{result.code} {result.reason} ({ms})")
    detail = f"{result.code} {result.reason} ({ms})"
    if config.mode == "l4" and service in config.required_services:
        # Layer 4 cannot tell one service's connections from another's: the whole server goes.
        detail += f"; l4: {server.name} takes no connections while {service} is down"
    return Row("health", target, "fail", detail)


def via_row(label: str, host: str, answer: Answer) -> Row:
    who = f"answered by {answer.fe_server}" if answer.fe_server else "no X-FEServer header"
    ms = f"{answer.duration * 1000:.0f} ms"
    if answer.ok:
        return Row("health via the VIP", label, "ok", f"{who}: {answer.code} {answer.reason} ({ms})")
    if answer.status is None:
        return Row("health via the VIP", label, "fail", f"{answer.code} {answer.reason} ({ms}, Host {host})")
    return Row("health via the VIP", label, "fail", f"{who}: {answer.code} {answer.reason} ({ms})")
