"""The inventory file: load what `namespace collector` wrote and normalise it into typed records.

The file is JSON written by Windows PowerShell's ConvertTo-Json (the inventory format of
docs/namespace.md), so the loader accepts every shape that serialiser produces for the same data:

- a URL is a string, null, or a serialised System.Uri object (AbsoluteUri, OriginalString, Host, …);
- `Server` is a string or a serialised server id object with `Name`;
- a one-element array may arrive unwrapped as the element itself, and Windows PowerShell 5.1 may wrap
  an array as {"value": [...], "Count": n} when System.Array carries extended type data;
- enum values (authentication methods) may be strings or their integer values;
- property names are matched case-insensitively, as ConvertFrom-Json does;
- extra properties are kept on each record (`raw`) and otherwise ignored.

A plain JSON array (or one lone object) of Server, Name, InternalUrl, ExternalUrl is read too: it is what
`Get-*VirtualDirectory | Select Server, Name, InternalUrl, ExternalUrl | ConvertTo-Json` writes, the
classic "GetVirtDirs" check. Its entries carry no Type, so the type comes from the virtual directory's
name ("EWS (Default Web Site)" is WebServices); such a file has no Outlook Anywhere, SCP or server
versions, which `Inventory.virtual_directories_only` says.

Text is UTF-8 with or without a BOM; UTF-16 with a BOM (what Windows PowerShell's `>` and `Out-File`
write by default) is accepted too. Anything else is an InventoryError naming the file and the entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casarray.errors import InventoryError
from casarray.exchange.catalog import BY_INVENTORY_TYPE, BY_PREFIX, Service
from casarray.textfile import NotText, decode_text

# The inventory's top-level lists. Outlook Anywhere and the Autodiscover SCP are not virtual
# directories with URLs, so they have lists of their own; their names double as the plan's `kind`.
SERVERS = "Servers"
VIRTUAL_DIRECTORIES = "VirtualDirectories"
OUTLOOK_ANYWHERE = "OutlookAnywhere"
CLIENT_ACCESS_SERVICES = "ClientAccessServices"

# The catalog covers the virtual directories and Outlook Anywhere; the SCP lives on the Client Access
# service object and the server list comes from Get-ExchangeServer (Microsoft: Set-ClientAccessService,
# "AutoDiscoverServiceInternalUri"; Autodiscover service in Exchange Server, "SCP objects").
CLIENT_ACCESS_KIND = "ClientAccessService"
CLIENT_ACCESS_GET = "Get-ClientAccessService"
CLIENT_ACCESS_GET_2013 = "Get-ClientAccessServer"  # Exchange 2013's name for the same object
CLIENT_ACCESS_SET = "Set-ClientAccessService"
CLIENT_ACCESS_SET_2013 = "Set-ClientAccessServer"
EXCHANGE_SERVER_GET = "Get-ExchangeServer"
SCP_PROPERTY = "AutoDiscoverServiceInternalUri"

JsonObject = Mapping[str, Any]

# "Version 15.0 (Build 1497.2)": Exchange 2013 is 15.0, 2016 is 15.1, 2019 is 15.2 (Microsoft,
# "Exchange Server build numbers and release dates").
_VERSION = re.compile(r"(\d+)\.(\d+)")


def client_access_cmdlets(version: str | None) -> tuple[str, str]:
    """The Get-/Set- pair for a server's Client Access object (the SCP) under `version`.

    Exchange 2016 renamed Get-/Set-ClientAccessServer to Get-/Set-ClientAccessService; Exchange 2013
    (15.0) has only the old names. An unknown version gets the current names.
    """
    match = _VERSION.search(version or "")
    if match is not None and (int(match.group(1)), int(match.group(2))) < (15, 1):
        return CLIENT_ACCESS_GET_2013, CLIENT_ACCESS_SET_2013
    return CLIENT_ACCESS_GET, CLIENT_ACCESS_SET


@dataclass(frozen=True, slots=True)
class ExchangeServer:
    """One Exchange server as Get-ExchangeServer describes it."""

    name: str
    fqdn: str | None
    version: str | None
    raw: JsonObject = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class VirtualDirectory:
    """One client-access virtual directory (Get-<Type>VirtualDirectory) of one server."""

    service: Service
    server: str
    identity: str
    name: str | None
    internal_url: str | None
    external_url: str | None
    internal_authentication: tuple[str, ...] = ()
    external_authentication: tuple[str, ...] = ()
    raw: JsonObject = field(default_factory=dict, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """The inventory `Type` (Owa, Ecp, WebServices, …), as the catalog spells it."""
        assert self.service.inventory_type is not None  # only typed services are loaded as vdirs
        return self.service.inventory_type


@dataclass(frozen=True, slots=True)
class OutlookAnywhere:
    """The Outlook Anywhere (RPC over HTTP) settings of one server (Get-OutlookAnywhere)."""

    server: str
    identity: str
    internal_hostname: str | None
    external_hostname: str | None
    internal_clients_require_ssl: bool | None = None
    external_clients_require_ssl: bool | None = None
    ssl_offloading: bool | None = None
    internal_client_authentication: str | None = None
    external_client_authentication: str | None = None
    iis_authentication: tuple[str, ...] = ()
    raw: JsonObject = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ClientAccessService:
    """The Client Access service of one server: it carries the Autodiscover SCP URL."""

    server: str
    identity: str
    autodiscover_internal_uri: str | None
    raw: JsonObject = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything the namespace verbs know about an organisation, as read from one file."""

    source: str
    servers: tuple[ExchangeServer, ...]
    virtual_directories: tuple[VirtualDirectory, ...]
    outlook_anywhere: tuple[OutlookAnywhere, ...]
    client_access_services: tuple[ClientAccessService, ...]
    # True for a GetVirtDirs list: Outlook Anywhere, the SCP and the server versions were not collected.
    virtual_directories_only: bool = False

    def version_of(self, server: str) -> str | None:
        """The AdminDisplayVersion the Servers list records for `server` (any case), else None."""
        for entry in self.servers:
            if entry.name.lower() == server.lower():
                return entry.version
        return None

    def server_names(self) -> tuple[str, ...]:
        """Every server the file mentions, in file order: the Servers list first, then the others."""
        seen: dict[str, str] = {}
        names = [s.name for s in self.servers]
        names += [v.server for v in self.virtual_directories]
        names += [o.server for o in self.outlook_anywhere]
        names += [c.server for c in self.client_access_services]
        for name in names:
            seen.setdefault(name.lower(), name)
        return tuple(seen.values())


