"""The plan: for every server, what each client-access setting is and what it should be.

Rules (each from Microsoft's client-access documentation, summarised in the research report §1.10):

1. A target URL is the current URL with only its host replaced (urllib.parse): scheme, port, path and
   query are kept. The old approach, `-replace $server, $namespace` on the whole string, also rewrote
   a domain that contains the server name (MB1 in mb1corp.com) and left unset (null) URLs unset.
2. A URL that is not set gets the path Microsoft documents for the unified namespace (catalog
   `Service.url_suffix`, `Service.scheme`): PowerShell stays http because it uses Kerberos
   ("Configure mail flow and client access", step 4 table: http://mail.contoso.com/PowerShell).
3. The Autodiscover virtual directory's URLs are left alone: "You can't set an internal URL on the
   Autodiscover virtual directory" and Microsoft's table shows "No external URL displayed" for it.
   Internal clients find Autodiscover through the SCP, which gets
   https://<autodiscover name or internal namespace>/Autodiscover/Autodiscover.xml
   (Set-ClientAccessService -AutoDiscoverServiceInternalUri).
4. Outlook Anywhere takes host names, not URLs (Set-OutlookAnywhere -InternalHostname/-ExternalHostname).
5. OWA and ECP URLs must match ("Configure mail flow and client access", step 4): both get the same
   host per side because every URL of a side gets the same namespace.
6. A value is already right when its host equals the target host case-insensitively (DNS names are
   case-insensitive, RFC 4343) and everything else is equal; the scheme compares case-insensitively
   too (RFC 3986 §3.1).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from casarray.errors import InventoryError
from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import (
    CLIENT_ACCESS_KIND,
    OUTLOOK_ANYWHERE,
    SCP_PROPERTY,
    ClientAccessService,
    Inventory,
    OutlookAnywhere,
    VirtualDirectory,
)
from casarray.exchange.namespace.names import host_name

INTERNAL_URL = "InternalUrl"
EXTERNAL_URL = "ExternalUrl"
INTERNAL_HOSTNAME = "InternalHostname"
EXTERNAL_HOSTNAME = "ExternalHostname"

AUTODISCOVER = catalog.get("autodiscover")
_AUTODISCOVER_NOTE = "not used: internal clients find Autodiscover through the SCP, external ones in DNS"


class Action(enum.StrEnum):
    CHANGE = "change"
    OK = "ok"


@dataclass(frozen=True, slots=True)
class Targets:
    """The names the plan moves clients to. A side that is None is left alone (--*-only)."""

    internal: str | None
    external: str | None
    autodiscover: str | None = None

    @classmethod
    def build(
        cls,
        namespace: str | None = None,
        *,
        internal_namespace: str | None = None,
        external_namespace: str | None = None,
        autodiscover: str | None = None,
        internal: bool = True,
        external: bool = True,
    ) -> Targets:
        """Validated targets from the command-line options; InventoryError names the bad option."""
        internal_name = internal_namespace or namespace
        external_name = external_namespace or namespace
        if not (internal or external):
            raise InventoryError("nothing to plan: both sides are excluded", where="options")
        if internal and internal_name is None:
            raise InventoryError(
                "no internal namespace", where="options", hint="give --namespace or --internal-namespace"
            )
        if external and external_name is None:
            raise InventoryError(
                "no external namespace", where="options", hint="give --namespace or --external-namespace"
            )
        # An error names the option the bad name came from.
        internal_option = "--internal-namespace" if internal_namespace else "--namespace"
        external_option = "--external-namespace" if external_namespace else "--namespace"
        return cls(
            internal=_checked(internal_name, internal_option) if internal else None,
            external=_checked(external_name, external_option) if external else None,
            autodiscover=_checked(autodiscover, "--autodiscover"),
        )

    @property
    def scp_host(self) -> str | None:
        """The SCP serves internal clients, so it follows the internal side."""
        if self.internal is None:
            return None
        return self.autodiscover or self.internal


def _checked(name: str | None, option: str) -> str | None:
    return None if name is None else host_name(name, what=option)


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One setting of one object: what it is now and what it should be."""

    server: str
    kind: str  # inventory Type (Owa, …), "OutlookAnywhere" or "ClientAccessService"
    identity: str
    property: str
    current: str | None
    target: str | None  # None: casarray does not set this property
    action: Action
    note: str = ""

    def as_json(self) -> dict[str, str | None]:
        """The row as `namespace plan --json` prints it (DESIGN.md §4: exactly these keys)."""
        return {
            "server": self.server,
            "kind": self.kind,
            "identity": self.identity,
            "property": self.property,
            "current": self.current,
            "target": self.target,
            "action": self.action.value,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    targets: Targets
    items: tuple[PlanItem, ...]

    @property
    def changes(self) -> tuple[PlanItem, ...]:
        return tuple(item for item in self.items if item.action is Action.CHANGE)


def make_plan(inventory: Inventory, targets: Targets) -> Plan:
    """Every managed setting of every server in `inventory`, with its target under `targets`."""
    items: list[PlanItem] = []
    order = {name.lower(): index for index, name in enumerate(inventory.server_names())}
    service_order = {service.name: index for index, service in enumerate(catalog.iter_services())}
    vdirs = sorted(
        inventory.virtual_directories, key=lambda v: (order[v.server.lower()], service_order[v.service.name])
    )
    for server in inventory.server_names():
        key = server.lower()
        for vdir in vdirs:
            if vdir.server.lower() == key:
                items.extend(_vdir_items(vdir, targets))
        for oa in inventory.outlook_anywhere:
            if oa.server.lower() == key:
                items.extend(_outlook_anywhere_items(oa, targets))
        for cas in inventory.client_access_services:
            if cas.server.lower() == key:
                items.extend(_scp_items(cas, targets))
    return Plan(targets=targets, items=tuple(items))


def _vdir_items(vdir: VirtualDirectory, targets: Targets) -> Iterator[PlanItem]:
    service = vdir.service
    for prop, current, host in (
        (INTERNAL_URL, vdir.internal_url, targets.internal),
        (EXTERNAL_URL, vdir.external_url, targets.external),
    ):
        if host is None:
            continue
        if service is AUTODISCOVER:
            yield PlanItem(
                vdir.server, vdir.kind, vdir.identity, prop, current, None, Action.OK, _AUTODISCOVER_NOTE
            )
            continue
        target = retarget_url(current, host, service)
        yield _item(vdir.server, vdir.kind, vdir.identity, prop, current, target, same_url(current, target))


def _outlook_anywhere_items(oa: OutlookAnywhere, targets: Targets) -> Iterator[PlanItem]:
    for prop, current, host in (
        (INTERNAL_HOSTNAME, oa.internal_hostname, targets.internal),
        (EXTERNAL_HOSTNAME, oa.external_hostname, targets.external),
    ):
        if host is not None:
            same = current is not None and current.lower() == host
            yield _item(oa.server, OUTLOOK_ANYWHERE, oa.identity, prop, current, host, same)


def _scp_items(cas: ClientAccessService, targets: Targets) -> Iterator[PlanItem]:
    host = targets.scp_host
    if host is not None:
        current = cas.autodiscover_internal_uri
        target = retarget_url(current, host, AUTODISCOVER)
        yield _item(
            cas.server,
            CLIENT_ACCESS_KIND,
            cas.identity,
            SCP_PROPERTY,
            current,
            target,
            same_url(current, target),
        )


def _item(
    server: str, kind: str, identity: str, prop: str, current: str | None, target: str, same: bool
) -> PlanItem:
    return PlanItem(server, kind, identity, prop, current, target, Action.OK if same else Action.CHANGE)


def retarget_url(current: str | None, host: str, service: catalog.Service) -> str:
    """`current` with its host replaced by `host`; the service's documented URL when there is none."""
    parts = _split(current)
    if parts is None:
        return f"{service.scheme}://{host}{service.url_suffix}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def same_url(current: str | None, target: str) -> bool:
    """True when `current` already is `target`: host and scheme case-insensitive, the rest exact."""
    a, b = _split(current), _split(target)
    if a is None or b is None:
        return False
    return _comparable(a) == _comparable(b)


def url_host(url: str | None) -> str | None:
    """The lower-cased host of `url`, or None when it is not an absolute URL."""
    parts = _split(url)
    return None if parts is None else parts.hostname


def _split(url: str | None) -> SplitResult | None:
    """`url` split, or None when it is missing or not an absolute URL with a host and valid port."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts


def _comparable(parts: SplitResult) -> tuple[object, ...]:
    return (
        parts.scheme.lower(),
        parts.hostname,
        parts.port,
        parts.username,
        parts.password,
        parts.path,
        parts.query,
        parts.fragment,
    )
