"""`casarray export haproxy`: an equivalent haproxy.cfg (HAProxy 2.6 syntax) for HAProxy and pfSense users.

Every HAProxy rule written here has its reason next to it in the output; the reasons come from the
shared research (exchange-load-balancing.md §1.3, §1.5, §1.7, §2.1) and HAProxy's configuration manual
(doc/configuration.txt of the 2.6 branch, cited by keyword):

- mode l4 → one `mode tcp` frontend and one backend holding every server. HAProxy judges a server in a
  tcp backend by one check ruleset, so the ruleset is a sequence — `http-check connect` / `send` /
  `expect` once per service in `l4_require` — and a server stays in only while every step passes,
  exactly casarray's l4 rule (HAProxy manual, "http-check connect": "a scenario involving several
  request/response exchanges").
- mode l7 → one `mode http` frontend terminating TLS, an ACL per virtual directory (`path_beg -i`, IIS
  compares paths case-insensitively), one backend per service with its own healthcheck.htm check
  (Microsoft's recommended design: one probe per vdir), SSL bridging with verification (Extended
  Protection allows re-encryption only with the servers' own certificate and key, research §1.7),
  `http-reuse never` and keep-alive (NTLM authenticates a connection: a server connection must never
  serve another client — HAProxy issues 581 and 2985), header-name case restored for old Outlook and
  ActiveSync clients (`h1-case-adjust`, HAProxy issue 561), X-Forwarded-For for IIS logs.
- health: `GET /<vdir>/healthcheck.htm` with Host and SNI = the check name, healthy = status 200 and a
  body starting "200 OK" (Microsoft, "Load balancing in Exchange Server"; KB 3002351: never "/").
- mail (config `mail:`) → `mode tcp` frontends and backends with protocol greeting checks.

HAProxy reads the certificate and its key from one PEM file (`crt`), or from `<crt>.key` next to it
(manual, "crt" and "ssl-load-extra-files"); when the config's pair is neither, a bundle is generated and
returned in `HaproxyExport.files` for the caller to write.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from casarray.config.model import Config
from casarray.config.units import format_duration
from casarray.errors import CasarrayError
from casarray.exchange import catalog
from casarray.netaddr import split_host_port

HAPROXY_VERSION = "2.6"

FRONTEND_HTTPS = "casarray_https"
FRONTEND_HTTP = "casarray_http"
BACKEND_L4 = "exchange"
AFFINITY_TABLE = "casarray_affinity"
STATS = "casarray_stats"

# Header names as Exchange and its clients spell them. HAProxy lowercases every HTTP/1 header name
# (manual, "h1-case-adjust"); Outlook 16.0.4266 and old ActiveSync clients failed on lowercase names
# (HAProxy issue 561; mitmproxy issue 5: the ActiveSync client of the Nokia N900). Sources of the names:
# RFC 9110/9112 for the general ones; MS-OXCMAPIHTTP 2.2.3.1 / 2.2.3.2 (MAPI over HTTP request and
# response headers); MS-ASHTTP 2.2.2 / 2.2.3 (ActiveSync); NTLM/Negotiate over HTTP (RFC 4559:
# WWW-Authenticate, Authorization, Persistent-Auth); X-FEServer/X-BEServer (Exchange's own markers).
EXCHANGE_HEADERS: tuple[str, ...] = (
    # HTTP framing and caching
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Cache-Control",
    "Pragma",
    "Expires",
    "Date",
    "Server",
    "Location",
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Expect",
    "Cookie",
    "Set-Cookie",
    # authentication (NTLM, Negotiate, Basic)
    "WWW-Authenticate",
    "Authorization",
    "Persistent-Auth",
    # client address (IIS custom log field)
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    # MAPI over HTTP
    "X-RequestType",
    "X-RequestId",
    "X-ClientInfo",
    "X-ClientApplication",
    "X-ResponseCode",
    "X-ServerApplication",
    "X-PendingPeriod",
    "X-ExpirationInfo",
    "X-StartTime",
    "X-ElapsedTime",
    "X-DeviceInfo",
    "X-User-Identity",
    "X-AnchorMailbox",
    "client-request-id",
    "request-id",
    # ActiveSync
    "MS-ASProtocolVersion",
    "MS-ASProtocolVersions",
    "MS-ASProtocolCommands",
    "MS-ASAcceptMultiPart",
    "MS-Server-ActiveSync",
    "X-MS-PolicyKey",
    "X-MS-RP",
    "X-MS-ASThrottle",
    "X-MS-BackOffDuration",
    # Exchange front end / back end markers
    "X-FEServer",
    "X-BEServer",
    "X-CalculatedBETarget",
    "X-DiagInfo",
    "X-Powered-By",
    "X-AspNet-Version",
    "X-OWA-Version",
)

# Mail protocols: the greeting a healthy server sends first, and the polite way to leave.
# IMAP4 "* OK" (RFC 9051 §7.1.1), POP3 "+OK" (RFC 1939 §4), SMTP "220" (RFC 5321 §4.2, §3.1);
# HAProxy's own Exchange POP3/IMAP guides check the greeting the same way (research §2.1).
MAIL_GREETING: dict[str, tuple[str, str, str]] = {
    # protocol: (expect match, pattern, goodbye)
    "imap": ("string", "* OK", "a1 LOGOUT"),
    "pop3": ("string", "+OK", "QUIT"),
    "smtp": ("rstring", "^220", "QUIT"),
}

# Services whose requests trickle data both ways inside one request: RPC_IN_DATA/RPC_OUT_DATA and
# MAPI/HTTP's PENDING chunks (research §1.5). HAProxy: "option http-no-delay" is for applications that
# "expect the payload phase to be highly interactive"; without it each round trip may wait ~200 ms.
_INTERACTIVE = frozenset({"rpc", "mapi"})

# Exchange answers "/" with 302 to /owa/ (KB 3002351); casarray does the same for "/" and "/owa".
_ROOT_OR_OWA = "if { path / } || { path -i /owa }"


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """A file the exported config needs besides haproxy.cfg (written by the caller)."""

    path: Path
    content: bytes
    mode: int
    why: str


@dataclass(frozen=True, slots=True)
class HaproxyExport:
    text: str
    files: tuple[GeneratedFile, ...] = ()
    notes: tuple[str, ...] = ()  # what the operator must know (also in the text as comments)


class ExportError(CasarrayError):
    """The config cannot be exported (an unreadable certificate, for example)."""


def export_haproxy(config: Config, source: str, *, bundle_dir: Path) -> HaproxyExport:
    """The haproxy.cfg equivalent to `config` (read from `source`). Certificate bundles HAProxy needs are
    placed in `bundle_dir`; nothing is written here."""
    _check_words(config)
    out = _Out()
    files: list[GeneratedFile] = []
    notes: list[str] = []
    out.comment(f"Generated by casarray from {source} (mode {config.mode}), for HAProxy {HAPROXY_VERSION}.")
    out.comment("Check it with: haproxy -c -f <this file>. Edit the casarray config and export again")
    out.comment("rather than editing this file: the reasons next to each rule come from there.")
    crts: list[str] = []
    if config.mode == "l7":
        crts, files = _listener_certificates(config, bundle_dir)
        for generated in files:
            notes.append(f"{generated.path}: {generated.why}")
    for note in notes:
        out.comment(note)
    _global(out, config)
    _defaults(out, config)
    if config.mode == "l4":
        _l4(out, config)
    else:
        _l7(out, config, crts)
    if config.mail is not None:
        _mail(out, config)
    if config.admin is not None:
        _stats(out, config, notes)
    return HaproxyExport(out.text(), tuple(files), tuple(notes))


# -- syntax helpers ---------------------------------------------------------------------------------


def _check_words(config: Config) -> None:
    """Names written bare into the file (SNI, Host, addresses) must be one HAProxy word each."""
    name = config.check_server_name
    if not _HOST.match(name):
        raise ExportError(
            f"{name!r} is not a host name", where="upstream_tls.server_name", hint="e.g. outlook.contoso.com"
        )
    for i, server in enumerate(config.servers):
        if not _HOST.match(server.address.strip("[]")):
            raise ExportError(
                f"{server.address!r} is not an address or host name HAProxy can read",
                where=f"servers[{i}].address",
            )


_HOST = re.compile(r"^[A-Za-z0-9_.:-]+$")


_BARE = re.compile(r"^[A-Za-z0-9_./:@+=,^*-]+$")


def quote(arg: str) -> str:
    """One configuration word (manual §2.2): bare when safe, else strong (single) quotes, in which
    nothing is interpreted; a word holding a single quote gets weak quotes with escapes."""
    if arg and _BARE.match(arg):
        return arg
    if "'" not in arg and "\n" not in arg and "\r" not in arg:
        return f"'{arg}'"
    escaped = (
        arg.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )
    return f'"{escaped}"'


def address(host: str, port: int | None = None) -> str:
    """host[:port] as HAProxy reads it; an IPv6 literal goes in brackets."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        shown = host
    else:
        shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return shown if port is None else f"{shown}:{port}"


