"""Exchange's client-access cmdlets, carried out against an organisation's settings documents.

Each server's settings are one document in the inventory shape (docs/namespace.md, DESIGN §4):
{"Servers": […], "VirtualDirectories": […], "OutlookAnywhere": […], "ClientAccessServices": […]}.
An `Organization` reads a server's document and applies one change to it (the lab's simulated servers
do both over HTTPS; a test may keep them in memory). The cmdlets here turn those documents into the
objects Exchange's cmdlets write, and their Set- parameters into changes:

    Get-/Set-<Type>VirtualDirectory   -Identity 'MB1\\owa (Default Web Site)' | -Server MB1 | (all)
    Get-/Set-OutlookAnywhere          -Identity 'MB1\\Rpc (Default Web Site)' | -Server MB1
    Get-/Set-ClientAccessService      -Identity MB1 (Set-/Get-ClientAccessServer: the same, by its
                                      Exchange 2013 name; the …Service names exist from 2016 on)
    Get-ExchangeServer                -Identity MB1

Objects carry their properties as Exchange has them (URLs as System.Uri); a Set- cmdlet takes the
object from the pipeline too, honours -WhatIf, and writes only the parameters it was given. Sources:
Microsoft's Exchange PowerShell reference for each cmdlet (learn.microsoft.com/powershell/module/exchange).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import (
    CLIENT_ACCESS_GET,
    CLIENT_ACCESS_GET_2013,
    CLIENT_ACCESS_KIND,
    CLIENT_ACCESS_SERVICES,
    CLIENT_ACCESS_SET,
    CLIENT_ACCESS_SET_2013,
    EXCHANGE_SERVER_GET,
    OUTLOOK_ANYWHERE,
    SERVERS,
    VIRTUAL_DIRECTORIES,
    client_access_cmdlets,
)
from casarray.lab.powershell.commands import Call, Command, Param
from casarray.lab.powershell.errors import CmdletError, Unsupported
from casarray.lab.powershell.host import Stream
from casarray.lab.powershell.values import Hashtable, PsObject, Uri, to_bool, to_string
from casarray.lab.settings import SETTABLE, VIRTUAL_DIRECTORY_KIND

Document = Mapping[str, Any]


class SettingsFailed(Exception):
    """A server's settings could not be read or changed: the message says which and why."""


class Organization(Protocol):
    """The Exchange servers a shell manages, each with its settings document."""

    def servers(self) -> Sequence[str]:
        """The servers' names, in a stable order."""

    def read(self, server: str) -> Document:
        """The server's settings document; SettingsFailed when it cannot be read."""

    def change(self, server: str, change: Mapping[str, Any]) -> Document:
        """Apply `change` ({"Kind", "Type"?, "Set"}); the new document, or SettingsFailed."""


@dataclass(frozen=True, slots=True)
class _Kind:
    """One kind of object: where it lives in the document and how it is changed."""

    name: str  # VirtualDirectory, OutlookAnywhere, ClientAccessService, ExchangeServer
    section: str  # the document's list
    type_name: str  # the .NET type Exchange's cmdlet writes
    settings: tuple[str, ...]  # the Set- cmdlet's parameters
    inventory_type: str | None = None  # a virtual directory's Type


def _vdir_kind(service: catalog.Service) -> _Kind:
    assert service.inventory_type is not None
    return _Kind(
        VIRTUAL_DIRECTORY_KIND,
        VIRTUAL_DIRECTORIES,
        f"Microsoft.Exchange.Data.Directory.SystemConfiguration.AD{service.inventory_type}VirtualDirectory",
        SETTABLE[VIRTUAL_DIRECTORY_KIND],
        service.inventory_type,
    )


_OUTLOOK_ANYWHERE_KIND = _Kind(
    OUTLOOK_ANYWHERE,
    OUTLOOK_ANYWHERE,
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADRpcHttpVirtualDirectory",
    SETTABLE[OUTLOOK_ANYWHERE],
)
_CLIENT_ACCESS_KIND = _Kind(
    CLIENT_ACCESS_KIND,
    CLIENT_ACCESS_SERVICES,
    "Microsoft.Exchange.Data.Directory.Management.ClientAccessServer",
    SETTABLE[CLIENT_ACCESS_KIND],
)
_SERVER_KIND = _Kind(
    "ExchangeServer", SERVERS, "Microsoft.Exchange.Data.Directory.Management.ExchangeServer", ()
)


