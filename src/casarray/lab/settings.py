"""The client-access settings of one simulated Exchange server, kept as Exchange keeps them.

Pure and typed: no I/O. `ServerSettings` holds, for one server, what the namespace procedure reads and
sets on a real one:
- each virtual directory's InternalUrl and ExternalUrl (Get-/Set-<Type>VirtualDirectory; the types of
  the service catalog: Owa, Ecp, WebServices, Mapi, Oab, ActiveSync, Autodiscover, PowerShell);
- Outlook Anywhere (Get-/Set-OutlookAnywhere): InternalHostname, ExternalHostname, the two
  ClientsRequireSsl flags, the client authentication methods, IISAuthenticationMethods, SSLOffloading;
- the Autodiscover SCP (Get-/Set-ClientAccessService -AutoDiscoverServiceInternalUri).

`ServerSettings.installed` is the state Exchange 2016/2019 setup leaves: every virtual directory's
InternalUrl on the server's own FQDN with the vdir's path, every ExternalUrl empty (null), the
Autodiscover virtual directory with neither URL, Outlook Anywhere with the FQDN as InternalHostname and
no ExternalHostname, and the SCP at https://<fqdn>/Autodiscover/Autodiscover.xml (Microsoft, "Configure
mail flow and client access on Exchange servers", step "Configure external URLs": external URLs are
not set by setup; "Autodiscover service in Exchange Server": setup publishes the SCP with the server's
FQDN).

`ServerSettings.document()` is the inventory shape `casarray namespace collector` writes (docs/namespace.md)
for this one server, so an organisation's inventory is the concatenation of every server's document.
`ServerSettings.apply(request)` checks a change as the Set- cmdlets would (property names as they spell
them, matched case-insensitively as PowerShell matches parameter names) and returns the new settings and
what changed, or raises SettingsError naming what is wrong; nothing changes on an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from casarray.errors import InventoryError
from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import (
    CLIENT_ACCESS_KIND,
    CLIENT_ACCESS_SERVICES,
    OUTLOOK_ANYWHERE,
    SCP_PROPERTY,
    SERVERS,
    VIRTUAL_DIRECTORIES,
    Inventory,
)
from casarray.exchange.namespace.names import host_name
from casarray.lab import LabError

VIRTUAL_DIRECTORY_KIND: Final = "VirtualDirectory"
KINDS: Final = (VIRTUAL_DIRECTORY_KIND, OUTLOOK_ANYWHERE, CLIENT_ACCESS_KIND)
VDIR_TYPES: Final = tuple(catalog.BY_INVENTORY_TYPE)  # Owa, Ecp, WebServices, Mapi, Oab, ActiveSync, …
WEB_SITE: Final = "Default Web Site"
# Exchange Server 2019 CU14 (Microsoft, "Exchange Server build numbers and release dates").
DEFAULT_VERSION: Final = "Version 15.2 (Build 1544.4)"
SCP_PATH: Final = "/Autodiscover/Autodiscover.xml"

# What Get-<Type>VirtualDirectory shows in Internal/ExternalAuthenticationMethods after setup. Kept so
# the document reads like the collector's and Autodiscover can say how OWA signs in; not settable here.
_INSTALLED_AUTHENTICATION: Final[Mapping[str, tuple[str, ...]]] = {
    "Owa": ("Basic", "Fba"),
    "Ecp": ("Basic", "Fba"),
    "WebServices": ("Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"),
    "Mapi": ("Ntlm", "OAuth", "Negotiate"),
    "Oab": ("WindowsIntegrated", "OAuth"),
    "ActiveSync": ("Basic",),
    "Autodiscover": ("Basic", "Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"),
    "PowerShell": (),
}
# Set-OutlookAnywhere -InternalClientAuthenticationMethod / -ExternalClientAuthenticationMethod and
# -IISAuthenticationMethods take these (Microsoft, Set-OutlookAnywhere).
OUTLOOK_ANYWHERE_METHODS: Final = ("Basic", "Ntlm", "Negotiate")


class SettingsError(LabError):
    """A settings change that a Set- cmdlet would refuse: unknown kind, type or property, a value of
    the wrong type, a URL that is not absolute http(s)."""


@dataclass(frozen=True, slots=True)
class VirtualDirectorySettings:
    """One virtual directory of one server (Get-<Type>VirtualDirectory)."""

    service: catalog.Service
    internal_url: str | None
    external_url: str | None
    internal_authentication: tuple[str, ...] = ()
    external_authentication: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        assert self.service.inventory_type is not None  # only typed services are virtual directories
        return self.service.inventory_type

    @property
    def name(self) -> str:
        """IIS names an Exchange virtual directory "<vdir> (<web site>)"."""
        return f"{self.service.vdir} ({WEB_SITE})"


@dataclass(frozen=True, slots=True)
class OutlookAnywhereSettings:
    """Outlook Anywhere (RPC over HTTP) of one server (Get-OutlookAnywhere)."""

    internal_hostname: str | None
    external_hostname: str | None
    internal_clients_require_ssl: bool = False
    external_clients_require_ssl: bool = False
    internal_client_authentication_method: str = "Ntlm"
    external_client_authentication_method: str = "Negotiate"
    iis_authentication_methods: tuple[str, ...] = OUTLOOK_ANYWHERE_METHODS
    ssl_offloading: bool = True  # Set-OutlookAnywhere: "$true ... This value is the default."

    @property
    def name(self) -> str:
        return f"{catalog.get('rpc').vdir} ({WEB_SITE})"


@dataclass(frozen=True, slots=True)
class Change:
    """One property a settings request set: the cmdlet and object it belongs to, old and new value."""

    cmdlet: str
    identity: str
    property: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.property} {self.old!r} -> {self.new!r}"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The client-access settings of one Exchange server."""

    name: str  # MB1
    fqdn: str  # mb1.alwayshotcafe.com
    version: str
    virtual_directories: tuple[VirtualDirectorySettings, ...]  # catalog order, one per type
    outlook_anywhere: OutlookAnywhereSettings
    autodiscover_internal_uri: str | None

    @classmethod
    def installed(cls, name: str, fqdn: str, version: str = DEFAULT_VERSION) -> ServerSettings:
        """What Exchange setup leaves on a new server (see the module docstring)."""
        vdirs = []
        for service in catalog.iter_services():
            if service.inventory_type is None:
                continue
            internal = f"{service.scheme}://{fqdn}{service.url_suffix}" if service.has_internal_url else None
            methods = _INSTALLED_AUTHENTICATION[service.inventory_type]
            vdirs.append(VirtualDirectorySettings(service, internal, None, methods, methods))
        return cls(
            name=name.upper(),
            fqdn=fqdn,
            version=version,
            virtual_directories=tuple(vdirs),
            outlook_anywhere=OutlookAnywhereSettings(internal_hostname=fqdn, external_hostname=None),
            autodiscover_internal_uri=f"https://{fqdn}{SCP_PATH}",
        )

    @classmethod
    def from_inventory(cls, inventory: Inventory, name: str, fqdn: str) -> ServerSettings:
        """This server's settings as `inventory` records them; what it leaves out stays as installed.
        SettingsError when the inventory does not mention the server, or holds a value the Set-
        cmdlets would refuse."""
        key = name.lower()
        if key not in {n.lower() for n in inventory.server_names()}:
            known = ", ".join(inventory.server_names()) or "no server"
            raise SettingsError(f"no server {name!r} in the settings file (it has {known})", inventory.source)
        server = next((s for s in inventory.servers if s.name.lower() == key), None)
        settings = cls.installed(name, (server.fqdn if server and server.fqdn else fqdn))
        if server is not None and server.version:
            settings = dataclasses.replace(settings, version=server.version)
        try:
            for vdir in inventory.virtual_directories:
                if vdir.server.lower() == key:
                    settings = settings._set_vdir(
                        vdir.kind, {"InternalUrl": vdir.internal_url, "ExternalUrl": vdir.external_url}
                    )[0]
            for oa in inventory.outlook_anywhere:
                if oa.server.lower() == key:
                    recorded: dict[str, Any] = {
                        "InternalHostname": oa.internal_hostname,
                        "ExternalHostname": oa.external_hostname,
                        "InternalClientsRequireSsl": oa.internal_clients_require_ssl,
                        "ExternalClientsRequireSsl": oa.external_clients_require_ssl,
                        "InternalClientAuthenticationMethod": oa.internal_client_authentication,
                        "ExternalClientAuthenticationMethod": oa.external_client_authentication,
                        "IISAuthenticationMethods": list(oa.iis_authentication) or None,
                        "SSLOffloading": oa.ssl_offloading,
                    }
                    # A flag or method the file does not record keeps its installed value.
                    keep = {"InternalHostname", "ExternalHostname"}
                    given = {k: v for k, v in recorded.items() if v is not None or k in keep}
                    settings = settings._set_outlook_anywhere(given)[0]
            for cas in inventory.client_access_services:
                if cas.server.lower() == key:
                    settings = settings._set_client_access({SCP_PROPERTY: cas.autodiscover_internal_uri})[0]
        except SettingsError as exc:
            raise SettingsError(f"server {name}: {exc.what}", inventory.source) from None
        return settings

    # -- reading --------------------------------------------------------------------------------------

    def vdir(self, type_: str) -> VirtualDirectorySettings:
        """The virtual directory of inventory type `type_` (Owa, WebServices, …; any case)."""
        for vdir in self.virtual_directories:
            if vdir.type.lower() == type_.lower():
                return vdir
        raise KeyError(type_)

    def identity(self, object_name: str) -> str:
        """The Identity the Set- cmdlets take: `MB1\\owa (Default Web Site)`."""
        return f"{self.name}\\{object_name}"

    def document(self) -> dict[str, Any]:
        """This server's settings in the inventory shape the collector writes (docs/namespace.md)."""
        oa = self.outlook_anywhere
        return {
            SERVERS: [{"Name": self.name, "Fqdn": self.fqdn, "AdminDisplayVersion": self.version}],
            VIRTUAL_DIRECTORIES: [
                {
                    "Type": v.type,
                    "Server": self.name,
                    "Name": v.name,
                    "Identity": self.identity(v.name),
                    "InternalUrl": v.internal_url,
                    "ExternalUrl": v.external_url,
                    "InternalAuthenticationMethods": list(v.internal_authentication),
                    "ExternalAuthenticationMethods": list(v.external_authentication),
                }
                for v in self.virtual_directories
            ],
            OUTLOOK_ANYWHERE: [
                {
                    "Server": self.name,
                    "Name": oa.name,
                    "Identity": self.identity(oa.name),
                    "InternalHostname": oa.internal_hostname,
                    "ExternalHostname": oa.external_hostname,
                    "InternalClientsRequireSsl": oa.internal_clients_require_ssl,
                    "ExternalClientsRequireSsl": oa.external_clients_require_ssl,
                    "InternalClientAuthenticationMethod": oa.internal_client_authentication_method,
                    "ExternalClientAuthenticationMethod": oa.external_client_authentication_method,
                    "IISAuthenticationMethods": list(oa.iis_authentication_methods),
                    "SSLOffloading": oa.ssl_offloading,
                }
            ],
            CLIENT_ACCESS_SERVICES: [
                {"Name": self.name, "Identity": self.name, SCP_PROPERTY: self.autodiscover_internal_uri}
            ],
        }

    # -- changing -------------------------------------------------------------------------------------

    def apply(self, request: Any) -> tuple[ServerSettings, tuple[Change, ...]]:
        """Apply one settings request (the JSON `POST /_sim/settings` takes, docs/lab.md):

            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "https://…", …}}
            {"Kind": "OutlookAnywhere", "Set": {"ExternalHostname": "…", …}}
            {"Kind": "ClientAccessService", "Set": {"AutoDiscoverServiceInternalUri": "…"}}

        with an optional "Identity" that must name the object on this server. Returns the new settings
        and every property set; SettingsError names what is wrong."""
        if not isinstance(request, Mapping):
            raise SettingsError(f"expected a JSON object, found {_json_type(request)}")
        fields = _fields(request, ("Kind", "Type", "Identity", "Set"), "request")
        kind = _choice(fields.get("Kind"), KINDS, "Kind")
        changes = fields.get("Set")
        if not isinstance(changes, Mapping) or not changes:
            raise SettingsError(f"Set: expected a non-empty JSON object of properties, found {changes!r}")
        if kind == VIRTUAL_DIRECTORY_KIND:
            type_ = _choice(fields.get("Type"), VDIR_TYPES, "Type")
            object_name = self.vdir(type_).name
        else:
            if "Type" in fields:
                raise SettingsError(f"Type: only a VirtualDirectory has a Type, not {kind}")
            object_name = self.outlook_anywhere.name if kind == OUTLOOK_ANYWHERE else self.name
        identity = fields.get("Identity")
        if identity is not None:
            self._check_identity(identity, kind, object_name)
        if kind == VIRTUAL_DIRECTORY_KIND:
            return self._set_vdir(type_, changes)
        if kind == OUTLOOK_ANYWHERE:
            return self._set_outlook_anywhere(changes)
        return self._set_client_access(changes)

    def _check_identity(self, identity: Any, kind: str, object_name: str) -> None:
        # Exchange takes "<server>\<vdir> (<site>)" for a virtual directory and the server name for the
        # Client Access service; object identities compare case-insensitively.
        wanted = [self.identity(object_name)] if kind != CLIENT_ACCESS_KIND else [self.name, self.fqdn]
        if not isinstance(identity, str) or identity.strip().lower() not in {w.lower() for w in wanted}:
            raise SettingsError(
                f"Identity: {identity!r} is not {' or '.join(map(repr, wanted))} on this server"
            )

    def _set_vdir(self, type_: str, changes: Mapping[str, Any]) -> tuple[ServerSettings, tuple[Change, ...]]:
        vdir = self.vdir(type_)
        service = vdir.service
        values = _parse(changes, _VDIR_PROPERTIES, f"{type_} virtual directory")
        new_vdir = dataclasses.replace(vdir, **{_VDIR_PROPERTIES[p][0]: v for p, v in values.items()})
        record = tuple(
            Change(
                service.set_cmdlet,
                self.identity(vdir.name),
                prop,
                getattr(vdir, _VDIR_PROPERTIES[prop][0]),
                value,
            )
            for prop, value in values.items()
        )
        vdirs = tuple(new_vdir if v is vdir else v for v in self.virtual_directories)
        return dataclasses.replace(self, virtual_directories=vdirs), record

    def _set_outlook_anywhere(self, changes: Mapping[str, Any]) -> tuple[ServerSettings, tuple[Change, ...]]:
        oa = self.outlook_anywhere
        values = _parse(changes, _OUTLOOK_ANYWHERE_PROPERTIES, OUTLOOK_ANYWHERE)
        attrs = {_OUTLOOK_ANYWHERE_PROPERTIES[p][0]: v for p, v in values.items()}
        cmdlet = catalog.get("rpc").set_cmdlet
        record = tuple(
            Change(
                cmdlet,
                self.identity(oa.name),
                prop,
                _plain(getattr(oa, _OUTLOOK_ANYWHERE_PROPERTIES[prop][0])),
                _plain(value),
            )
            for prop, value in values.items()
        )
        return dataclasses.replace(self, outlook_anywhere=dataclasses.replace(oa, **attrs)), record

    def _set_client_access(self, changes: Mapping[str, Any]) -> tuple[ServerSettings, tuple[Change, ...]]:
        values = _parse(changes, _CLIENT_ACCESS_PROPERTIES, CLIENT_ACCESS_KIND)
        uri = values[SCP_PROPERTY]
        change = Change(
            "Set-ClientAccessService", self.name, SCP_PROPERTY, self.autodiscover_internal_uri, uri
        )
        return dataclasses.replace(self, autodiscover_internal_uri=uri), (change,)