def identifier(name: str) -> str:
    """A proxy or server name: HAProxy allows letters, digits, '-', '_', '.' and ':'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "_", name)
    return cleaned or "_"


def duration(seconds: float) -> str:
    """HAProxy's time format takes the same units as casarray's (ms, s, m, h, d)."""
    return format_duration(seconds)


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str, indent: bool = False) -> None:
        prefix = ("    " if indent else "") + "# "
        self.lines += [
            prefix + line
            for line in textwrap.wrap(text, 104 - len(prefix), break_long_words=False, break_on_hyphens=False)
        ] or [prefix.rstrip()]

    def section(self, header: str, *why: str) -> None:
        self.lines.append("")
        for text in why:
            self.comment(text)
        self.lines.append(header)

    def rule(self, words: str | Iterable[str], why: str | None = None) -> None:
        """One line: a string is written as is (its variable parts already quoted), a list is joined."""
        text = "    " + (words if isinstance(words, str) else " ".join(words))
        if why:
            text = f"{text}  # {why}"
        self.lines.append(text)

    def why(self, text: str) -> None:
        self.comment(text, indent=True)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# -- global and defaults ---------------------------------------------------------------------------


def _global(out: _Out, config: Config) -> None:
    out.section("global")
    out.rule(
        ["log", "stdout", "format", "raw", "local0", "info"],
        "systemd's journal keeps it; or: log /dev/log local0",
    )
    out.rule(["maxconn", str(config.limits.maxconn)], "limits.maxconn: client connections in all")
    spread = max(0, min(50, round(config.health.jitter * 100)))
    out.rule(["spread-checks", str(spread)], "health.jitter: checks of many servers do not align")
    if config.mode == "l7":
        out.why("HAProxy sends every HTTP/1 header name in lower case; old Outlook (16.0.4266) and")
        out.why("ActiveSync clients fail on that (HAProxy issue 561). Restore Exchange's spelling:")
        seen: set[str] = set()
        for name in EXCHANGE_HEADERS:
            low = name.lower()
            if low not in seen and low != name:
                seen.add(low)
                out.rule(["h1-case-adjust", low, name])


def _defaults(out: _Out, config: Config) -> None:
    t = config.timeouts
    out.section("defaults")
    out.rule(["log", "global"])
    out.rule(["mode", "tcp" if config.mode == "l4" else "http"])
    out.rule(["option", "dontlognull"])
    out.rule(["retries", str(config.retries)], "retries: further attempts when a connect fails")
    out.rule(["option", "redispatch", "1"], "each retry on another server, as casarray does")
    out.rule(["timeout", "connect", duration(t.connect)], "timeouts.connect")
    # ActiveSync Ping holds a request up to 59 min (MS-ASCMD 2.2.3.88.1), EWS streaming 30 min,
    # RPC/HTTP 12-15 min of silence (research §1.5): idle timeouts stay at the config's values (>= 1h).
    out.rule(["timeout", "client", duration(t.client_idle)], "timeouts.client_idle (ActiveSync Ping: 59 min)")
    if config.mode == "l4":
        out.rule(["timeout", "server", duration(t.server_idle)], "timeouts.server_idle")
    else:
        server = max(t.server_idle, t.server)
        out.rule(
            ["timeout", "server", duration(server)],
            "the longer of timeouts.server_idle and timeouts.server (time to the first response byte)",
        )
        out.rule(
            ["timeout", "tunnel", duration(max(t.client_idle, t.server_idle))],
            "long-lived exchanges keep the idle timeouts",
        )
        out.rule(["timeout", "http-request", duration(t.request_header)], "timeouts.request_header")
        out.rule(["timeout", "http-keep-alive", duration(t.keepalive)], "timeouts.keepalive")
    out.rule(["timeout", "queue", duration(t.queue)], "timeouts.queue")
    if config.health.enabled:
        out.rule(["timeout", "check", duration(config.health.timeout)], "health.timeout")
    if config.mode == "l7":
        out.why("NTLM and Negotiate authenticate a connection and IIS keeps it authenticated: a server")
        out.why("connection must never carry another client's requests (HAProxy issues 581 and 2985).")
        out.rule(["http-reuse", "never"])
        out.rule(["option", "http-keep-alive"], "keep the client's connection, and its server connection")
        out.why("Never 'option http-buffer-request': RPC_IN_DATA announces 1 GB and trickles for hours.")
        out.rule(["option", "h1-case-adjust-bogus-client"], "responses to clients: see h1-case-adjust")
        out.rule(["option", "h1-case-adjust-bogus-server"], "requests to Exchange: see h1-case-adjust")


# -- servers and checks ----------------------------------------------------------------------------


def _tls_verify(config: Config) -> list[str]:
    """Verification of the servers' certificates, for checks and (l7) re-encryption."""
    if not config.upstream_tls.verify:
        return ["verify", "none"]
    ca = config.upstream_tls.ca
    return [
        "verify",
        "required",
        "ca-file",
        quote(_absolute(ca)) if ca else "@system-ca",
        "verifyhost",
        config.check_server_name,
    ]


