"""The simulated server's client-access settings (lab/settings.py): as installed, as an inventory the
namespace verbs read, and changed as the Set- cmdlets change them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import parse_inventory
from casarray.exchange.namespace.plan import Action, Targets, make_plan
from casarray.exchange.namespace.verify import verify
from casarray.lab.settings import DEFAULT_VERSION, ServerSettings, SettingsError

FQDN = "mb1.alwayshotcafe.com"
NAMESPACE = "outlook.alwayshotcafe.com"


def installed(name: str = "MB1") -> ServerSettings:
    return ServerSettings.installed(name, f"{name.lower()}.alwayshotcafe.com")


def organisation(*servers: ServerSettings) -> str:
    """The inventory of several servers: each server's document, list by list."""
    documents = [s.document() for s in servers]
    return json.dumps({key: [entry for d in documents for entry in d[key]] for key in documents[0]})


def test_installed_is_what_setup_leaves() -> None:
    settings = installed()
    doc = settings.document()
    assert doc["Servers"] == [{"Name": "MB1", "Fqdn": FQDN, "AdminDisplayVersion": DEFAULT_VERSION}]
    urls = {v["Type"]: (v["InternalUrl"], v["ExternalUrl"]) for v in doc["VirtualDirectories"]}
    assert urls == {
        "Owa": (f"https://{FQDN}/owa", None),
        "Ecp": (f"https://{FQDN}/ecp", None),
        "WebServices": (f"https://{FQDN}/EWS/Exchange.asmx", None),
        "Mapi": (f"https://{FQDN}/mapi", None),
        "Oab": (f"https://{FQDN}/OAB", None),
        "ActiveSync": (f"https://{FQDN}/Microsoft-Server-ActiveSync", None),
        "Autodiscover": (None, None),
        "PowerShell": (f"http://{FQDN}/PowerShell", None),
    }
    owa = doc["VirtualDirectories"][0]
    assert (owa["Server"], owa["Name"], owa["Identity"]) == (
        "MB1",
        "owa (Default Web Site)",
        "MB1\\owa (Default Web Site)",
    )
    [oa] = doc["OutlookAnywhere"]
    assert oa["Identity"] == "MB1\\Rpc (Default Web Site)"
    assert (oa["InternalHostname"], oa["ExternalHostname"]) == (FQDN, None)
    assert (oa["InternalClientsRequireSsl"], oa["ExternalClientsRequireSsl"], oa["SSLOffloading"]) == (
        False,
        False,
        True,
    )
    assert doc["ClientAccessServices"] == [
        {
            "Name": "MB1",
            "Identity": "MB1",
            "AutoDiscoverServiceInternalUri": f"https://{FQDN}/Autodiscover/Autodiscover.xml",
        }
    ]


def test_the_document_is_an_inventory_the_namespace_verbs_read() -> None:
    text = organisation(installed("MB1"), installed("MB2"))
    inventory = parse_inventory(text, where="sims")
    assert inventory.server_names() == ("MB1", "MB2")
    assert len(inventory.virtual_directories) == 2 * len(catalog.BY_INVENTORY_TYPE)
    assert inventory.version_of("MB2") == DEFAULT_VERSION
    plan = make_plan(inventory, Targets.build(NAMESPACE))
    changed = {(i.server, i.kind, i.property) for i in plan.changes}
    assert ("MB1", "Owa", "InternalUrl") in changed
    assert ("MB2", "OutlookAnywhere", "ExternalHostname") in changed
    assert ("MB1", "ClientAccessService", "AutoDiscoverServiceInternalUri") in changed
    assert not verify(inventory, Targets.build(NAMESPACE)).ok


