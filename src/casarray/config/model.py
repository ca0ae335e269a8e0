"""Typed configuration (DESIGN.md §3). Frozen pydantic models; unknown keys are errors.

Each field's description is what docs/config.md shows; defaults fit Exchange (DESIGN.md §6).
This module does no I/O: loading and error locations live in `casarray.config.load`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from casarray.config.units import parse_duration, parse_size
from casarray.netaddr import is_loopback_host, split_host_port

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Port = Annotated[int, Field(ge=1, le=65535)]
ListenPort = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port (tests)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def check_dns_name(value: str) -> str:
    """A host name as DNS allows it (RFC 1123 labels), at least two labels; returned lower-cased."""
    name = value.rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"expected a DNS name such as outlook.example.com, got {value!r}")
    return name.lower()


DnsName = Annotated[str, BeforeValidator(lambda v: check_dns_name(v) if isinstance(v, str) else v)]


def _casefold(value: object) -> object:
    """`mode: L7`, `balance: RoundRobin`: every choice of the settings that use this is lower-case and
    no two differ only by case, so the case an admin typed cannot change the meaning."""
    return value.lower() if isinstance(value, str) else value


AnyCase = BeforeValidator(_casefold)


def _tls_version(value: object) -> object:
    """`min_version: 1.2` is read by YAML as a number; the two numbers mean the two versions."""
    if isinstance(value, float) and value in (1.2, 1.3):
        return str(value)
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("expected a network such as 10.0.0.0/8 or an address") from None
    return value


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _cookie_name(value: str) -> str:
    # RFC 6265 §4.1.1: a cookie-name is an RFC 7230 token.
    if not _TOKEN.match(value):
        raise ValueError("expected a cookie name: letters, digits and !#$%&'*+.^_`|~- (RFC 6265 §4.1.1)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    address: str = Field("0.0.0.0", description="The virtual IP to listen on (any local address).")
    https_port: ListenPort = Field(443, description="Port of the HTTPS (or l4 pass-through) listener.")
    http_port: Port | None = Field(
        None, description="Optional plain-HTTP port; in l7 it redirects to https://<namespace>/owa."
    )

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"expected an IP address such as 10.0.1.250, got {value!r}") from None
        return value


class CertificatePair(_Model):
    certificate: str = Field(description="PEM file: a certificate chain (leaf first).")
    key: str = Field(description="PEM file: the private key of that certificate.")


class Tls(_Model):
    certificate: str = Field(
        description="PEM file: the certificate chain clients see (l7). With Extended "
        "Protection it must be the one the Exchange servers use."
    )
    key: str = Field(description="PEM file: the private key of that certificate (l7).")
    extra: list[CertificatePair] = Field(
        default_factory=list, description="More certificates, chosen by SNI for the names they cover."
    )
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)] = Field(
        "1.2", description="Oldest TLS version clients may use."
    )
    hsts: Duration | None = Field(
        None,
        description="Strict-Transport-Security max-age sent with the balancer's own https "
        "redirects (/ and /owa to /owa/), e.g. 365d; unset: no header. Never sent over http_port.",
    )


class UpstreamTls(_Model):
    ca: str | None = Field(
        None, description="PEM bundle trusted for the Exchange servers; default: system store."
    )
    verify: bool = Field(
        True, description="Verify the servers' certificates (health checks, l7 re-encryption)."
    )
    server_name: str | None = Field(
        None, description="SNI and the name verified on the servers' certificates; default: the namespace."
    )


class Server(_Model):
    name: str = Field(
        description="Exchange server name, e.g. MB1 (used in logs, cookies, the API).",
        min_length=1,
        max_length=64,
    )
    address: str = Field(description="IP address or resolvable host name of the server.", min_length=1)
    port: Port = Field(443, description="HTTPS port of the server's front end (never the 444 back end).")
    weight: int = Field(1, ge=0, le=256, description="Relative share of new connections; 0 takes none.")
    maxconn: int | None = Field(
        None,
        ge=1,
        description="Most concurrent connections to this server per worker process; beyond it "
        "clients wait in the queue.",
    )
    mail_ports: dict[int, Port] = Field(
        default_factory=dict,
        description="Mail port on this server for a VIP mail port, e.g. {993: 10993}; "
        "default: the same port.",
    )


AffinityMode = Literal["none", "source", "cookie"]
DEFAULT_COOKIE = "CASARRAY"


def _affinity_shorthand(value: object) -> object:
    """`affinity: cookie` is the section `{mode: cookie}` with every other setting at its default (how
    configs written before the section existed say it)."""
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, dict):
        return value
    raise ValueError("expected none, source or cookie, or a section (mode:, cookie:, secret_file:)")


class Affinity(_Model):
    mode: Annotated[AffinityMode, AnyCase] = Field(
        "none", description="none (Microsoft's recommendation), source (client address), cookie (l7)."
    )
    cookie: Annotated[str, AfterValidator(_cookie_name)] | None = Field(
        None,
        description=f"Name of the cookie that pins a browser to a server (mode: cookie); default "
        f"{DEFAULT_COOKIE} (or the older top-level affinity_cookie).",
    )
    secret_file: str | None = Field(
        None,
        description="mode: cookie: file of the secrets cookies are signed with, one a line, at least 32 "
        "characters each (`openssl rand -hex 32`); the first signs, every one is accepted (add a new one "
        "first to rotate). The same file on every node. Default: a key derived from the namespace, which "
        "every node shares but anyone can compute.",
    )


class Health(_Model):
    enabled: bool = Field(True, description="Run health checks; when false every server counts as up.")
    interval: Duration = Field(5.0, gt=0, description="Time between two checks of one (server, service).")
    timeout: Duration = Field(3.0, gt=0, description="Time one check may take (connect, TLS, response).")
    rise: int = Field(2, ge=1, description="Consecutive successes that bring a member up.")
    fall: int = Field(2, ge=1, description="Consecutive failures that take a member down.")
    jitter: float = Field(
        0.1, ge=0, le=0.5, description="Random spread of the interval (fraction) so checks do not align."
    )


class Timeouts(_Model):
    connect: Duration = Field(
        5.0,
        gt=0,
        description="Time to establish a TCP connection to a server; beyond it the next server is tried.",
    )
    # A frozen server's kernel still completes the TCP handshake (its listen backlog), so only a bound on
    # the TLS handshake notices it. A LAN handshake takes milliseconds; HAProxy counts it in `timeout
    # connect`, kept here as its own shorter bound so a new request moves on quickly.
    upstream_handshake: Duration = Field(
        2.0,
        gt=0,
        description="l7: time a server has to complete the TLS handshake once connected; beyond it "
        "the next server is tried.",
    )
    # ActiveSync Ping holds a request up to 59 min (MS-ASCMD 2.2.3.88.1): idle timeouts must be >= 1 h.
    client_idle: Duration = Field(
        3600.0,
        gt=0,
        description="Close a connection when the client side is "
        "silent this long (>= 1h for ActiveSync Direct Push).",
    )
    server_idle: Duration = Field(
        3600.0, gt=0, description="Close a connection when the server side is silent this long."
    )
    queue: Duration = Field(30.0, gt=0, description="Longest wait in the queue when maxconn is reached.")
    request_header: Duration = Field(
        10.0,
        gt=0,
        description="l7: time a client has to complete its TLS handshake, and to send a whole "
        "request head once it started one (slowloris); beyond it 408.",
    )
    keepalive: Duration = Field(
        120.0,
        gt=0,
        description="l7: idle time allowed between two requests on a "
        "client connection (IIS closes idle connections after 120s).",
    )
    # An idle upstream connection costs the balancer its TLS state (and a descriptor), and the server
    # one of its connections, for as long as the client keeps its own (keepalive: 2 min; Outlook and
    # browsers hold theirs far longer). Reopening costs one TCP + TLS handshake on the LAN, a few ms,
    # on the next request. Requests of one action (a page load, an Outlook sync) follow each other
    # within a second or two; 5 s covers such a burst, so a connection is reopened only once the user
    # paused. Connections that carried NTLM/Negotiate are never released (proxy/session.py).
    upstream_release: Duration = Field(
        5.0,
        ge=0,
        description="l7: close the upstream connection of a client connection idle this long between "
        "requests, unless it carried NTLM or Negotiate (those stay with their client connection for "
        "life); the client's next request opens a new one, to the server balancing and affinity pick "
        "then. 0 never releases (one upstream connection per client connection for its whole life).",
    )
    body_idle: Duration = Field(
        120.0,
        gt=0,
        description="l7: silence allowed inside a request or response "
        "body of short-lived services (owa, ecp, oab, autodiscover); long-lived "
        "services (ews, mapi, rpc, eas, powershell) use client_idle/server_idle.",
    )
    # ActiveSync Ping may hold a request up to 59 min before the response starts (MS-ASCMD 2.2.3.88.1).
    server: Duration = Field(
        3900.0,
        gt=0,
        description="l7: time a server has to start its response once "
        "the request was sent (>= 1h for ActiveSync Ping); beyond it 504.",
    )
    grace: Duration = Field(
        30.0,
        ge=0,
        description="On SIGTERM (stop), how long open connections may finish before the rest are "
        "closed. A reload does not use it: see hard_stop_after.",
    )
    # HAProxy's hard-stop-after: the old processes of a reload serve what they hold, up to this bound.
    # An ActiveSync Ping holds its request up to 59 min (MS-ASCMD 2.2.3.88.1): the default outlasts it.
    hard_stop_after: Duration = Field(
        3900.0,
        ge=0,
        description="On reload, how long the old config may keep serving the connections it holds "
        "(requests and streams in flight; an idle keep-alive connection is closed after its next "
        "response or at its keep-alive timeout) before the rest are closed (>= 1h for ActiveSync Ping).",
    )


class Limits(_Model):
    maxconn: int = Field(
        20000, ge=1, description="Most concurrent client connections on the listener, per worker process."
    )
    queue: int = Field(1024, ge=0, description="Most connections waiting for a free slot (FIFO).")
    # Apache's mod_reqtimeout (`body=...,MinRate=500`): a trickled body is cut, a slow link is not.
    min_upload_rate: Size = Field(
        500,
        description="l7, short-lived services (owa, ecp, oab, autodiscover): least average request-body "
        "rate in bytes/s; a body gets timeouts.body_idle plus one second per this many bytes received, "
        "beyond it 408. 0 turns it off. Long-lived services (ews, mapi, rpc, eas, powershell) are exempt.",
    )


class Log(_Model):
    level: Annotated[Literal["debug", "info", "warning", "error"], AnyCase] = Field(
        "info", description="Level of the event log (state changes, refusals, errors) on stderr."
    )
    access: bool = Field(False, description="One access-log line per l4 connection / l7 request.")
    format: Annotated[Literal["text", "json"], AnyCase] = Field("text", description="Access-log line format.")
    file: str | None = Field(
        None, description="Access-log file (reopened on SIGUSR1 for logrotate); default: stderr."
    )


class Admin(_Model):
    listen: str = Field("127.0.0.1:9090", description="Address:port of the admin API and dashboard.")
    token_file: str | None = Field(None, description="File holding the bearer token for changes.")
    max_streams: int = Field(
        16,
        ge=1,
        le=1024,
        description="Most /api/stream readers (dashboards) at once; beyond it 503. Each costs a "
        "snapshot per second on the balancer's own event loop.",
    )


def _admin_url(value: str) -> str:
    """`http://10.0.1.2:9090` (a trailing slash allowed): the admin API of a node, returned as
    http://host:port with the host lower-cased. The admin API speaks plain HTTP (admin/server.py)."""
    expected = "expected an admin API URL such as http://10.0.1.2:9090"  # the loader says what was found
    scheme, colon_slashes, rest = value.partition("://")
    if not colon_slashes:
        raise ValueError(f"{expected}: the scheme http:// is missing")
    if scheme.lower() != "http":
        raise ValueError(f"{expected}: the admin API speaks plain http (no TLS of its own)")
    netloc = rest.removesuffix("/")
    if not netloc or any(c in netloc for c in "/?#@"):
        raise ValueError(f"{expected}: only http://host:port, without a path, query or user")
    try:
        host, port = split_host_port(netloc)
    except ValueError as exc:
        raise ValueError(f"{expected}: {exc}") from None
    if not port:
        raise ValueError(f"{expected}: the port is missing (the port of that node's admin.listen)")
    host = host.lower()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