def _default_server(out: _Out, config: Config, *, traffic_tls: bool) -> None:
    words = ["default-server"]
    h = config.health
    if h.enabled:
        words += ["check", "inter", duration(h.interval), "rise", str(h.rise), "fall", str(h.fall)]
        words += ["check-sni", config.check_server_name]
        if not traffic_tls:
            words.append("check-ssl")
    if traffic_tls:
        words += ["ssl", "sni", f"str({config.check_server_name})", "alpn", "http/1.1"]
    words += _tls_verify(config)
    words += ["ssl-min-ver", "TLSv1.2"]
    out.rule(words)


def _server_lines(out: _Out, config: Config, *, port: bool = True, cookie: bool = False) -> None:
    used: set[str] = set()
    for server in config.servers:
        words = ["server", _unique(identifier(server.name), used)]
        words.append(address(server.address, server.port if port else None))
        words += ["weight", str(server.weight)]
        if server.maxconn is not None:
            words += ["maxconn", str(server.maxconn)]
        if cookie:
            words += ["cookie", identifier(server.name)]
        out.rule(words)


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate.lower())
    return candidate


def _http_checks(out: _Out, config: Config, services: Sequence[str]) -> None:
    """One connect/send/expect sequence per service; every one must pass for the server to be up."""
    host = config.check_server_name
    out.rule(["option", "httpchk"])
    for name in services:
        path = catalog.get(name).health_path
        out.rule(["http-check", "connect", "default"])
        out.rule(
            f"http-check send meth GET uri {path} ver HTTP/1.1 hdr Host {host} "
            "hdr User-Agent casarray-haproxy-check"
        )
        comment = quote(f"{name}: {path} not 200")
        out.rule(["http-check", "expect", "comment", comment, "status", "200"])
        comment = quote(f"{name}: {path} body not 200 OK")
        out.rule(["http-check", "expect", "comment", comment, "rstring", quote("^200 OK")])


