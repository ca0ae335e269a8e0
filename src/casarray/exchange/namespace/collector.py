"""The collector: the read-only PowerShell that writes an inventory file (format: docs/namespace.md).

The script text lives next to this module as collector.ps1; the cmdlet names and inventory Types are
filled in from the service catalog, the only place they are spelt, so the script and the loader can
never disagree about which virtual directories exist.
"""

from __future__ import annotations

from importlib import resources

from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import (
    CLIENT_ACCESS_GET,
    CLIENT_ACCESS_GET_2013,
    EXCHANGE_SERVER_GET,
)
from casarray.exchange.namespace.powershell import ps_string

_TEMPLATE = "collector.ps1"


def collector_script() -> str:
    """The collector script, ready to run in the Exchange Management Shell."""
    template = resources.files(__package__).joinpath(_TEMPLATE).read_text(encoding="utf-8")
    width = max(len(t) for t in catalog.BY_INVENTORY_TYPE) + 2
    cmdlets = "\n".join(
        f"    {ps_string(kind).ljust(width)} = {ps_string(service.get_cmdlet)}"
        for kind, service in catalog.BY_INVENTORY_TYPE.items()
    )
    fills = {
        "__VIRTUAL_DIRECTORY_CMDLETS__": cmdlets,
        "__OUTLOOK_ANYWHERE_CMDLET__": catalog.get("rpc").get_cmdlet,
        "__CLIENT_ACCESS_CMDLET_2013__": CLIENT_ACCESS_GET_2013,
        "__CLIENT_ACCESS_CMDLET__": CLIENT_ACCESS_GET,
        "__EXCHANGE_SERVER_CMDLET__": EXCHANGE_SERVER_GET,
    }
    text = template
    for token, value in fills.items():
        text = text.replace(token, value)
    return text
