"""The plan: host-only URL rewriting, documented defaults for unset URLs, Autodiscover and the SCP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from casarray.errors import InventoryError
from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import Inventory, parse_inventory
from casarray.exchange.namespace.names import host_name
from casarray.exchange.namespace.plan import (
    Action,
    Plan,
    PlanItem,
    Targets,
    make_plan,
    retarget_url,
    same_url,
)

NS = "outlook.alwayshotcafe.com"


def _find(plan: Plan, server: str, kind: str, prop: str) -> PlanItem:
    (item,) = [i for i in plan.items if (i.server, i.kind, i.property) == (server, kind, prop)]
    return item


def test_fresh_server_gets_every_url_on_the_namespace(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    owa = _find(plan, "MB1", "Owa", "InternalUrl")
    assert (owa.current, owa.target, owa.action) == (
        "https://mb1.alwayshotcafe.com/owa",
        f"https://{NS}/owa",
        Action.CHANGE,
    )
    # An unset ExternalUrl gets Microsoft's documented path on the namespace.
    ews = _find(plan, "MB1", "WebServices", "ExternalUrl")
    assert (ews.current, ews.target) == (None, f"https://{NS}/EWS/Exchange.asmx")
    assert (
        _find(plan, "MB1", "ActiveSync", "ExternalUrl").target == f"https://{NS}/Microsoft-Server-ActiveSync"
    )
    assert _find(plan, "MB1", "Oab", "ExternalUrl").target == f"https://{NS}/OAB"
    assert _find(plan, "MB1", "Mapi", "ExternalUrl").target == f"https://{NS}/mapi"


def test_powershell_stays_on_the_servers_unless_asked(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    item = _find(plan, "MB1", "PowerShell", "InternalUrl")
    assert (item.current, item.target, item.action) == (
        "http://mb1.alwayshotcafe.com/powershell",
        None,
        Action.OK,
    )
    moved = make_plan(inventory("one-server.json"), Targets.build(NS, powershell=True))
    # Moved, it goes where the VIP serves it: https, like every other vdir.
    assert _find(moved, "MB1", "PowerShell", "InternalUrl").target == f"https://{NS}/powershell"
    assert _find(moved, "MB1", "PowerShell", "ExternalUrl").target == f"https://{NS}/PowerShell"


def test_domain_containing_the_server_name_is_kept(inventory: Callable[[str], Inventory]) -> None:
    """`-replace 'MB1','outlook'` would give outlook.outlookcorp.com; only the host label changes."""
    plan = make_plan(inventory("two-servers-mb1corp.json"), Targets.build("outlook.mb1corp.com"))
    assert _find(plan, "MB1", "Owa", "InternalUrl").current == "https://MB1.mb1corp.com/owa"
    for item in plan.items:
        if item.target is not None:
            assert "outlookcorp" not in item.target
            assert "outlook.mb1corp.com" in item.target
    assert _find(plan, "MB1", "Owa", "InternalUrl").target == "https://outlook.mb1corp.com/owa"


def test_null_external_urls_are_planned_not_skipped(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("two-servers-mb1corp.json"), Targets.build("outlook.mb1corp.com"))
    nulls = [
        i
        for i in plan.items
        if i.server == "MB2" and i.property == "ExternalUrl" and i.kind not in ("Autodiscover", "PowerShell")
    ]
    assert len(nulls) == 6
    assert all(i.current is None and i.action is Action.CHANGE for i in nulls)


def test_autodiscover_vdir_is_left_alone_and_scp_is_set(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    for prop in ("InternalUrl", "ExternalUrl"):
        item = _find(plan, "MB1", "Autodiscover", prop)
        assert (item.target, item.action) == (None, Action.OK)
        assert "SCP" in item.note
    scp = _find(plan, "MB1", "ClientAccessService", "AutoDiscoverServiceInternalUri")
    assert scp.target == f"https://{NS}/Autodiscover/Autodiscover.xml"
    assert scp.action is Action.CHANGE


def test_scp_uses_the_autodiscover_name(inventory: Callable[[str], Inventory]) -> None:
    targets = Targets.build(NS, autodiscover="autodiscover.alwayshotcafe.com")
    plan = make_plan(inventory("one-server.json"), targets)
    scp = _find(plan, "MB1", "ClientAccessService", "AutoDiscoverServiceInternalUri")
    assert scp.target == "https://autodiscover.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    # The other URLs stay on the namespace.
    assert _find(plan, "MB1", "Owa", "InternalUrl").target == f"https://{NS}/owa"


def test_outlook_anywhere_uses_host_names(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    internal = _find(plan, "MB1", "OutlookAnywhere", "InternalHostname")
    external = _find(plan, "MB1", "OutlookAnywhere", "ExternalHostname")
    assert (internal.current, internal.target) == ("mb1.alwayshotcafe.com", NS)
    assert (external.current, external.target) == (None, NS)


def test_unified_inventory_needs_no_change(inventory: Callable[[str], Inventory]) -> None:
    """Host case differs in places (Outlook.AlwaysHotCafe.com, OUTLOOK.…): still ok."""
    plan = make_plan(inventory("unified.json"), Targets.build(NS))
    assert plan.changes == ()
    assert _find(plan, "MB2", "Ecp", "InternalUrl").current == "https://Outlook.AlwaysHotCafe.com/ecp"


def test_owa_and_ecp_get_the_same_host(inventory: Callable[[str], Inventory]) -> None:
    targets = Targets.build(internal_namespace="mail.contoso.com", external_namespace="webmail.contoso.com")
    plan = make_plan(inventory("eight-servers.json"), targets)
    for server in ("EX01", "EX05", "EX08"):
        for prop in ("InternalUrl", "ExternalUrl"):
            owa, ecp = _find(plan, server, "Owa", prop), _find(plan, server, "Ecp", prop)
            assert owa.target is not None
            assert ecp.target is not None
            assert owa.target.rsplit("/", 1)[0] == ecp.target.rsplit("/", 1)[0]


def test_split_namespaces(inventory: Callable[[str], Inventory]) -> None:
    targets = Targets.build(internal_namespace="mail.corp.contoso.com", external_namespace="mail.contoso.com")
    plan = make_plan(inventory("eight-servers.json"), targets)
    assert _find(plan, "EX04", "Owa", "InternalUrl").target == "https://mail.corp.contoso.com/owa"
    assert _find(plan, "EX04", "Owa", "ExternalUrl").target == "https://mail.contoso.com/owa"
    assert _find(plan, "EX04", "OutlookAnywhere", "ExternalHostname").target == "mail.contoso.com"
    scp = _find(plan, "EX04", "ClientAccessService", "AutoDiscoverServiceInternalUri")
    assert scp.target == "https://mail.corp.contoso.com/Autodiscover/Autodiscover.xml"


def test_internal_only_and_external_only(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory("eight-servers.json")
    internal = make_plan(inv, Targets.build("mail.contoso.com", external=False))
    assert {i.property for i in internal.items} == {
        "InternalUrl",
        "InternalHostname",
        "AutoDiscoverServiceInternalUri",
    }
    external = make_plan(inv, Targets.build("mail.contoso.com", internal=False))
    assert {i.property for i in external.items} == {"ExternalUrl", "ExternalHostname"}


def test_eight_servers(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("eight-servers.json"), Targets.build("mail.contoso.com"))
    assert [s for s in dict.fromkeys(i.server for i in plan.items)] == [f"EX{n:02d}" for n in range(1, 9)]
    # Per server: 8 vdirs x 2 URLs, 2 Outlook Anywhere host names, 1 SCP.
    assert len(plan.items) == 8 * 19
    changed_servers = {i.server for i in plan.changes}
    assert changed_servers == {"EX04", "EX05", "EX06", "EX07", "EX08"}
    assert _find(plan, "EX05", "Owa", "ExternalUrl").current == "https://webmail.contoso.com/owa"


def test_plan_rows_follow_the_catalog_order(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    kinds = list(dict.fromkeys(i.kind for i in plan.items))
    vdir_types = [s.inventory_type for s in catalog.iter_services() if s.inventory_type]
    assert kinds == [*vdir_types, "OutlookAnywhere", "ClientAccessService"]


def test_json_row_has_exactly_the_contract_keys(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory("one-server.json"), Targets.build(NS))
    for item in plan.items:
        row = item.as_json()
        assert list(row) == ["server", "kind", "identity", "property", "current", "target", "action"]
        assert row["action"] in ("change", "ok")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (None, "https://ns.contoso.com/owa"),
        ("https://mb1.contoso.com/owa", "https://ns.contoso.com/owa"),
        ("https://mb1.contoso.com:444/owa", "https://ns.contoso.com/owa"),  # the VIP's port, not the server's
        ("https://mb1.contoso.com/OWA/?realm=x", "https://ns.contoso.com/OWA/?realm=x"),  # path, query kept
        ("http://mb1.contoso.com/owa", "https://ns.contoso.com/owa"),  # the VIP serves https only
        ("https://user@mb1.contoso.com/owa#x", "https://ns.contoso.com/owa"),
        ("https://mb1.contoso.com/", "https://ns.contoso.com/owa"),  # no path: the documented one
        ("https://[2001:db8::1]/owa", "https://ns.contoso.com/owa"),
        ("not a url", "https://ns.contoso.com/owa"),
        ("https://mb1.contoso.com:99999/owa", "https://ns.contoso.com/owa"),  # invalid port: default
    ],
)
def test_retarget_to_what_the_vip_serves(current: str | None, target: str) -> None:
    assert retarget_url(current, "ns.contoso.com", catalog.get("owa")) == target


def test_retarget_on_another_balancer_port() -> None:
    owa = catalog.get("owa")
    assert retarget_url("http://mb1/owa", "ns.contoso.com", owa, 8443) == "https://ns.contoso.com:8443/owa"
    assert retarget_url(None, "ns.contoso.com", owa, 8443) == "https://ns.contoso.com:8443/owa"


@pytest.mark.parametrize(
    ("current", "target", "same"),
    [
        ("https://NS.Contoso.com/owa", "https://ns.contoso.com/owa", True),
        ("HTTPS://ns.contoso.com/owa", "https://ns.contoso.com/owa", True),
        ("https://ns.contoso.com/OWA", "https://ns.contoso.com/owa", False),
        ("https://ns.contoso.com:443/owa", "https://ns.contoso.com/owa", True),  # RFC 3986 §6.2.3
        ("https://ns.contoso.com:444/owa", "https://ns.contoso.com/owa", False),
        ("https://ns.contoso.com/owa", "http://ns.contoso.com/owa", False),
        (None, "https://ns.contoso.com/owa", False),
    ],
)
def test_same_url(current: str | None, target: str, same: bool) -> None:
    assert same_url(current, target) is same


@pytest.mark.parametrize(
    ("namespace", "message"),
    [
        ("outlook", "not fully qualified"),
        ("10.0.1.250", "IP address"),
        ("out_look.contoso.com", "not a valid DNS name"),
        ("-outlook.contoso.com", "not a valid DNS name"),
        ("outlook..contoso.com", "not a valid DNS name"),
        ("a" * 64 + ".contoso.com", "not a valid DNS name"),
        ("möbel.contoso.com", "not ASCII"),
        ("", "is empty"),
    ],
)
def test_bad_namespace_is_an_inventory_error(namespace: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as caught:
        Targets.build(namespace)
    assert caught.value.where == "--namespace"


def test_host_name_normalises() -> None:
    assert host_name("Outlook.Contoso.COM.", what="x") == "outlook.contoso.com"
    assert host_name("corp", what="--zone", fqdn=False) == "corp"


def test_targets_need_a_namespace_for_each_side() -> None:
    with pytest.raises(InventoryError, match="no external namespace"):
        Targets.build(internal_namespace="mail.contoso.com")
    assert Targets.build(internal_namespace="mail.contoso.com", external=False).external is None


def test_plan_from_inline_inventory_keeps_extra_servers_in_order() -> None:
    inv = parse_inventory(
        '{"Servers": [{"Name": "B"}], "VirtualDirectories": [{"Type": "Owa", "Server": "A", '
        '"Identity": "A\\\\owa (Default Web Site)", "InternalUrl": null, "ExternalUrl": null}]}'
    )
    plan = make_plan(inv, Targets.build(NS))
    assert [i.server for i in plan.items] == ["A", "A"]
    assert inv.server_names() == ("B", "A")


def test_error_names_the_option_the_bad_name_came_from() -> None:
    with pytest.raises(InventoryError) as caught:
        Targets.build("mail.contoso.com", external_namespace="mail_ext.contoso.com")
    assert caught.value.where == "--external-namespace"
    with pytest.raises(InventoryError) as caught:
        Targets.build("mail.contoso.com", autodiscover="auto discover.contoso.com")
    assert caught.value.where == "--autodiscover"