AdminUrl = Annotated[str, AfterValidator(_admin_url)]


class Peers(_Model):
    nodes: list[AdminUrl] = Field(
        min_length=1,
        description="Admin API URL of each node, e.g. [http://10.0.1.2:9090, http://10.0.1.3:9090]. "
        "A node finds itself in the list by its admin.listen (the same address and port, or with a "
        "wildcard listen address one of its own addresses and the port) and skips it, so every node can "
        "share one file.",
    )
    token_file: str | None = Field(
        None,
        description="File holding the admin token of the other nodes; default: admin.token_file "
        "(one token for every node).",
    )
    timeout: Duration = Field(
        2.0, gt=0, description="How long a node has to answer a change pushed to it or a sync."
    )
    sync_interval: Duration = Field(
        10.0,
        gt=0,
        description="How often the states of the other nodes are read again, so a node that missed a "
        "change (unreachable at the time) catches up; newest wins.",
    )


class MailProtocol(_Model):
    ports: list[Port] = Field(
        description="Ports listened on the VIP for this protocol; each is an l4 "
        "listener with its own pool and health check."
    )
    balance: Annotated[Literal["roundrobin", "leastconn", "source"], AnyCase] | None = Field(
        None,
        description="How a server is chosen; default leastconn for imap and pop3 (long sessions), "
        "roundrobin for smtp.",
    )
    require_starttls: bool = Field(
        False,
        description="The health check also requires STARTTLS (STLS for "
        "POP3) to be advertised on the plain ports.",
    )


