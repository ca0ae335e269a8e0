"""Judging what a client is told, without I/O: is a URL on the namespace, does the answer it gets
through the VIP come from a real vdir, and what Outlook's "Test E-mail AutoConfiguration" would show.

A URL a client is told passes when
1. it is on the namespace: https, the host is the namespace (or the Autodiscover name), the port is the
   balancer's https port (listen.https_port: 443 in production, where every client goes) — the same rule
   `namespace verify` applies to the settings (exchange/namespace/plan.py, rule 1);
2. its host resolves to the VIP and only to it (doctor's resolution, the same judgement as its DNS rows);
3. a GET through the VIP gets the vdir's real answer: 200, a 401 offering a scheme the clients of that
   vdir log on with (catalog.CLIENT_AUTH), or for OWA/ECP a 302 to the forms logon page; `X-FEServer`
   names the server that answered. A redirect to the very URL with a trailing slash — what IIS answers
   for a directory asked without one, and the l7 balancer for `/owa` — is followed once, as a browser
   follows it, and the answer there is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from casarray.config.model import Config
from casarray.doctor.autodiscover import ProtocolBlock, Settings
from casarray.doctor.reply import Reply, offered_schemes
from casarray.doctor.rows import Status
from casarray.exchange import catalog
from casarray.exchange.namespace.plan import split_url, url_port

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def on_namespace(url: str, config: Config) -> tuple[bool, str]:
    """(ok, why not) for rule 1; the text is "yes" when ok."""
    parts = split_url(url)
    if parts is None:
        return False, "not an absolute URL"
    problems: list[str] = []
    if parts.scheme.lower() != "https":
        problems.append(f"{parts.scheme}, not https")
    host = (parts.hostname or "").rstrip(".")
    if host not in {name.lower() for name in config.names}:
        names = " or ".join(config.names)
        problems.append(f"{host} is not {names}")
    port = url_port(parts)
    if port != config.listen.https_port:
        problems.append(f"port {port}, not {config.listen.https_port} (listen.https_port)")
    return (not problems, "; ".join(problems) or "yes")


def service_of(url: str) -> catalog.Service | None:
    """The vdir a URL addresses (the first path segment, as IIS matches it)."""
    parts = split_url(url)
    return None if parts is None else catalog.for_path(parts.path or "/")


def trailing_slash(url: str, reply: Reply) -> str | None:
    """The target to ask next when `reply` redirects `url` to itself with a trailing slash (same scheme,
    host and port; the Location absolute or a path, RFC 9110 §10.2.2); None for any other answer."""
    parts = split_url(url)
    location = reply.header("Location")
    if reply.status not in _REDIRECTS or parts is None or not location or (parts.path or "/").endswith("/"):
        return None
    to = split_url(location) if "://" in location else None
    if to is not None and (
        to.scheme.lower() != parts.scheme.lower()
        or (to.hostname or "").rstrip(".") != (parts.hostname or "").rstrip(".")
        or url_port(to) != url_port(parts)
    ):
        return None
    target = to.path if to is not None else location.split("?", 1)[0]
    query = to.query if to is not None else location.partition("?")[2]
    if target != parts.path + "/" or query not in ("", parts.query):
        return None
    return target + (f"?{query}" if query else "")


def judge_reply(service: catalog.Service | None, reply: Reply) -> tuple[Status, str]:
    """Rule 3: is `reply` (to a GET without credentials) the vdir's real answer?"""
    status = reply.status
    if status == 200:
        return "ok", "200: answers"
    if status == 401:
        offered = offered_schemes(reply.all("WWW-Authenticate"))
        if not offered:
            return "fail", "401 without WWW-Authenticate: no client can log on"
        shown = ", ".join(offered)
        if service is None:
            return "ok", f"401 {shown}"
        expected = catalog.CLIENT_AUTH.get(service.name, frozenset())
        if {s.lower() for s in offered} & {s.lower() for s in expected}:
            return "ok", f"401 {shown}"
        wanted = ", ".join(sorted(expected - {"Fba"})) or "forms-based logon"
        return (
            "warn",
            f"401 {shown}: the clients of {service.title} log on with {wanted} (Exchange's default)",
        )
    if status in _REDIRECTS:
        location = reply.header("Location") or ""
        if service is not None and service.name in ("owa", "ecp") and "/auth/" in location.lower():
            return "ok", f"{status} to the forms logon page"
        return "fail", f"{status} to {location or '(no Location)'}: not the vdir itself"
    if status == 421:
        return "fail", "421: the balancer does not serve this name (l7 host_check)"
    reason = f" {reply.reason}" if reply.reason else ""
    return "fail", f"{status}{reason}"


# -- what Outlook's Test E-mail AutoConfiguration shows ----------------------------------------------

# The Results tab titles a section by protocol and labels each setting; unlabelled settings keep their
# element name.
_SECTIONS: Final = {
    "EXCH": "Exchange RPC",
    "EXPR": "Exchange HTTP",
    "EXHTTP": "Exchange HTTP",
    "WEB": "Web Access",
    "mapiHttp": "Exchange MAPI/HTTP",
    "MobileSync": "Exchange ActiveSync",
}
_LABELS: Final = {
    "Server": "Server",
    "ASUrl": "Availability Service URL",
    "OOFUrl": "OOF URL",
    "OABUrl": "OAB URL",
    "UMUrl": "Unified Message Service URL",
    "EcpUrl": "Exchange Control Panel URL",
    "EwsUrl": "Exchange Web Services URL",
    "EmwsUrl": "Exchange Management Web Services URL",
    "OWAUrl": "OWA URL",
    "SSL": "SSL",
    "AuthPackage": "Auth Package",
    "CertPrincipalName": "Certificate Principal Name",
    "InternalUrl": "Internal URL",
    "ExternalUrl": "External URL",
    "Url": "URL",
}


def autoconfiguration(
    address: str, settings: Settings | None, log: Sequence[str], told_by: str | None = None
) -> list[str]:
    """The lines of the dialog's Results and Log tabs for what this check received."""
    lines = [f"Test E-mail AutoConfiguration for {address}"]
    lines.append("Results" + (f" (answered by {told_by})" if told_by else ""))
    if settings is None:
        lines.append("  Autodiscover failed: no settings were received")
    else:
        if settings.display_name:
            lines.append(f"  Display Name: {settings.display_name}")
        for block in settings.blocks:
            lines += _section(block)
    lines.append("Log")
    lines += [f"  {entry}" for entry in log]
    return lines


def _section(block: ProtocolBlock) -> list[str]:
    lines = [f"  Protocol: {_SECTIONS.get(block.type, block.type)}"]
    for setting, value in block.entries:
        *where, name = setting.split(" ")
        label = _LABELS.get(name, name)
        if name == "SSL":
            value = "Yes" if value.lower() == "on" else "No"
        lines.append(f"    {' '.join([*where, label])}: {value}")
    return lines
