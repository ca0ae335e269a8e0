"""The service catalog: the single source of truth for what casarray knows about Exchange services.

Every other part (router, health checker, lab, namespace toolkit, exporters) reads this module; none
repeats a vdir path or cmdlet name.

Sources:
- one health probe per vdir at /<vdir>/healthcheck.htm, never "/" (it answers 302): Microsoft, "Load
  balancing in Exchange Server",
  https://learn.microsoft.com/en-us/exchange/architecture/client-access/load-balancing;
- idle timeouts: ActiveSync Ping heartbeat up to 59 min (MS-ASCMD 2.2.3.88.1,
  https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-ascmd/), EWS streaming
  subscriptions up to 30 min (Microsoft, "Notification subscriptions, mailbox events, and EWS in
  Exchange", https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/notification-subscriptions-mailbox-events-and-ews-in-exchange),
  RPC over HTTP inactivity of 12/15 min (MS-RPCH,
  https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-rpch/), MAPI/HTTP PENDING every
  30 s (MS-OXCMAPIHTTP 2.2.3.3.5,
  https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxcmapihttp/);
- body limits: OWA 35 MB, EWS 64 MiB (Microsoft, "Message size limits in Exchange Server", client-specific
  limits, https://learn.microsoft.com/en-us/exchange/mail-flow/message-size-limits); RPC_IN_DATA
  announces 1 GB (MS-RPCH: the IN channel states its whole length up front).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Service:
    """One Exchange client-access protocol / virtual directory."""

    name: str  # casarray's config name: owa, ecp, ews, ...
    title: str  # human name for tables and logs
    vdir: str  # the IIS virtual directory as Exchange spells it (no slashes)
    inventory_type: str | None  # "Type" in the inventory file; None for Outlook Anywhere (own list)
    get_cmdlet: str
    set_cmdlet: str
    url_suffix: str  # the path Microsoft documents for the unified URL (after the host)
    scheme: str  # https, except PowerShell which stays http (Kerberos)
    has_internal_url: bool  # Autodiscover: no InternalUrl, the SCP is used instead
    long_lived: bool  # requests may stay open and silent for a long time (long-polls, RPC channels)
    max_body: int  # bytes; at least what Exchange itself accepts

    @property
    def health_path(self) -> str:
        """The Managed Availability probe: exists only while the protocol's component is Active."""
        return f"/{self.vdir}/healthcheck.htm"

    @property
    def prefix(self) -> str:
        """Lower-cased first path segment used for routing (IIS matches case-insensitively)."""
        return self.vdir.lower()