def _balance(out: _Out, config: Config) -> None:
    out.rule(["balance", config.balance])
    if config.balance == "source":
        # casarray hashes the source with rendezvous hashing: removing one server moves only its clients.
        out.rule(["hash-type", "consistent"], "only a removed server's clients move")


def _stick_table_type(config: Config) -> str:
    return "ipv6" if ipaddress.ip_address(config.listen.address).version == 6 else "ip"


# -- l4 --------------------------------------------------------------------------------------------


def _l4(out: _Out, config: Config) -> None:
    listen = config.listen
    out.section(
        f"frontend {FRONTEND_HTTPS}",
        "Layer 4: TLS passes through to Exchange untouched (works with Extended Protection).",
    )
    out.rule(["bind", address(listen.address, listen.https_port)])
    out.rule(["mode", "tcp"])
    out.rule(["option", "tcplog"])
    out.rule(["maxconn", str(config.limits.maxconn)], "limits.maxconn")
    out.rule(["default_backend", BACKEND_L4])
    if listen.http_port is not None:
        out.why("listen.http_port: casarray serves the HTTP redirect in l7 only; nothing to export.")
    required = list(config.required_services)
    out.section(
        f"backend {BACKEND_L4}",
        "Layer 4 cannot tell services apart: a server takes connections only while every service of",
        f"l4_require is healthy ({', '.join(required)}). Each check step opens its own connection.",
    )
    out.rule(["mode", "tcp"])
    _balance(out, config)
    if config.affinity.mode == "source":
        out.rule(
            f"stick-table type {_stick_table_type(config)} size 1m expire {duration(config.timeouts.client_idle)}",
            "affinity: source",
        )
        out.rule(["stick", "on", "src"])
    if config.health.enabled:
        _http_checks(out, config, required)
    _default_server(out, config, traffic_tls=False)
    _server_lines(out, config)


