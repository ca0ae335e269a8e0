"""The collector script: read-only, every catalog vdir type, JSON that the loader reads back."""

from __future__ import annotations

import re

from casarray.exchange import catalog
from casarray.exchange.namespace import inventory
from casarray.exchange.namespace.collector import collector_script

SCRIPT = collector_script()


def test_every_template_token_is_filled() -> None:
    assert "__" not in SCRIPT.replace("$__", "")


def test_reads_every_catalog_virtual_directory_type() -> None:
    for kind, service in catalog.BY_INVENTORY_TYPE.items():
        assert re.search(rf"'{kind}'\s+= '{service.get_cmdlet}'", SCRIPT), kind
    assert f"{catalog.get('rpc').get_cmdlet} -Server $name" in SCRIPT
    assert f"'{inventory.CLIENT_ACCESS_GET}'" in SCRIPT
    assert f"{inventory.EXCHANGE_SERVER_GET} -Identity $name -ErrorAction Stop" in SCRIPT


def test_only_reads() -> None:
    """Every cmdlet it calls is a Get- or a local PowerShell utility; nothing Set-/New-/Remove-s Exchange."""
    allowed = {
        "New-Object",
        "Where-Object",
        "ForEach-Object",
        "Write-Host",
        "Write-Warning",
        "ConvertTo-Json",
    }
    body = SCRIPT[SCRIPT.index("\n#>\n") :]  # after the help block
    code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    verbs = set(re.findall(r"\b([A-Z][a-z]+-[A-Z][A-Za-z]+)\b", code))
    functions = set(re.findall(r"function ([A-Za-z]+-[A-Za-z]+)", code))
    assert {v for v in verbs - allowed - functions if not v.startswith("Get-")} == set()


def test_records_the_inventory_keys_the_loader_reads() -> None:
    for key in (
        inventory.SERVERS,
        inventory.VIRTUAL_DIRECTORIES,
        inventory.OUTLOOK_ANYWHERE,
        inventory.CLIENT_ACCESS_SERVICES,
    ):
        assert re.search(rf"^    {key}\s+= @\(\$", SCRIPT, flags=re.M), key
    for prop in (
        "Server",
        "Name",
        "Identity",
        "InternalUrl",
        "ExternalUrl",
        "InternalAuthenticationMethods",
        "ExternalAuthenticationMethods",
        "InternalHostname",
        "ExternalHostname",
        "SSLOffloading",
        "ExternalClientsRequireSsl",
        inventory.SCP_PROPERTY,
        "Fqdn",
        "AdminDisplayVersion",
    ):
        assert re.search(rf"^\s+{prop}\s+= ", SCRIPT, flags=re.M), prop


def test_json_is_deep_utf8_and_arrays_stay_arrays() -> None:
    depth = re.search(r"ConvertTo-Json -InputObject \$inventory -Depth (\d+)", SCRIPT)
    assert depth is not None
    assert int(depth.group(1)) >= 6
    assert (
        "[System.IO.File]::WriteAllText($fullPath, $json, (New-Object System.Text.UTF8Encoding($false)))"
        in SCRIPT
    )
    assert "@(ConvertTo-CasList $vd.InternalAuthenticationMethods)" in SCRIPT
    assert "Servers              = @($servers.ToArray())" in SCRIPT


def test_stops_on_errors() -> None:
    assert "$ErrorActionPreference = 'Stop'" in SCRIPT
    assert "$readOptions = @{ ErrorAction = 'Stop' }" in SCRIPT
    assert "-Server $name @readOptions" in SCRIPT