class ExchangeShell:
    """The Exchange cmdlets of one organisation, as the Exchange Management Shell offers them."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self._commands: dict[str, Command] = {}
        self._client_access_service: bool | None = None
        for service in catalog.iter_services():
            if service.inventory_type is not None:
                self._add_pair(service.get_cmdlet, service.set_cmdlet, _vdir_kind(service), server_param=True)
        rpc = catalog.get("rpc")
        self._add_pair(rpc.get_cmdlet, rpc.set_cmdlet, _OUTLOOK_ANYWHERE_KIND, server_param=True)
        self._add_pair(CLIENT_ACCESS_GET, CLIENT_ACCESS_SET, _CLIENT_ACCESS_KIND, server_param=False)
        self._add_pair(
            CLIENT_ACCESS_GET_2013, CLIENT_ACCESS_SET_2013, _CLIENT_ACCESS_KIND, server_param=False
        )
        self._commands[EXCHANGE_SERVER_GET.lower()] = Command(
            EXCHANGE_SERVER_GET, (Param("Identity", position=0),), self._getter(_SERVER_KIND), remote=True
        )

    def __call__(self, name: str) -> Command | None:
        """The cmdlet called `name`, if this shell has it."""
        command = self._commands.get(name.lower())
        if command is None:
            return None
        if command.name in (CLIENT_ACCESS_GET, CLIENT_ACCESS_SET) and not self.has_client_access_service():
            return None
        return command

    def has_client_access_service(self) -> bool:
        """Exchange 2016 renamed Get-/Set-ClientAccessServer to …Service and kept the old names; a shell
        of an organisation of only Exchange 2013 servers has the old names alone."""
        if self._client_access_service is None:
            versions = [
                to_string(entry.get("AdminDisplayVersion")) or None
                for server in self.organization.servers()
                for entry in _entries(self._read(server), SERVERS)
            ]
            self._client_access_service = not versions or any(
                client_access_cmdlets(v)[0] == CLIENT_ACCESS_GET for v in versions
            )
        return self._client_access_service

    def _add_pair(self, get: str, set_: str, kind: _Kind, *, server_param: bool) -> None:
        get_params = [Param("Identity", position=0)]
        if server_param:
            get_params += [Param("Server"), Param("ADPropertiesOnly", switch=True)]
        self._commands[get.lower()] = Command(get, tuple(get_params), self._getter(kind), remote=True)
        set_params = [Param("Identity", position=0, from_pipeline=True)]
        set_params += [Param(name, switch=False) for name in kind.settings]
        self._commands[set_.lower()] = Command(
            set_, tuple(set_params), self._setter(kind), should_process=True, remote=True
        )

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, server: str) -> Document:
        try:
            return self.organization.read(server)
        except SettingsFailed as exc:
            raise CmdletError(str(exc), category="ReadError") from None

    def _server(self, name: str) -> str | None:
        """The organisation's server called `name` (its name or FQDN, any case)."""
        wanted = name.lower()
        for server in self.organization.servers():
            if server.lower() == wanted or wanted.startswith(server.lower() + "."):
                return server
        return None

    def _getter(self, kind: _Kind) -> Callable[[Call], list[Any]]:
        def run(call: Call) -> list[Any]:
            return self._find(kind, call.get("Identity"), call.get("Server"))

        return run

    def _find(self, kind: _Kind, identity: Any, server: Any) -> list[PsObject]:
        if identity is not None and server is not None:
            raise CmdletError("Parameter set cannot be resolved using the specified named parameters.")
        if server is not None:
            name = self._server(to_string(server))
            if name is None:
                raise CmdletError(_not_found(to_string(server)), category="ObjectNotFound")
            return self._objects(kind, name)
        if identity is None:
            return [obj for name in self.organization.servers() for obj in self._objects(kind, name)]
        text = to_string(identity.properties.get("Identity") if isinstance(identity, PsObject) else identity)
        found = [
            obj
            for name in self._servers_of(kind, text)
            for obj in self._objects(kind, name)
            if _is(obj, text)
        ]
        if not found:
            raise CmdletError(_not_found(text), category="ObjectNotFound")
        return found

    def _servers_of(self, kind: _Kind, identity: str) -> list[str]:
        """The servers an identity can be on: 'MB1\\owa (…)' on MB1; 'MB1' (a server's own object) on
        MB1; a bare virtual directory name on any."""
        head, backslash, _ = identity.partition("\\")
        if backslash:
            server = self._server(head)
            return [server] if server is not None else []
        if kind.section in (SERVERS, CLIENT_ACCESS_SERVICES):
            server = self._server(identity)
            return [server] if server is not None else []
        return list(self.organization.servers())

    def _objects(self, kind: _Kind, server: str) -> list[PsObject]:
        document = self._read(server)
        return [
            _object(kind, entry, server)
            for entry in _entries(document, kind.section)
            if kind.inventory_type is None
            or to_string(entry.get("Type")).lower() == kind.inventory_type.lower()
        ]

    # -- changing ---------------------------------------------------------------------------------

    def _setter(self, kind: _Kind) -> Callable[[Call], list[Any]]:
        def run(call: Call) -> list[Any]:
            if to_bool(call.get("Confirm", False)):
                raise Unsupported(f"{call.name} -Confirm (there is no one to ask; pass -Confirm:$false)")
            changes = {name: _setting(call.args[name]) for name in kind.settings if call.has(name)}
            targets: list[Any] = list(call.input) if call.input is not None else [call.get("Identity")]
            if targets == [None]:
                raise CmdletError(
                    "Cannot process command because of one or more missing mandatory parameters: Identity."
                )
            for target in targets:
                for obj in self._find(kind, target, None):
                    self._apply(call, kind, obj, changes)
            return []

        return run

    def _apply(self, call: Call, kind: _Kind, obj: PsObject, changes: Mapping[str, Any]) -> None:
        identity = obj.text
        host = call.session.host
        if not changes:
            host.write(
                Stream.WARNING,
                f"WARNING: The command completed successfully but no settings of '{identity}' have been modified.",
            )
            return
        if to_bool(call.get("WhatIf", False)):
            host.write(
                Stream.HOST, f'What if: Performing the operation "{call.name}" on target "{identity}".'
            )
            return
        change: dict[str, Any] = {"Kind": kind.name}
        if kind.inventory_type is not None:
            change["Type"] = kind.inventory_type
        change["Set"] = dict(changes)
        server = to_string(obj.properties.get("Server")) or identity.partition("\\")[0]
        try:
            self.organization.change(self._server(server) or server, change)
        except SettingsFailed as exc:
            raise CmdletError(str(exc), category="WriteError") from None