# -- l7 --------------------------------------------------------------------------------------------


def _listener_certificates(config: Config, bundle_dir: Path) -> tuple[list[str], list[GeneratedFile]]:
    """The `crt` files for the bind line; bundles for pairs HAProxy cannot read as they are."""
    assert config.tls is not None
    pairs = [(config.tls.certificate, config.tls.key)] + [(p.certificate, p.key) for p in config.tls.extra]
    crts: list[str] = []
    files: list[GeneratedFile] = []
    stems: set[str] = set()
    for cert_path, key_path in pairs:
        cert_text = _read(cert_path, "tls.certificate")
        cert_abs, key_abs = _absolute(cert_path), _absolute(key_path)
        if b"PRIVATE KEY-----" in cert_text or key_abs == cert_abs + ".key":
            crts.append(cert_abs)  # HAProxy finds the key in the file or at <crt>.key
            continue
        key_text = _read(key_path, "tls.key")
        stem = _unique(Path(cert_path).stem, stems)
        bundle = (bundle_dir / f"{stem}.haproxy.pem").absolute()
        content = cert_text.rstrip(b"\n") + b"\n" + key_text.rstrip(b"\n") + b"\n"
        files.append(
            GeneratedFile(
                bundle,
                content,
                0o600,
                f"{cert_path} and its key {key_path} in one PEM file, generated because HAProxy's 'crt' "
                "reads the key from the same file or from <crt>.key. It holds the private key: keep it "
                "readable by HAProxy only, and export again when the certificate is renewed",
            )
        )
        crts.append(str(bundle))
    return crts, files