class Mail(_Model):
    imap: MailProtocol | None = Field(None, description="IMAP4 listeners (143, 993).")
    pop3: MailProtocol | None = Field(None, description="POP3 listeners (110, 995).")
    smtp: MailProtocol | None = Field(None, description="SMTP listeners (25, 587).")


ServiceName = Literal["owa", "ecp", "ews", "mapi", "rpc", "oab", "eas", "autodiscover", "powershell"]
# The service catalog (exchange/catalog.py) names the same services; config/ does not import exchange/
# (whose namespace toolkit imports config/): tests/unit/test_catalog.py checks the two lists agree.
_ALL_SERVICES: tuple[ServiceName, ...] = get_args(ServiceName)
Service = Annotated[ServiceName, AnyCase]


class Config(_Model):
    namespace: DnsName = Field(description="The unified client-access name, e.g. outlook.alwayshotcafe.com.")
    autodiscover: DnsName | None = Field(None, description="Second name served on the same VIP.")
    mode: Annotated[Literal["l4", "l7"], AnyCase] = Field(
        "l4", description="l4: TCP pass-through; l7: TLS termination and per-service routing."
    )
    listen: Listen = Field(default_factory=lambda: Listen(), description="Where clients connect.")
    tls: Tls | None = Field(None, description="Certificate clients see (l7 only).")
    upstream_tls: UpstreamTls = Field(
        default_factory=lambda: UpstreamTls(), description="TLS to the Exchange servers."
    )
    servers: list[Server] = Field(min_length=1, description="The Exchange servers of the array.")
    services: list[Service] = Field(
        default_factory=lambda: list(_ALL_SERVICES),
        description="Services balanced and health-checked.",
    )
    l4_require: list[Service] | None = Field(
        None,
        description="l4: services that must all be up for a server to take connections; "
        "default: every configured service (l4 cannot tell which service a connection is for).",
    )
    balance: Annotated[Literal["roundrobin", "leastconn", "source"], AnyCase] = Field(
        "roundrobin",
        description="How a server is chosen: roundrobin, leastconn or source "
        "(rendezvous hash of the client address).",
    )
    affinity: Annotated[Affinity, BeforeValidator(_affinity_shorthand)] = Field(
        default_factory=lambda: Affinity(),
        description="Stickiness: a mode alone (`affinity: source`) or a section. Every node makes the "
        "same choice for a client given the same config and server states.",
    )
    retries: int = Field(2, ge=0, le=10, description="Further servers tried when a connect fails.")
    affinity_cookie: Annotated[str, AfterValidator(_cookie_name)] | None = Field(
        None, description="Older spelling of affinity.cookie (still read)."
    )
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(
        default_factory=list,
        description="l7: networks (CIDR) whose X-Forwarded-For is kept and appended "
        "to; from anyone else it is replaced by the client address.",
    )
    host_check: bool = Field(
        True, description="l7: answer 421 to a Host that is not one of the served names."
    )
    health: Health = Field(default_factory=lambda: Health(), description="Health checks.")
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts(), description="Timeouts.")
    limits: Limits = Field(default_factory=lambda: Limits(), description="Connection limits.")
    admin: Admin | None = Field(None, description="Admin API and dashboard.")
    peers: Peers | None = Field(
        None,
        description="The other nodes of an HA pair or ECMP group: operator states (ready, drain, maint) "
        "set on one node are applied on all, and a node that starts takes them from the others.",
    )
    log: Log = Field(default_factory=lambda: Log(), description="Logging.")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Data-plane processes sharing the listeners, under one supervisor that "
        "runs the health checks and the admin API; default: one per CPU. 1 runs everything in one process.",
    )
    mail: Mail | None = Field(None, description="POP3, IMAP and SMTP listeners (l4).")

    @property
    def names(self) -> tuple[str, ...]:
        """Every client-facing name served on the VIP."""
        return (self.namespace,) + ((self.autodiscover,) if self.autodiscover else ())

    @property
    def worker_count(self) -> int:
        import os

        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    @property
    def check_server_name(self) -> str:
        """SNI and Host of health checks and re-encryption: upstream_tls.server_name or the namespace."""
        return self.upstream_tls.server_name or self.namespace

    @property
    def cookie_name(self) -> str:
        """The affinity cookie's name: affinity.cookie, else the older affinity_cookie, else the default."""
        return self.affinity.cookie or self.affinity_cookie or DEFAULT_COOKIE

    @property
    def required_services(self) -> tuple[str, ...]:
        return tuple(self.l4_require if self.l4_require is not None else self.services)