_SERVICES: tuple[Service, ...] = (
    Service(
        "owa",
        "Outlook on the web",
        "owa",
        "Owa",
        "Get-OwaVirtualDirectory",
        "Set-OwaVirtualDirectory",
        "/owa",
        "https",
        True,
        False,
        35_000_000,
    ),
    Service(
        "ecp",
        "Exchange admin center",
        "ecp",
        "Ecp",
        "Get-EcpVirtualDirectory",
        "Set-EcpVirtualDirectory",
        "/ecp",
        "https",
        True,
        False,
        35_000_000,
    ),
    Service(
        "ews",
        "Exchange Web Services",
        "EWS",
        "WebServices",
        "Get-WebServicesVirtualDirectory",
        "Set-WebServicesVirtualDirectory",
        "/EWS/Exchange.asmx",
        "https",
        True,
        True,
        64 * MIB,
    ),
    Service(
        "mapi",
        "MAPI over HTTP",
        "mapi",
        "Mapi",
        "Get-MapiVirtualDirectory",
        "Set-MapiVirtualDirectory",
        "/mapi",
        "https",
        True,
        True,
        2 * 1024 * MIB,
    ),
    Service(
        "rpc",
        "Outlook Anywhere (RPC over HTTP)",
        "Rpc",
        None,
        "Get-OutlookAnywhere",
        "Set-OutlookAnywhere",
        "/rpc/rpcproxy.dll",
        "https",
        True,
        True,
        2 * 1024 * MIB,
    ),
    Service(
        "oab",
        "Offline address book",
        "OAB",
        "Oab",
        "Get-OabVirtualDirectory",
        "Set-OabVirtualDirectory",
        "/OAB",
        "https",
        True,
        False,
        64 * MIB,
    ),
    Service(
        "eas",
        "Exchange ActiveSync",
        "Microsoft-Server-ActiveSync",
        "ActiveSync",
        "Get-ActiveSyncVirtualDirectory",
        "Set-ActiveSyncVirtualDirectory",
        "/Microsoft-Server-ActiveSync",
        "https",
        True,
        True,
        64 * MIB,
    ),
    Service(
        "autodiscover",
        "Autodiscover",
        "Autodiscover",
        "Autodiscover",
        "Get-AutodiscoverVirtualDirectory",
        "Set-AutodiscoverVirtualDirectory",
        "/Autodiscover/Autodiscover.xml",
        "https",
        False,
        False,
        1 * MIB,
    ),
    Service(
        "powershell",
        "Remote PowerShell",
        "PowerShell",
        "PowerShell",
        "Get-PowerShellVirtualDirectory",
        "Set-PowerShellVirtualDirectory",
        "/PowerShell",
        "http",
        True,
        True,
        64 * MIB,
    ),
)

SERVICES: Mapping[str, Service] = {s.name: s for s in _SERVICES}
SERVICE_NAMES: tuple[str, ...] = tuple(SERVICES)
BY_PREFIX: Mapping[str, Service] = {s.prefix: s for s in _SERVICES}
BY_INVENTORY_TYPE: Mapping[str, Service] = {
    s.inventory_type: s for s in _SERVICES if s.inventory_type is not None
}

# How the clients of each vdir log on (HTTP authentication schemes, RFC 9110 §11), after Microsoft's
# "Default settings for Exchange virtual directories": Outlook's protocols (Autodiscover, EWS, MAPI/HTTP,
# Outlook Anywhere, OAB) take Integrated Windows authentication (Negotiate, NTLM), and Basic where Exchange
# offers it; OWA and ECP are for browsers (forms-based logon "Fba", or any HTTP scheme); ActiveSync phones
# log on with Basic, Exchange's only default there; remote PowerShell uses Kerberos (Negotiate).
CLIENT_AUTH: Mapping[str, frozenset[str]] = {
    "owa": frozenset({"Fba", "Basic", "NTLM", "Negotiate"}),
    "ecp": frozenset({"Fba", "Basic", "NTLM", "Negotiate"}),
    "ews": frozenset({"NTLM", "Negotiate", "Basic"}),
    "mapi": frozenset({"NTLM", "Negotiate"}),
    "rpc": frozenset({"NTLM", "Negotiate", "Basic"}),
    "oab": frozenset({"NTLM", "Negotiate"}),
    "eas": frozenset({"Basic"}),
    "autodiscover": frozenset({"NTLM", "Negotiate", "Basic"}),
    "powershell": frozenset({"Negotiate"}),
}

# Mail ports where TLS comes first (IMAPS, POP3S, SMTPS); the others may upgrade with STARTTLS.
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset({993, 995, 465})


def get(name: str) -> Service:
    """The service called `name` (config name, case-insensitive); KeyError if there is none."""
    return SERVICES[name.lower()]


def for_path(path: str) -> Service | None:
    """The service whose vdir is the first segment of `path` (case-insensitive, like IIS), else None."""
    segment = path.lstrip("/").split("/", 1)[0].split("?", 1)[0].lower()
    return BY_PREFIX.get(segment)


def iter_services(names: tuple[str, ...] | list[str] | None = None) -> Iterator[Service]:
    for name in names if names is not None else SERVICE_NAMES:
        yield SERVICES[name]