def _l7(out: _Out, config: Config, crts: Sequence[str]) -> None:
    assert config.tls is not None
    listen = config.listen
    tls_min = f"TLSv{config.tls.min_version}"
    services = list(config.services)
    out.section(
        f"frontend {FRONTEND_HTTPS}",
        "Layer 7: TLS ends here and starts again towards Exchange (SSL bridging). With Extended",
        "Protection (default from Exchange 2019 CU14) the certificate below must be the servers' own:",
        "Exchange accepts re-encryption only with the same certificate and key.",
    )
    bind = ["bind", address(listen.address, listen.https_port), "ssl"]
    for crt in crts:
        bind += ["crt", quote(crt)]
    bind += ["alpn", "http/1.1", "ssl-min-ver", tls_min]
    out.rule(bind, "HTTP/1.1 only: NTLM authenticates a connection, HTTP/2 multiplexes one")
    out.rule(["mode", "http"])
    out.rule(["option", "httplog"])
    out.rule(["maxconn", str(config.limits.maxconn)], "limits.maxconn")
    # X-Forwarded-For for IIS's custom log field (research §1.9): kept and appended to only from
    # trusted proxies, replaced for everyone else, like casarray.
    if config.trusted_proxies:
        nets = [str(ipaddress.ip_network(n, strict=False)) for n in config.trusted_proxies]
        out.rule(
            ["http-request", "del-header", "X-Forwarded-For", "unless", "{", "src", *nets, "}"],
            "trusted_proxies",
        )
    else:
        out.rule(["http-request", "del-header", "X-Forwarded-For"], "no trusted proxies: replaced")
    out.rule(["option", "forwardfor"], "the client's address, for IIS logs")
    out.rule(["http-request", "set-header", "X-Forwarded-Proto", "https"])
    if config.host_check:
        out.rule(
            ["acl", "served_host", "req.hdr(host),field(1,:),lower", "-m", "str", *config.names],
            "host_check",
        )
        out.rule(
            "http-request return status 421 content-type text/plain string "
            + quote("421 Misdirected Request: this name is not served here")
            + " unless served_host"
        )
    port = "" if listen.https_port == 443 else f":{listen.https_port}"
    out.rule(
        f"http-request redirect location https://{config.namespace}{port}/owa/ code 302 {_ROOT_OR_OWA}",
        "as Exchange itself: / goes to OWA (KB 3002351)",
    )
    out.why("One ACL per virtual directory, matched on the first path segment without regard to case (IIS).")
    for name in services:
        prefix = "/" + catalog.get(name).vdir
        out.rule(["acl", f"svc_{name}", "path", "-i", prefix])
        out.rule(["acl", f"svc_{name}", "path_beg", "-i", prefix + "/"])
    any_service = " || ".join(f"svc_{name}" for name in services)
    out.rule(
        "http-request return status 404 content-type text/plain string "
        + quote("404 Not Found: not an Exchange virtual directory")
        + f" unless {any_service}"
    )
    for name in services:
        out.rule(["use_backend", f"{BACKEND_L4}_{name}", "if", f"svc_{name}"])
    if listen.http_port is not None:
        out.section(
            f"frontend {FRONTEND_HTTP}",
            "listen.http_port: plain HTTP is only redirected to HTTPS on the namespace.",
        )
        out.rule(["bind", address(listen.address, listen.http_port)])
        out.rule(["mode", "http"])
        out.rule(["option", "httplog"])
        out.rule(
            f"http-request redirect location https://{config.namespace}{port}/owa/ code 301 {_ROOT_OR_OWA}"
        )
        out.rule(["http-request", "redirect", "prefix", f"https://{config.namespace}{port}", "code", "301"])
    if config.affinity.mode == "source":
        out.section(
            f"backend {AFFINITY_TABLE}",
            "affinity: source — one table for every service, so a client keeps its server across them.",
        )
        out.rule(
            f"stick-table type {_stick_table_type(config)} size 1m expire {duration(config.timeouts.client_idle)}"
        )
    for name in services:
        service = catalog.get(name)
        out.section(
            f"backend {BACKEND_L4}_{name}",
            f"{service.title}: /{service.vdir}, checked on its own (a server whose {name} is down",
            "still serves the other services).",
        )
        out.rule(["mode", "http"])
        _balance(out, config)
        out.rule(
            ["option", "prefer-last-server"],
            "stay on the server this client's connection is authenticated on (NTLM)",
        )
        if name in _INTERACTIVE:
            out.rule(["option", "http-no-delay"], "interactive bodies (RPC_IN_DATA, MAPI PENDING)")
        if config.affinity.mode == "source":
            out.rule(["stick", "on", "src", "table", AFFINITY_TABLE])
        elif config.affinity.mode == "cookie":
            out.rule(
                f"cookie {quote(config.cookie_name)} insert indirect nocache httponly secure attr SameSite=None",
                "affinity: cookie",
            )
            out.why("The value is the server's name; casarray's values are signed (affinity.secret_file):")
            out.why("a cookie set by one does not pin a browser on the other.")
        if config.health.enabled:
            _http_checks(out, config, [name])
        _default_server(out, config, traffic_tls=True)
        _server_lines(out, config, cookie=config.affinity.mode == "cookie")


# -- mail ------------------------------------------------------------------------------------------