def semantic_errors(
    config: Config, unchecked: frozenset[str] = frozenset()
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules, as (location, message) pairs so the loader can name the line.

    `unchecked`: top-level keys whose values were invalid (the loader reports those and passes a config
    holding defaults in their place): a rule reading one of them is skipped rather than judging a
    default the admin never wrote."""
    errors: list[tuple[tuple[str | int, ...], str]] = []

    def judged(*keys: str) -> bool:
        return unchecked.isdisjoint(keys)

    if judged("servers"):
        seen: dict[str, int] = {}
        for i, server in enumerate(config.servers):
            key = server.name.lower()
            if key in seen:
                errors.append(
                    (
                        ("servers", i, "name"),
                        f"duplicate server name {server.name!r} (also servers[{seen[key]}])",
                    )
                )
            seen[key] = i
        if all(s.weight == 0 for s in config.servers):
            errors.append((("servers",), "every server has weight 0: none would take traffic"))
    if judged("services"):
        seen_services: set[str] = set()
        for i, name in enumerate(config.services):
            if name in seen_services:
                errors.append((("services", i), f"{name!r} is listed twice"))
            seen_services.add(name)
    if config.l4_require is not None and judged("services", "l4_require"):
        for i, name in enumerate(config.l4_require):
            if name not in config.services:
                listed = ", ".join(config.services)
                errors.append((("l4_require", i), f"{name!r} is not in services ({listed})"))
    if config.affinity.mode == "cookie" and config.mode != "l7" and judged("affinity", "mode"):
        errors.append((("affinity",), "cookie affinity needs mode: l7 (l4 cannot see cookies)"))
    if config.affinity.cookie is not None and config.affinity_cookie is not None and judged("affinity"):
        errors.append(
            (
                ("affinity_cookie",),
                "the cookie is named twice (affinity.cookie and this older spelling); keep affinity.cookie",
            )
        )
    if config.mode == "l7" and config.tls is None and judged("mode", "tls"):
        errors.append((("mode",), "mode: l7 needs a tls: section (certificate and key clients see)"))
    if config.peers is not None and judged("peers", "admin"):
        errors += _peer_errors(config.peers, config.admin)
    return errors


def _peer_errors(peers: Peers, admin: Admin | None) -> list[tuple[tuple[str | int, ...], str]]:
    errors: list[tuple[tuple[str | int, ...], str]] = []
    if admin is None:
        errors.append(
            (
                ("peers",),
                "needs an admin: section (the other nodes reach this one through its admin API)",
            )
        )
    seen: dict[str, int] = {}
    for i, url in enumerate(peers.nodes):
        if url in seen:
            errors.append((("peers", "nodes", i), f"{url} is listed twice (also nodes[{seen[url]}])"))
        seen.setdefault(url, i)
    beyond = [url for url in peers.nodes if not _loopback_url(url)]
    token = peers.token_file or (admin.token_file if admin is not None else None)
    if beyond and token is None:
        errors.append(
            (
                ("peers",),
                f"{beyond[0]} is beyond loopback, where the admin API refuses every request without "
                "a token: set admin.token_file (the same token on every node) or peers.token_file",
            )
        )
    return errors


def _loopback_url(url: str) -> bool:
    return is_loopback_host(split_host_port(url.removeprefix("http://"))[0])