def load_inventory(path: Path) -> Inventory:
    """Read and normalise the inventory file at `path`; InventoryError if it cannot be used."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(
            "no such file", where=where, hint="create it with 'casarray namespace collector'"
        ) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", where=where) from None
    return parse_inventory(_decode(data, where), where=where)


def parse_inventory(text: str, *, where: str = "<inventory>") -> Inventory:
    """Normalise inventory JSON `text`; `where` names its origin in errors."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", where=where
        ) from None
    if isinstance(document, dict) and _looks_like_a_vdir(document):
        document = [document]  # ConvertTo-Json writes a one-object pipeline as the object itself
    if isinstance(document, list):
        return _virtual_directory_list(document, where)
    if not isinstance(document, dict):
        raise InventoryError(
            f"not an inventory: the top level is a JSON {_json_type(document)}, not an object",
            where=where,
            hint="create the file with 'casarray namespace collector'",
        )
    top = _Fields(document)
    if not top.has(VIRTUAL_DIRECTORIES):
        raise InventoryError(
            f"not an inventory: no {VIRTUAL_DIRECTORIES} list",
            where=where,
            hint="create the file with 'casarray namespace collector'",
        )
    return Inventory(
        source=where,
        servers=tuple(_server(e, where) for e in _entries(top, SERVERS, where)),
        virtual_directories=tuple(
            _virtual_directory(e, where) for e in _entries(top, VIRTUAL_DIRECTORIES, where)
        ),
        outlook_anywhere=tuple(_outlook_anywhere(e, where) for e in _entries(top, OUTLOOK_ANYWHERE, where)),
        client_access_services=tuple(
            _client_access(e, where) for e in _entries(top, CLIENT_ACCESS_SERVICES, where)
        ),
    )


def _looks_like_a_vdir(document: JsonObject) -> bool:
    fields = _Fields(document)
    return not fields.has(VIRTUAL_DIRECTORIES) and all(fields.has(k) for k in _GETVIRTDIRS_KEYS)