def _mail(out: _Out, config: Config) -> None:
    """One tcp frontend per protocol. When no server maps a port (servers[].mail_ports), one backend whose
    servers have no port, so each connection keeps the port the client reached; otherwise one backend
    per VIP port, chosen by destination port, with each server's own port."""
    assert config.mail is not None
    for proto in ("imap", "pop3", "smtp"):
        settings = getattr(config.mail, proto)
        if settings is None or not settings.ports:
            continue
        ports = list(dict.fromkeys(settings.ports))
        mapped = any(port in server.mail_ports for server in config.servers for port in ports)
        backend = f"{BACKEND_L4}_{proto}"
        out.section(
            f"frontend casarray_{proto}",
            f"{proto.upper()} on {', '.join(map(str, ports))}: passed through (STARTTLS and implicit TLS alike).",
        )
        for port in ports:
            out.rule(["bind", address(config.listen.address, port)])
        out.rule(["mode", "tcp"])
        out.rule(["option", "tcplog"])
        out.rule(["maxconn", str(config.limits.maxconn)])
        if not mapped:
            out.rule(["default_backend", backend])
            why = [
                "Servers without a port: each connection goes to the port the client reached.",
                "Every port is checked: the greeting must arrive.",
            ]
            _mail_backend(out, config, proto, backend, ports, None, why)
            continue
        for port in ports:
            out.rule(["use_backend", f"{backend}_{port}", "if", "{", "dst_port", str(port), "}"])
        for port in ports:
            why = [f"VIP port {port}: servers[].mail_ports gives each server's own port."]
            _mail_backend(out, config, proto, f"{backend}_{port}", [port], port, why)


def _mail_backend(
    out: _Out,
    config: Config,
    proto: str,
    name: str,
    ports: Sequence[int],
    vip_port: int | None,
    why: list[str],
) -> None:
    if proto == "smtp":
        why = [*why, "Exchange sees the balancer's address (research §1.9): mind Receive connectors."]
    out.section(f"backend {name}", *why)
    out.rule(["mode", "tcp"])
    _balance(out, config)
    if config.health.enabled:
        match, pattern, goodbye = MAIL_GREETING[proto]
        out.rule(["option", "tcp-check"])
        for port in ports:
            # the VIP port tells the protocol flavour: 993/995/465 are TLS from the first byte
            connect = ["tcp-check", "connect"] + ([] if vip_port is not None else ["port", str(port)])
            if port in catalog.IMPLICIT_TLS_PORTS:
                connect += ["ssl", "sni", config.check_server_name]
            out.rule(connect)
            out.rule(["tcp-check", "expect", match, quote(pattern)])
            out.rule(["tcp-check", "send", quote(goodbye + "\r\n")])
    words = ["default-server"]
    if config.health.enabled:
        h = config.health
        words += ["check", "inter", duration(h.interval), "rise", str(h.rise), "fall", str(h.fall)]
    words += _tls_verify(config)
    out.rule(words)
    if vip_port is None:
        _server_lines(out, config, port=False)
        return
    used: set[str] = set()
    for server in config.servers:
        words = ["server", _unique(identifier(server.name), used)]
        words.append(address(server.address, server.mail_ports.get(vip_port, vip_port)))
        words += ["weight", str(server.weight)]
        if server.maxconn is not None:
            words += ["maxconn", str(server.maxconn)]
        out.rule(words)


# -- admin -----------------------------------------------------------------------------------------


def _stats(out: _Out, config: Config, notes: list[str]) -> None:
    assert config.admin is not None
    try:
        host, port = split_host_port(config.admin.listen)
    except ValueError:
        host, port = "", None
    if port is None:
        notes.append(f"admin.listen {config.admin.listen!r} is not address:port; no stats page exported")
        return
    out.section(
        f"listen {STATS}",
        "admin: casarray's API has no HAProxy equivalent; this is HAProxy's read-only stats page.",
        "To drain a server: 'set server <backend>/<server> state drain' on a stats socket.",
    )
    out.rule(["bind", address(host, port)])
    out.rule(["mode", "http"])
    out.rule(["stats", "enable"])
    out.rule(["stats", "uri", "/"])
    out.rule(["stats", "refresh", "5s"])


# -- files -----------------------------------------------------------------------------------------


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}", where=key) from None


def _absolute(path: str) -> str:
    # HAProxy resolves relative paths from its own working directory; casarray from where it was
    # started. Absolute paths mean the same file to both.
    return str(Path(path).expanduser().absolute())


__all__ = [
    "EXCHANGE_HEADERS",
    "ExportError",
    "GeneratedFile",
    "HaproxyExport",
    "address",
    "export_haproxy",
    "identifier",
    "quote",
]
