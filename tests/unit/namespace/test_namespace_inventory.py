"""Loading inventory files in every shape Windows PowerShell's ConvertTo-Json writes them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from casarray.errors import InventoryError
from casarray.exchange.namespace.inventory import Inventory, load_inventory, parse_inventory


def test_one_server_pipeline_shape(inventory: Callable[[str], Inventory]) -> None:
    """Unwrapped single objects, System.Uri objects and Server objects become plain records."""
    inv = inventory("one-server.json")
    assert [s.name for s in inv.servers] == ["MB1"]
    assert inv.servers[0].fqdn == "MB1.alwayshotcafe.com"
    assert inv.servers[0].version == "Version 15.2 (Build 1544.4)"
    assert [v.kind for v in inv.virtual_directories] == [
        "Owa",
        "Ecp",
        "WebServices",
        "Mapi",
        "Oab",
        "ActiveSync",
        "Autodiscover",
        "PowerShell",
    ]
    owa = inv.virtual_directories[0]
    assert owa.server == "MB1"
    assert owa.identity == "MB1\\owa (Default Web Site)"
    assert owa.internal_url == "https://mb1.alwayshotcafe.com/owa"
    assert owa.external_url is None
    assert owa.internal_authentication == ("Basic", "Fba", "Ntlm", "WindowsIntegrated")
    assert owa.raw["LogonFormat"] == "FullDomain"  # extra properties are kept
    assert len(inv.outlook_anywhere) == 1
    assert inv.outlook_anywhere[0].internal_hostname == "mb1.alwayshotcafe.com"
    assert inv.outlook_anywhere[0].ssl_offloading is True
    assert inv.client_access_services[0].autodiscover_internal_uri == (
        "https://mb1.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )


def test_bom_and_crlf_load_the_same(
    inventory: Callable[[str], Inventory], fixture_path: Callable[[str], Path]
) -> None:
    assert fixture_path("one-server-bom.json").read_bytes().startswith(b"\xef\xbb\xbf")
    plain, bom = inventory("one-server.json"), inventory("one-server-bom.json")
    assert bom.virtual_directories == plain.virtual_directories
    assert bom.outlook_anywhere == plain.outlook_anywhere


def test_utf16_with_bom_is_read(tmp_path: Path, fixture_path: Callable[[str], Path]) -> None:
    """Windows PowerShell's `>` writes UTF-16LE with a BOM."""
    path = tmp_path / "inventory.json"
    path.write_bytes(fixture_path("one-server.json").read_text(encoding="utf-8").encode("utf-16"))
    assert len(load_inventory(path).virtual_directories) == 8


def test_original_string_is_preferred_over_absolute_uri() -> None:
    text = json.dumps(
        {
            "VirtualDirectories": {
                "Type": "Owa",
                "Server": "MB1",
                "Identity": "MB1\\owa (Default Web Site)",
                "InternalUrl": {
                    "AbsoluteUri": "https://mb1.contoso.com/owa",
                    "OriginalString": "https://MB1.contoso.com/owa",
                },
                "ExternalUrl": {"AbsoluteUri": "https://mail.contoso.com/owa"},
            }
        }
    )
    vdir = parse_inventory(text).virtual_directories[0]
    assert vdir.internal_url == "https://MB1.contoso.com/owa"
    assert vdir.external_url == "https://mail.contoso.com/owa"


def test_collector_shape_strings(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory("two-servers-mb1corp.json")
    assert inv.server_names() == ("MB1", "MB2")
    assert len(inv.virtual_directories) == 16
    assert inv.virtual_directories[0].internal_url == "https://MB1.mb1corp.com/owa"


def test_windows_powershell_array_wrapper(inventory: Callable[[str], Inventory]) -> None:
    """{"value": [...], "Count": n} (System.Array with extended type data) is a list."""
    inv = inventory("eight-servers.json")
    assert len(inv.servers) == 8
    assert len(inv.outlook_anywhere) == 8
    assert len(inv.virtual_directories) == 64


def test_keys_are_case_insensitive_and_types_normalised() -> None:
    text = json.dumps(
        {
            "virtualdirectories": [
                {
                    "type": "owa",
                    "server": {"name": "MB1"},
                    "name": "owa (Default Web Site)",
                    "internalurl": "",
                    "externalurl": None,
                }
            ]
        }
    )
    vdir = parse_inventory(text).virtual_directories[0]
    assert vdir.kind == "Owa"
    assert vdir.identity == "MB1\\owa (Default Web Site)"  # derived from Server and Name
    assert vdir.internal_url is None  # '' means not set


def test_server_list_is_optional() -> None:
    inv = parse_inventory('{"VirtualDirectories": [], "OutlookAnywhere": null}')
    assert inv.servers == ()
    assert inv.outlook_anywhere == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"VirtualDirectories": [}', "invalid JSON at line 1, column 25"),
        ("", "invalid JSON at line 1, column 1"),
        ("[]", "not an inventory: an empty list"),
        (
            '[{"Server": "MB1", "Name": "owa (Default Web Site)"}, 3]',
            "not an inventory: [1] is a JSON number",
        ),
        ('[{"Server": "MB1"}]', "[0]: no Name"),
        ('"owa"', "not an inventory: the top level is a JSON string"),
        ('{"Servers": []}', "not an inventory: no VirtualDirectories list"),
        (
            '{"VirtualDirectories": [{"Type": "Rpc", "Server": "MB1", "Identity": "x"}]}',
            "VirtualDirectories[0]: unknown virtual directory Type 'Rpc'",
        ),
        ('{"VirtualDirectories": [{"Server": "MB1", "Identity": "x"}]}', "VirtualDirectories[0]: no Type"),
        ('{"VirtualDirectories": [{"Type": "Owa", "Identity": "x"}]}', "VirtualDirectories[0]: no Server"),
        ('{"VirtualDirectories": [{"Type": "Owa", "Server": "MB1"}]}', "neither Identity nor Name"),
        ('{"VirtualDirectories": ["Owa"]}', "VirtualDirectories[0]: expected an object, found a JSON string"),
        (
            '{"VirtualDirectories": [], "ClientAccessServices": [{"X": 1}]}',
            "ClientAccessServices[0]: no Name",
        ),
    ],
)
def test_bad_inventory_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, where="inv.json")
    assert caught.value.where == "inv.json"
    assert message in caught.value.what


def test_unknown_type_hint_lists_the_catalog_types() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory('{"VirtualDirectories": [{"Type": "Foo", "Server": "MB1", "Identity": "x"}]}')
    assert "Owa, Ecp, WebServices, Mapi, Oab, ActiveSync, Autodiscover, PowerShell" in caught.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "nope.json")
    assert caught.value.where.endswith("nope.json")
    assert caught.value.what == "no such file"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"VirtualDirectories": [], "x": "Müller"}'.encode("latin-1"))
    with pytest.raises(InventoryError, match="not valid UTF-8: found byte 0xfc at line 1, column 35"):
        load_inventory(path)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_an_inventory_is_read_like_the_config(tmp_path: Path, encoding: str) -> None:
    """One reader (casarray/textfile.py) for the config and the inventory: a byte-order mark says how."""
    path = tmp_path / "inventory.json"
    path.write_bytes('{"Servers": [], "VirtualDirectories": []}'.encode(encoding))
    assert load_inventory(path).virtual_directories == ()