# ---------------------------------------------------------------------------------------------------
# Property tables and value checks.

Parser = Callable[[Any, str], Any]


def parse_url(value: Any, prop: str) -> str | None:
    """A URL property (System.Uri in Exchange): null, or an absolute http or https URL with a host."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(f"{prop}: expected a URL string or null, found {_json_type(value)}")
    text = value.strip()
    if not text:
        return None  # Set-… -InternalUrl '' clears the URL, as $null does
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SettingsError(f"{prop}: {value!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{prop}: {value!r} is not an absolute http(s) URL")
    return text


def _hostname(value: Any, prop: str) -> str | None:
    """A Hostname property (Outlook Anywhere): null or a DNS name; kept as written."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(f"{prop}: expected a host name string or null, found {_json_type(value)}")
    if not value.strip():
        return None
    try:
        host_name(value, what=prop, fqdn=False)
    except InventoryError as exc:
        raise SettingsError(f"{prop}: {exc.what}") from None
    return value.strip().rstrip(".")


def _boolean(value: Any, prop: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{prop}: expected true or false, found {_json_type(value)} {value!r}")
    return value


def _method(value: Any, prop: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{prop}: expected one of {', '.join(OUTLOOK_ANYWHERE_METHODS)}, found {value!r}")
    return _choice(value.strip(), OUTLOOK_ANYWHERE_METHODS, prop)


def _methods(value: Any, prop: str) -> tuple[str, ...]:
    # A MultiValuedProperty: a list, or one string with commas ("Basic, Ntlm") as PowerShell accepts.
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SettingsError(f"{prop}: expected a non-empty list of {', '.join(OUTLOOK_ANYWHERE_METHODS)}")
    return tuple(dict.fromkeys(_method(item, prop) for item in items))


def _scp(value: Any, prop: str) -> str | None:
    return parse_url(value, prop)


_VDIR_PROPERTIES: Final[Mapping[str, tuple[str, Parser]]] = {
    "InternalUrl": ("internal_url", parse_url),
    "ExternalUrl": ("external_url", parse_url),
}
_OUTLOOK_ANYWHERE_PROPERTIES: Final[Mapping[str, tuple[str, Parser]]] = {
    "InternalHostname": ("internal_hostname", _hostname),
    "ExternalHostname": ("external_hostname", _hostname),
    "InternalClientsRequireSsl": ("internal_clients_require_ssl", _boolean),
    "ExternalClientsRequireSsl": ("external_clients_require_ssl", _boolean),
    "InternalClientAuthenticationMethod": ("internal_client_authentication_method", _method),
    "ExternalClientAuthenticationMethod": ("external_client_authentication_method", _method),
    "IISAuthenticationMethods": ("iis_authentication_methods", _methods),
    "SSLOffloading": ("ssl_offloading", _boolean),
}
_CLIENT_ACCESS_PROPERTIES: Final[Mapping[str, tuple[str, Parser]]] = {SCP_PROPERTY: ("", _scp)}


def _parse(changes: Mapping[str, Any], table: Mapping[str, tuple[str, Parser]], what: str) -> dict[str, Any]:
    """Every property of `changes` checked against `table`: canonical name → parsed value."""
    canonical = {name.lower(): name for name in table}
    values: dict[str, Any] = {}
    for key, value in changes.items():
        name = canonical.get(str(key).lower())
        if name is None:
            raise SettingsError(
                f"Set: {what} has no settable property {key!r}", hint="settable: " + ", ".join(table)
            )
        if name in values:
            raise SettingsError(f"Set: {name} is given twice")
        values[name] = table[name][1](value, name)
    return values


def _fields(data: Mapping[Any, Any], allowed: Iterable[str], what: str) -> dict[str, Any]:
    """`data`'s keys matched case-insensitively to `allowed`; an unknown key is an error."""
    canonical = {name.lower(): name for name in allowed}
    fields: dict[str, Any] = {}
    for key, value in data.items():
        name = canonical.get(str(key).lower())
        if name is None:
            raise SettingsError(f"{what}: unknown key {key!r}", hint="keys: " + ", ".join(canonical.values()))
        fields[name] = value
    return fields


def _choice(value: Any, choices: Iterable[str], what: str) -> str:
    options = tuple(choices)
    if isinstance(value, str):
        for option in options:
            if option.lower() == value.strip().lower():
                return option
    shown = "nothing" if value is None else repr(value)
    raise SettingsError(f"{what}: expected one of {', '.join(options)}, found {shown}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# What each kind's Set- cmdlet can change here, by the parameter names Exchange's cmdlets spell (the
# lab's PowerShell binds exactly these; the values are checked by `ServerSettings.apply`).
SETTABLE: Final[Mapping[str, tuple[str, ...]]] = {
    VIRTUAL_DIRECTORY_KIND: tuple(_VDIR_PROPERTIES),
    OUTLOOK_ANYWHERE: tuple(_OUTLOOK_ANYWHERE_PROPERTIES),
    CLIENT_ACCESS_KIND: tuple(_CLIENT_ACCESS_PROPERTIES),
}
