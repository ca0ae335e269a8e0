"""The plan: for every server, what each client-access setting is and what it should be.

Rules (each from Microsoft's client-access documentation; the sources are listed in docs/namespace.md):

1. A client-facing URL moves to what the balancer's VIP serves: `https://<namespace>/<path>` on the
   balancer's https port (443 unless `--https-port` says otherwise). The path (and query) of the
   current URL is kept; scheme, host and port are not. A URL on Exchange's back-end site (port 444,
   "Exchange Back End") or on http would otherwise name the namespace on a port or scheme the VIP does
   not serve (it only redirects http). The old approach, `-replace $server, $namespace` on the whole
   string, also rewrote a domain that contains the server name (MB1 in mb1corp.com) and left unset
   (null) URLs unset.
2. A URL that is not set gets the path Microsoft documents for the unified namespace (catalog
   `Service.url_suffix`).
3. The Autodiscover virtual directory's URLs are left alone: "You can't set an internal URL on the
   Autodiscover virtual directory" and Microsoft's table shows "No external URL displayed" for it.
   Internal clients find Autodiscover through the SCP, which gets
   https://<autodiscover name or internal namespace>/Autodiscover/Autodiscover.xml
   (Set-ClientAccessService -AutoDiscoverServiceInternalUri).
4. The PowerShell virtual directory stays on the server names unless asked (`--powershell`): remote
   PowerShell uses Kerberos over http to one server (catalog `Service.scheme`), which a VIP serving
   https does not carry. When asked, it moves like the others, to https on the VIP.
5. Outlook Anywhere takes host names, not URLs (Set-OutlookAnywhere -InternalHostname/-ExternalHostname).
6. OWA and ECP URLs must match ("Configure mail flow and client access", step 4): both get the same
   host per side because every URL of a side gets the same namespace.
7. A value is already right when scheme and host equal the target's case-insensitively (DNS names are
   case-insensitive, RFC 4343; schemes too, RFC 3986 §3.1), the port is the same once the scheme's
   default is filled in (RFC 3986 §6.2.3: "https://h:443/" and "https://h/" are equivalent) and
   everything else is equal.
8. A scope (`--server`, `--service`) keeps only the rows of those servers and services; Outlook
   Anywhere is the service `rpc` and the SCP belongs to `autodiscover`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
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
POWERSHELL = catalog.get("powershell")
OUTLOOK_ANYWHERE_SERVICE = catalog.get("rpc")
HTTPS_PORT = 443
_DEFAULT_PORTS = {"https": 443, "http": 80}
_AUTODISCOVER_NOTE = "not used: internal clients find Autodiscover through the SCP, external ones in DNS"
_POWERSHELL_NOTE = (
    "left on the server names: remote PowerShell uses Kerberos over http to each server "
    "(--powershell moves it to the namespace)"
)


class Action(enum.StrEnum):
    CHANGE = "change"
    OK = "ok"


@dataclass(frozen=True, slots=True)
class Targets:
    """The names the plan moves clients to. A side that is None is left alone (--*-only)."""

    internal: str | None
    external: str | None
    autodiscover: str | None = None
    https_port: int = HTTPS_PORT  # the port the balancer serves https on (listen.https_port)
    powershell: bool = False  # move the PowerShell virtual directory too (rule 4)

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
        https_port: int = HTTPS_PORT,
        powershell: bool = False,
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
            https_port=_port(https_port),
            powershell=powershell,
        )

    @property
    def scp_host(self) -> str | None:
        """The SCP serves internal clients, so it follows the internal side."""
        if self.internal is None:
            return None
        return self.autodiscover or self.internal


def _checked(name: str | None, option: str) -> str | None:
    return None if name is None else host_name(name, what=option)


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InventoryError(
            f"{port} is not a TCP port",
            where="--https-port",
            hint="the balancer's listen.https_port, 1-65535",
        )
    return port


@dataclass(frozen=True, slots=True)
class Scope:
    """Which servers and services a plan covers (rule 8); an empty set means all of them."""

    servers: frozenset[str] = frozenset()  # lower-cased server names
    services: frozenset[str] = frozenset()  # catalog names

    @classmethod
    def build(
        cls, inventory: Inventory, *, servers: Iterable[str] = (), services: Iterable[str] = ()
    ) -> Scope:
        """The scope of `--server`/`--service` values (repeated or comma-separated), checked against
        the inventory and the catalog: a name that matches nothing is an InventoryError, so a typo
        never turns into an empty plan that verifies."""
        known_servers = {name.lower(): name for name in inventory.server_names()}
        chosen_servers = set()
        for name in _split_values(servers):
            if name.lower() not in known_servers:
                raise InventoryError(
                    f"no server {name!r} in the inventory",
                    where="--server",
                    hint="the inventory has " + (", ".join(known_servers.values()) or "no server"),
                )
            chosen_servers.add(name.lower())
        chosen_services = set()
        for name in _split_values(services):
            service = _SERVICE_NAMES.get(name.lower())
            if service is None:
                raise InventoryError(
                    f"no service {name!r}",
                    where="--service",
                    hint="one of " + ", ".join(catalog.SERVICE_NAMES),
                )
            chosen_services.add(service.name)
        return cls(frozenset(chosen_servers), frozenset(chosen_services))

    def includes(self, server: str, service: catalog.Service) -> bool:
        return (not self.servers or server.lower() in self.servers) and (
            not self.services or service.name in self.services
        )


def _split_values(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        yield from (part.strip() for part in value.split(",") if part.strip())


# --service takes casarray's names (owa, ews, rpc, …) or the inventory's (Owa, WebServices, OutlookAnywhere).
_SERVICE_NAMES: dict[str, catalog.Service] = {
    **{t.lower(): s for t, s in catalog.BY_INVENTORY_TYPE.items()},
    OUTLOOK_ANYWHERE.lower(): OUTLOOK_ANYWHERE_SERVICE,
    **{name: catalog.get(name) for name in catalog.SERVICE_NAMES},
}


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
        """The row as `namespace plan --json` prints it (exactly these keys: the contract in docs/namespace.md)."""
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


def make_plan(inventory: Inventory, targets: Targets, scope: Scope | None = None) -> Plan:
    """Every managed setting of every server in `inventory` (within `scope`), with its target."""
    scope = scope or Scope()
    items: list[PlanItem] = []
    order = {name.lower(): index for index, name in enumerate(inventory.server_names())}
    service_order = {service.name: index for index, service in enumerate(catalog.iter_services())}
    vdirs = sorted(
        inventory.virtual_directories, key=lambda v: (order[v.server.lower()], service_order[v.service.name])
    )
    for server in inventory.server_names():
        key = server.lower()
        for vdir in vdirs:
            if vdir.server.lower() == key and scope.includes(server, vdir.service):
                items.extend(_vdir_items(vdir, targets))
        for oa in inventory.outlook_anywhere:
            if oa.server.lower() == key and scope.includes(server, OUTLOOK_ANYWHERE_SERVICE):
                items.extend(_outlook_anywhere_items(oa, targets))
        for cas in inventory.client_access_services:
            if cas.server.lower() == key and scope.includes(server, AUTODISCOVER):
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
        if service is AUTODISCOVER or (service is POWERSHELL and not targets.powershell):
            note = _AUTODISCOVER_NOTE if service is AUTODISCOVER else _POWERSHELL_NOTE
            yield PlanItem(vdir.server, vdir.kind, vdir.identity, prop, current, None, Action.OK, note)
            continue
        target = retarget_url(current, host, service, targets.https_port)
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
        target = retarget_url(current, host, AUTODISCOVER, targets.https_port)
        same = same_url(current, target)
        note = "" if same or targets.autodiscover is not None else _scp_hint(current)
        yield _item(cas.server, CLIENT_ACCESS_KIND, cas.identity, SCP_PROPERTY, current, target, same, note)


def _scp_hint(current: str | None) -> str:
    """Microsoft's own examples put the SCP on autodiscover.<domain>: say that it may stay there."""
    host = url_host(current)
    if host is None or not host.startswith("autodiscover."):
        return ""
    return f"{host} is a valid choice for the SCP: to keep it, add --autodiscover {host}"