def _entries(document: Document, section: str) -> list[Mapping[str, Any]]:
    """A document's list, read as the inventory loader reads it (any case; a lone object is a list)."""
    value = next((v for k, v in document.items() if k.lower() == section.lower()), None)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, Mapping)]


def _object(kind: _Kind, entry: Mapping[str, Any], server: str) -> PsObject:
    properties = Hashtable()
    for key, value in entry.items():
        properties.set(key, _value(key, value))
    if kind.section == SERVERS:
        identity = to_string(entry.get("Name")) or server
    elif kind.section == CLIENT_ACCESS_SERVICES:
        identity = to_string(entry.get("Identity") or entry.get("Name")) or server
    else:
        identity = to_string(entry.get("Identity")) or f"{server}\\{to_string(entry.get('Name'))}"
    properties.set("Identity", identity)
    if not properties.contains("Server") and kind.section != SERVERS:
        properties.set("Server", server)
    return PsObject(kind.type_name, properties, identity)


def _value(key: str, value: Any) -> Any:
    """A document's value as the cmdlet's property: URLs are System.Uri, lists stay lists."""
    if isinstance(value, str) and key.lower().endswith(("url", "uri")):
        return Uri(value)
    if isinstance(value, list):
        return [_value(key, item) for item in value]
    if isinstance(value, Mapping):
        return Hashtable(value.items())
    return value


def _is(obj: PsObject, identity: str) -> bool:
    """Does `identity` name this object: its Identity, its Name, or 'server\\name'?"""
    wanted = identity.lower()
    own = obj.text.lower()
    name = to_string(obj.properties.get("Name")).lower()
    if wanted in (own, name):
        return True
    return "\\" not in wanted and own.endswith("\\" + wanted)


def _setting(value: Any) -> Any:
    """A Set- parameter's value as the settings document takes it (JSON); the organisation checks it
    as Exchange would (an absolute http(s) URL, a host name, a boolean) and refuses what is wrong."""
    if isinstance(value, Uri):
        return value.original
    if isinstance(value, list):
        return [_setting(item) for item in value]
    if isinstance(value, (PsObject, Hashtable)):
        return to_string(value)
    return value


def _not_found(identity: str) -> str:
    return f"The operation couldn't be performed because object '{identity}' couldn't be found."