def test_applying_every_plan_change_makes_verify_pass() -> None:
    """Each row of the plan is one POST /_sim/settings: after all of them the org is on the namespace."""
    servers = {s.name: s for s in (installed("MB1"), installed("MB2"))}
    targets = Targets.build(NAMESPACE)
    plan = make_plan(parse_inventory(organisation(*servers.values())), targets)
    for item in plan.changes:
        request: dict[str, Any] = {
            "Kind": item.kind,
            "Identity": item.identity,
            "Set": {item.property: item.target},
        }
        if item.kind not in ("OutlookAnywhere", "ClientAccessService"):
            request = {**request, "Kind": "VirtualDirectory", "Type": item.kind}
        servers[item.server], _ = servers[item.server].apply(request)
    after = parse_inventory(organisation(*servers.values()))
    assert verify(after, targets).ok
    assert all(i.action is Action.OK for i in make_plan(after, targets).items)


def test_apply_returns_new_settings_and_what_changed() -> None:
    before = installed()
    after, changes = before.apply(
        {"kind": "virtualdirectory", "type": "owa", "Set": {"internalurl": f"https://{NAMESPACE}/owa"}}
    )
    assert before.vdir("Owa").internal_url == f"https://{FQDN}/owa"  # immutable: nothing changed in place
    assert after.vdir("Owa").internal_url == f"https://{NAMESPACE}/owa"
    [change] = changes
    assert (change.cmdlet, change.identity, change.property) == (
        "Set-OwaVirtualDirectory",
        "MB1\\owa (Default Web Site)",
        "InternalUrl",
    )
    assert (change.old, change.new) == (f"https://{FQDN}/owa", f"https://{NAMESPACE}/owa")

    after, _ = after.apply(
        {
            "Kind": "OutlookAnywhere",
            "Set": {
                "ExternalHostname": NAMESPACE,
                "ExternalClientsRequireSsl": True,
                "ExternalClientAuthenticationMethod": "ntlm",
                "IISAuthenticationMethods": "Negotiate, NTLM",
            },
        }
    )
    oa = after.outlook_anywhere
    assert (oa.external_hostname, oa.external_clients_require_ssl) == (NAMESPACE, True)
    assert oa.external_client_authentication_method == "Ntlm"
    assert oa.iis_authentication_methods == ("Negotiate", "Ntlm")
    after, [scp] = after.apply(
        {"Kind": "ClientAccessService", "Identity": "mb1", "Set": {"AutoDiscoverServiceInternalUri": None}}
    )
    assert after.autodiscover_internal_uri is None
    assert scp.cmdlet == "Set-ClientAccessService"
    after, _ = after.apply({"Kind": "VirtualDirectory", "Type": "Ecp", "Set": {"ExternalUrl": ""}})
    assert after.vdir("Ecp").external_url is None  # an empty string clears, as in PowerShell


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([], "expected a JSON object"),
        ({"Set": {"InternalUrl": None}}, "Kind: expected one of VirtualDirectory, OutlookAnywhere"),
        ({"Kind": "Mailbox", "Set": {"X": 1}}, "Kind: expected one of"),
        ({"Kind": "VirtualDirectory", "Set": {"InternalUrl": None}}, "Type: expected one of Owa, Ecp"),
        ({"Kind": "VirtualDirectory", "Type": "Rpc", "Set": {"InternalUrl": None}}, "found 'Rpc'"),
        (
            {"Kind": "OutlookAnywhere", "Type": "Owa", "Set": {"SSLOffloading": True}},
            "only a VirtualDirectory",
        ),
        ({"Kind": "VirtualDirectory", "Type": "Owa"}, "Set: expected a non-empty JSON object"),
        ({"Kind": "VirtualDirectory", "Type": "Owa", "Set": {}}, "Set: expected a non-empty JSON object"),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"Url": "https://a.b/owa"}},
            "no settable property 'Url'",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalAuthenticationMethods": ["Basic"]}},
            "settable: InternalUrl, ExternalUrl",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": 5}},
            "expected a URL string or null",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "/owa"}},
            "not an absolute http(s) URL",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "ftp://a.b/"}},
            "not an absolute",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "https://a.b:x/"}},
            "not a valid URL",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": None, "internalurl": None}},
            "InternalUrl is given twice",
        ),
        ({"Kind": "OutlookAnywhere", "Set": {"ExternalClientsRequireSsl": "true"}}, "expected true or false"),
        ({"Kind": "OutlookAnywhere", "Set": {"ExternalHostname": "bad_name.com"}}, "not a valid DNS name"),
        ({"Kind": "OutlookAnywhere", "Set": {"ExternalHostname": 7}}, "expected a host name string"),
        (
            {"Kind": "OutlookAnywhere", "Set": {"InternalClientAuthenticationMethod": "Kerberos"}},
            "found 'Kerberos'",
        ),
        ({"Kind": "OutlookAnywhere", "Set": {"IISAuthenticationMethods": []}}, "non-empty list"),
        ({"Kind": "ClientAccessService", "Set": {"AutoDiscoverServiceInternalUri": "x"}}, "not an absolute"),
        (
            {
                "Kind": "VirtualDirectory",
                "Type": "Owa",
                "Identity": "MB2\\owa (Default Web Site)",
                "Set": {"ExternalUrl": None},
            },
            "is not 'MB1\\\\owa (Default Web Site)' on this server",
        ),
        (
            {"Kind": "OutlookAnywhere", "Server": "MB1", "Set": {"SSLOffloading": True}},
            "unknown key 'Server'",
        ),
    ],
)
def test_a_bad_request_names_what_is_wrong(request_: Any, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        installed().apply(request_)
    assert message in str(caught.value)


def test_identity_is_matched_case_insensitively_and_names_this_server() -> None:
    settings = installed()
    for identity in ("MB1\\OWA (Default Web Site)", "mb1\\owa (default web site)"):
        settings.apply(
            {"Kind": "VirtualDirectory", "Type": "Owa", "Identity": identity, "Set": {"ExternalUrl": None}}
        )
    settings.apply(
        {
            "Kind": "OutlookAnywhere",
            "Identity": "MB1\\Rpc (Default Web Site)",
            "Set": {"SSLOffloading": False},
        }
    )
    with pytest.raises(SettingsError):
        settings.apply(
            {
                "Kind": "OutlookAnywhere",
                "Identity": "MB1\\owa (Default Web Site)",
                "Set": {"SSLOffloading": False},
            }
        )


def test_from_inventory_takes_this_servers_entries_and_keeps_the_rest_as_installed() -> None:
    mb1, _ = installed("MB1").apply(
        {
            "Kind": "VirtualDirectory",
            "Type": "WebServices",
            "Set": {"ExternalUrl": f"https://{NAMESPACE}/EWS/Exchange.asmx"},
        }
    )
    mb1, _ = mb1.apply(
        {"Kind": "OutlookAnywhere", "Set": {"ExternalHostname": NAMESPACE, "ExternalClientsRequireSsl": True}}
    )
    text = organisation(mb1, installed("MB2"))
    loaded = ServerSettings.from_inventory(parse_inventory(text, where="f.json"), "mb1", FQDN)
    assert loaded == mb1
    partial = json.dumps(
        {
            "VirtualDirectories": [
                {
                    "Type": "Owa",
                    "Server": "MB1",
                    "Name": "owa (Default Web Site)",
                    "InternalUrl": "https://x.example/owa",
                }
            ]
        }
    )
    loaded = ServerSettings.from_inventory(parse_inventory(partial), "MB1", FQDN)
    assert loaded.vdir("Owa").internal_url == "https://x.example/owa"
    assert loaded.vdir("Ecp") == installed().vdir("Ecp")
    assert loaded.outlook_anywhere == installed().outlook_anywhere
    with pytest.raises(
        SettingsError, match=r"f\.json: no server 'MB3' in the settings file \(it has MB1, MB2\)"
    ):
        ServerSettings.from_inventory(parse_inventory(text, where="f.json"), "MB3", "mb3.alwayshotcafe.com")
    bad = json.dumps(
        {
            "VirtualDirectories": [
                {"Type": "Owa", "Server": "MB1", "Name": "owa (Default Web Site)", "InternalUrl": "owa"}
            ]
        }
    )
    with pytest.raises(SettingsError, match="server MB1: InternalUrl: 'owa' is not an absolute"):
        ServerSettings.from_inventory(parse_inventory(bad), "MB1", FQDN)
