"""An organisation kept in memory for the PowerShell interpreter's unit tests: each server's settings
are the simulated server's own (casarray.lab.settings.ServerSettings), read and changed as the sims'
GET/POST /_sim/settings do, without the sockets."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from casarray.exchange.namespace.inventory import Inventory
from casarray.lab.pki import server_fqdn
from casarray.lab.powershell import ExchangeShell, Interpreter, MemoryHost, Outcome, SettingsFailed, parse
from casarray.lab.settings import ServerSettings, SettingsError

CLOCK = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
DOMAIN = "alwayshotcafe.com"


class MemoryOrganization:
    def __init__(self, settings: Sequence[ServerSettings]) -> None:
        self.settings = {s.name: s for s in settings}
        self.changes: list[tuple[str, Mapping[str, Any]]] = []
        self.reads = 0

    @classmethod
    def installed(cls, *names: str, version: str | None = None) -> MemoryOrganization:
        servers = [ServerSettings.installed(n, server_fqdn(n, DOMAIN)) for n in names]
        if version is not None:
            servers = [ServerSettings.installed(n, server_fqdn(n, DOMAIN), version) for n in names]
        return cls(servers)

    @classmethod
    def from_inventory(cls, inventory: Inventory) -> MemoryOrganization:
        names = [s.name for s in inventory.servers]
        return cls([ServerSettings.from_inventory(inventory, n, server_fqdn(n, DOMAIN)) for n in names])

    def servers(self) -> Sequence[str]:
        return list(self.settings)

    def read(self, server: str) -> Mapping[str, Any]:
        self.reads += 1
        return self.settings[server].document()

    def change(self, server: str, change: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            settings, _ = self.settings[server].apply(change)
        except SettingsError as exc:
            raise SettingsFailed(f"{server}: {exc}") from None
        self.settings[server] = settings
        self.changes.append((server, change))
        return settings.document()

    def documents(self) -> dict[str, Any]:
        return {name: s.document() for name, s in self.settings.items()}


def run(
    text: str,
    organization: MemoryOrganization | None = None,
    arguments: Mapping[str, Any] | None = None,
    *,
    name: str = "script.ps1",
    script_root: str = "/scripts",
) -> tuple[MemoryHost, Outcome]:
    """Run `text` in a fresh MemoryHost against `organization` (none: no Exchange cmdlets)."""
    host = MemoryHost(CLOCK, script_root=script_root)
    shell = ExchangeShell(organization) if organization is not None else None
    outcome = Interpreter(parse(text, name), host, shell).run(arguments or {})
    return host, outcome


def inventory_json(host: MemoryHost, path: str) -> str:
    return host.files[path].decode("utf-8-sig")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