def _virtual_directory_list(document: list[Any], where: str) -> Inventory:
    """A GetVirtDirs list: each entry's Type is found from its Name, "<vdir> (<web site>)"."""
    hint = "a list holds what Get-<Type>VirtualDirectory | Select " + ", ".join(_GETVIRTDIRS_KEYS) + " writes"
    if not document:
        raise InventoryError("not an inventory: an empty list", where=where, hint=hint)
    entries = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise InventoryError(
                f"not an inventory: [{index}] is a JSON {_json_type(item)}, not an object",
                where=where,
                hint=hint,
            )
        entries.append(_Fields(item, f"[{index}]"))
    vdirs = []
    for entry in entries:
        name = _text(entry.get("Name"), ("Name",))
        if name is None:
            raise InventoryError(f"{entry.at}: no Name", where=where, hint=hint)
        service = _service_of(entry, name)
        if service is None:
            raise InventoryError(
                f"{entry.at}: {name!r} is not a virtual directory casarray knows",
                where=where,
                hint="the list holds the output of Get-<Type>VirtualDirectory; " + _TYPES_HINT,
            )
        vdirs.append(_virtual_directory(entry, where, service))
    return Inventory(
        source=where,
        servers=(),
        virtual_directories=tuple(vdirs),
        outlook_anywhere=(),
        client_access_services=(),
        virtual_directories_only=True,
    )


def _service_of(entry: _Fields, name: str) -> Service | None:
    """The service of a list entry: its Type when it has one, else the vdir part of its Name."""
    kind = _text(entry.get("Type"), ())
    if kind is not None:
        return _BY_TYPE_LOWER.get(kind.lower())
    # IIS names an Exchange virtual directory "<vdir> (<web site>)", e.g. "owa (Default Web Site)".
    vdir = name.split(" (", 1)[0].strip().lower()
    service = BY_PREFIX.get(vdir)
    return service if service is not None and service.inventory_type is not None else None


def _decode(data: bytes, where: str) -> str:
    try:
        return decode_text(data)  # the config's reader too: UTF-8, or UTF-16/32 by their byte-order mark
    except NotText as exc:
        raise InventoryError(
            str(exc), where=where, hint="write the file with the collector, which saves UTF-8"
        ) from None


class _Fields:
    """One JSON object with case-insensitive property lookup and its position for error messages."""

    __slots__ = ("_by_lower", "at", "data")

    def __init__(self, data: JsonObject, at: str = "") -> None:
        self.data = data
        self.at = at
        self._by_lower = {key.lower(): key for key in data}

    def has(self, name: str) -> bool:
        return name.lower() in self._by_lower

    def get(self, name: str) -> Any:
        key = self._by_lower.get(name.lower())
        return None if key is None else self.data[key]


def _entries(top: _Fields, name: str, where: str) -> list[_Fields]:
    value = _as_list(top.get(name))
    entries = []
    for index, item in enumerate(value):
        at = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise InventoryError(f"{at}: expected an object, found a JSON {_json_type(item)}", where=where)
        entries.append(_Fields(item, at))
    return entries