def _item(
    server: str,
    kind: str,
    identity: str,
    prop: str,
    current: str | None,
    target: str,
    same: bool,
    note: str = "",
) -> PlanItem:
    action = Action.OK if same else Action.CHANGE
    return PlanItem(server, kind, identity, prop, current, target, action, note)


def retarget_url(
    current: str | None, host: str, service: catalog.Service, https_port: int = HTTPS_PORT
) -> str:
    """The URL the VIP serves for `service` (rule 1): https on `host`:`https_port`, with the current
    URL's path and query, or the service's documented path when there is no usable current URL."""
    port = "" if https_port == HTTPS_PORT else f":{https_port}"
    parts = split_url(current)
    if parts is None or parts.path in ("", "/"):
        return f"https://{host}{port}{service.url_suffix}"
    return urlunsplit(("https", host + port, parts.path, parts.query, ""))


def same_url(current: str | None, target: str) -> bool:
    """True when `current` already is `target` (rule 7)."""
    a, b = split_url(current), split_url(target)
    if a is None or b is None:
        return False
    return _comparable(a) == _comparable(b)


def url_host(url: str | None) -> str | None:
    """The lower-cased host of `url`, or None when it is not an absolute URL."""
    parts = split_url(url)
    return None if parts is None else parts.hostname


def split_url(url: str | None) -> SplitResult | None:
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


def url_port(parts: SplitResult) -> int | None:
    """The port of split `parts`, the scheme's default filled in (RFC 3986 §6.2.3)."""
    return parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())


def _comparable(parts: SplitResult) -> tuple[object, ...]:
    return (
        parts.scheme.lower(),
        parts.hostname,
        url_port(parts),
        parts.username,
        parts.password,
        parts.path,
        parts.query,
        parts.fragment,
    )