def _as_list(value: Any) -> list[Any]:
    """A JSON value as a list: null → [], a lone object → [object], the PS 5.1 wrapper → its value."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        keys = {key.lower() for key in value}
        if keys == {"value", "count"}:
            inner = _Fields(value).get("value")
            if isinstance(inner, list):
                return inner
    return [value]


def _server(entry: _Fields, where: str) -> ExchangeServer:
    return ExchangeServer(
        name=_required(entry, "Name", where, ("Name",)),
        fqdn=_text(entry.get("Fqdn"), ("Fqdn", "Domain")),
        version=_version(entry.get("AdminDisplayVersion")),
        raw=entry.data,
    )


def _virtual_directory(entry: _Fields, where: str, service: Service | None = None) -> VirtualDirectory:
    if service is None:
        kind = _text(entry.get("Type"), ())
        if kind is None:
            raise InventoryError(f"{entry.at}: no Type", where=where, hint=_TYPES_HINT)
        service = _BY_TYPE_LOWER.get(kind.lower())
        if service is None:
            raise InventoryError(
                f"{entry.at}: unknown virtual directory Type {kind!r}", where=where, hint=_TYPES_HINT
            )
    server = _required(entry, "Server", where, ("Name",))
    name = _text(entry.get("Name"), ("Name",))
    return VirtualDirectory(
        service=service,
        server=server,
        identity=_identity(entry, server, name, where),
        name=name,
        internal_url=_url(entry.get("InternalUrl")),
        external_url=_url(entry.get("ExternalUrl")),
        internal_authentication=_text_list(entry.get("InternalAuthenticationMethods")),
        external_authentication=_text_list(entry.get("ExternalAuthenticationMethods")),
        raw=entry.data,
    )


def _outlook_anywhere(entry: _Fields, where: str) -> OutlookAnywhere:
    server = _required(entry, "Server", where, ("Name",))
    return OutlookAnywhere(
        server=server,
        identity=_identity(entry, server, _text(entry.get("Name"), ("Name",)), where),
        internal_hostname=_text(entry.get("InternalHostname"), _HOSTNAME_KEYS),
        external_hostname=_text(entry.get("ExternalHostname"), _HOSTNAME_KEYS),
        internal_clients_require_ssl=_flag(entry.get("InternalClientsRequireSsl")),
        external_clients_require_ssl=_flag(entry.get("ExternalClientsRequireSsl")),
        ssl_offloading=_flag(entry.get("SSLOffloading")),
        internal_client_authentication=_text(entry.get("InternalClientAuthenticationMethod"), ()),
        external_client_authentication=_text(entry.get("ExternalClientAuthenticationMethod"), ()),
        iis_authentication=_text_list(entry.get("IISAuthenticationMethods")),
        raw=entry.data,
    )


def _client_access(entry: _Fields, where: str) -> ClientAccessService:
    # Get-ClientAccessService names the object after its server; a collector may also say Server.
    server = _text(entry.get("Name"), ("Name",)) or _text(entry.get("Server"), ("Name",))
    if server is None:
        raise InventoryError(
            f"{entry.at}: no Name", where=where, hint="each Client Access service names its server"
        )
    identity = _text(entry.get("Identity"), ("Name",)) or server
    return ClientAccessService(
        server=server,
        identity=identity,
        autodiscover_internal_uri=_url(entry.get(SCP_PROPERTY)),
        raw=entry.data,
    )


_BY_TYPE_LOWER: Mapping[str, Service] = {t.lower(): s for t, s in BY_INVENTORY_TYPE.items()}
_TYPES_HINT = "Type is one of " + ", ".join(BY_INVENTORY_TYPE)
# The columns of the GetVirtDirs check: Select Server, Name, InternalUrl, ExternalUrl.
_GETVIRTDIRS_KEYS = ("Server", "Name", "InternalUrl", "ExternalUrl")
# Microsoft.Exchange.Data.Hostname serialises with its text in HostnameString.
_HOSTNAME_KEYS = ("HostnameString", "Hostname")
# System.Uri serialises as an object; OriginalString is what the administrator set, AbsoluteUri its
# canonical form (host lower-cased). The original is preferred so a rollback restores it exactly.
_URI_KEYS = ("OriginalString", "AbsoluteUri")


def _required(entry: _Fields, name: str, where: str, object_keys: tuple[str, ...]) -> str:
    value = _text(entry.get(name), object_keys)
    if value is None:
        raise InventoryError(f"{entry.at}: no {name}", where=where)
    return value


def _identity(entry: _Fields, server: str, name: str | None, where: str) -> str:
    """The Identity the Set- cmdlets take; `<server>\\<name>` when only the name is there."""
    identity = _text(entry.get("Identity"), ())
    if identity is not None:
        return identity
    if name is not None:
        return f"{server}\\{name}"
    raise InventoryError(
        f"{entry.at}: neither Identity nor Name",
        where=where,
        hint="the Set- cmdlets need the Identity, e.g. 'MB1\\owa (Default Web Site)'",
    )


def _text(value: Any, object_keys: tuple[str, ...]) -> str | None:
    """A string property that may also arrive as a serialised object; '' and null are None."""
    if isinstance(value, dict):
        fields = _Fields(value)
        for key in object_keys:
            inner = fields.get(key)
            if isinstance(inner, str | int) and not isinstance(inner, bool):
                value = inner
                break
        else:
            return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _url(value: Any) -> str | None:
    return _text(value, _URI_KEYS)


def _text_list(value: Any) -> tuple[str, ...]:
    items = (_text(item, ("Name", "Value")) for item in _as_list(value))
    return tuple(item for item in items if item is not None)


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _version(value: Any) -> str | None:
    """AdminDisplayVersion: a string, or a ServerVersion object (Major, Minor, Build, Revision)."""
    if isinstance(value, dict):
        fields = _Fields(value)
        parts = [fields.get(key) for key in ("Major", "Minor", "Build", "Revision")]
        if all(isinstance(part, int) for part in parts):
            major, minor, build, revision = parts
            return f"Version {major}.{minor} (Build {build}.{revision})"
    return _text(value, ())


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
