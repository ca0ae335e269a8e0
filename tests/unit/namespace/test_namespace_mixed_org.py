"""A real-shaped mixed organisation: three servers, one on Exchange 2013, as the admin's tools write it.

mixed-org.json is the collector's shape with every value as Windows PowerShell serialises it (System.Uri
objects, server ids, Hostname objects, CRLF). MB1 (15.2) has an http OAB URL left from setup, MB2 (15.1)
an EWS URL on the back-end site's port 444, EX13 (15.0) an OWA ExternalUrl already on the namespace but
on http, and an SCP on autodiscover.corp.com. mixed-org-getvirtdirs.json is the same organisation as
the GetVirtDirs function's output piped to ConvertTo-Json and saved with `>` (UTF-16 with a BOM).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from casarray.errors import InventoryError
from casarray.exchange.namespace.inventory import Inventory, parse_inventory
from casarray.exchange.namespace.plan import Action, Plan, PlanItem, Scope, Targets, make_plan
from casarray.exchange.namespace.script import apply_script, rollback_script
from casarray.exchange.namespace.verify import verify

NS = "outlook.corp.com"
MIXED = "mixed-org.json"
SEED = "mixed-org-getvirtdirs.json"


def run(*args: str | Path) -> Result:
    from casarray.cli.namespace import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def _find(plan: Plan, server: str, kind: str, prop: str) -> PlanItem:
    (item,) = [i for i in plan.items if (i.server, i.kind, i.property) == (server, kind, prop)]
    return item


def _calls(script: str) -> list[str]:
    return re.findall(r"    Update-CasSetting .*?\n        }\)\n", script, flags=re.S)


# 1. Only URLs the VIP serves.


def test_back_end_port_and_http_become_https_on_the_balancer_port(
    inventory: Callable[[str], Inventory],
) -> None:
    plan = make_plan(inventory(MIXED), Targets.build(NS))
    ews = _find(plan, "MB2", "WebServices", "InternalUrl")
    assert ews.current == "https://mb2.corp.com:444/EWS/Exchange.asmx"
    assert ews.target == f"https://{NS}/EWS/Exchange.asmx"
    oab = _find(plan, "MB1", "Oab", "InternalUrl")
    assert (oab.current, oab.target) == ("http://mb1.corp.com/OAB", f"https://{NS}/OAB")
    owa = _find(plan, "EX13", "Owa", "ExternalUrl")
    assert (owa.current, owa.target, owa.action) == (f"http://{NS}/owa", f"https://{NS}/owa", Action.CHANGE)
    for item in plan.items:
        if item.target is not None and "://" in item.target:
            assert item.target.startswith(f"https://{NS}/"), item


def test_balancer_port_other_than_443(inventory: Callable[[str], Inventory]) -> None:
    plan = make_plan(inventory(MIXED), Targets.build(NS, https_port=8443))
    assert _find(plan, "MB2", "WebServices", "InternalUrl").target == f"https://{NS}:8443/EWS/Exchange.asmx"
    scp = _find(plan, "MB1", "ClientAccessService", "AutoDiscoverServiceInternalUri")
    assert scp.target == f"https://{NS}:8443/Autodiscover/Autodiscover.xml"


def test_bad_balancer_port_is_refused() -> None:
    with pytest.raises(InventoryError) as caught:
        Targets.build(NS, https_port=0)
    assert caught.value.where == "--https-port"


def test_verify_names_a_wrong_port_and_a_wrong_scheme() -> None:
    inv = parse_inventory(
        json.dumps(
            {
                "VirtualDirectories": [
                    {
                        "Type": "WebServices",
                        "Server": "MB2",
                        "Name": "EWS (Default Web Site)",
                        "InternalUrl": f"https://{NS}:444/EWS/Exchange.asmx",
                        "ExternalUrl": f"http://{NS}/EWS/Exchange.asmx",
                    }
                ]
            }
        )
    )
    result = verify(inv, Targets.build(NS))
    assert not result.ok
    reasons = {c.property: c.reason for c in result.failures}
    assert reasons["InternalUrl"].startswith("on port 444, not 443")
    assert "444" in reasons["InternalUrl"]
    assert f"https://{NS}/EWS/Exchange.asmx" in reasons["InternalUrl"]
    assert reasons["ExternalUrl"].startswith("http, not https")
    assert f"https://{NS}/EWS/Exchange.asmx" in reasons["ExternalUrl"]


def test_verify_fails_what_the_old_plan_wrote(inventory: Callable[[str], Inventory]) -> None:
    """The old plan kept port 444 and http: an inventory with those results must not pass."""
    text = json.dumps(
        {
            "VirtualDirectories": [
                {"Type": "WebServices", "Server": "MB2", "Name": "EWS (Default Web Site)",
                 "InternalUrl": f"https://{NS}:444/EWS/Exchange.asmx", "ExternalUrl": None},
                {"Type": "Oab", "Server": "MB1", "Name": "OAB (Default Web Site)",
                 "InternalUrl": f"http://{NS}/OAB", "ExternalUrl": None},
            ]
        }
    )  # fmt: skip
    result = verify(parse_inventory(text), Targets.build(NS, external=False))
    assert {c.kind for c in result.failures} == {"WebServices", "Oab"}


def test_default_port_is_the_same_url() -> None:
    inv = parse_inventory(
        json.dumps(
            {
                "VirtualDirectories": [
                    {"Type": "Owa", "Server": "MB1", "Name": "owa (Default Web Site)",
                     "InternalUrl": f"https://{NS}:443/owa", "ExternalUrl": f"https://{NS}/owa"}
                ]
            }
        )
    )  # fmt: skip
    assert verify(inv, Targets.build(NS)).ok


def test_cli_https_port_and_powershell(fixture_path: Callable[[str], Path]) -> None:
    inv = fixture_path(MIXED)
    args = ("plan", "-i", inv, "-n", NS, "--server", "MB1", "--service", "powershell,oab", "--json")
    rows = json.loads(run(*args, "--https-port", "8443", "--powershell").stdout)
    assert {r["target"] for r in rows if r["property"] == "InternalUrl"} == {
        f"https://{NS}:8443/powershell",
        f"https://{NS}:8443/OAB",
    }
    default = json.loads(run(*args).stdout)
    assert [r["target"] for r in default if r["kind"] == "PowerShell"] == [None, None]
    assert run(*args, "--https-port", "70000").exit_code == 1


# 2. PowerShell stays on the server names unless asked.


def test_powershell_is_left_on_the_servers_by_default(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(MIXED)
    plan = make_plan(inv, Targets.build(NS))
    for server in ("MB1", "MB2", "EX13"):
        for prop in ("InternalUrl", "ExternalUrl"):
            item = _find(plan, server, "PowerShell", prop)
            assert (item.target, item.action) == (None, Action.OK)
            assert "--powershell" in item.note
    apply = apply_script(plan, inv)
    assert "PowerShell (Default Web Site)" not in apply
    assert "Set-PowerShellVirtualDirectory" not in apply
    # verify checks the same set: PowerShell on the server names does not fail it.
    result = verify(inv, Targets.build(NS))
    assert not any(c.kind == "PowerShell" for c in result.failures)


def test_powershell_opt_in_moves_it_to_what_the_vip_serves(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(MIXED)
    targets = Targets.build(NS, powershell=True)
    plan = make_plan(inv, targets)
    item = _find(plan, "MB1", "PowerShell", "InternalUrl")
    assert (item.current, item.target) == ("http://mb1.corp.com/powershell", f"https://{NS}/powershell")
    assert "Set-PowerShellVirtualDirectory" in apply_script(plan, inv)
    assert any(c.kind == "PowerShell" for c in verify(inv, targets).failures)


# 3. Exchange 2013: the Client Access cmdlets each server's version has.


def test_mixed_org_uses_each_servers_client_access_cmdlets(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(MIXED)
    plan = make_plan(inv, Targets.build(NS))
    for script in (apply_script(plan, inv), rollback_script(plan, inv)):
        scp_calls = {
            call.split("-Identity '")[1].split("'")[0]: call
            for call in _calls(script)
            if "AutoDiscoverServiceInternalUri" in call
        }
        assert set(scp_calls) == {"MB1", "MB2", "EX13"}
        assert "-Get 'Get-ClientAccessServer' -Set 'Set-ClientAccessServer'" in scp_calls["EX13"]
        for server in ("MB1", "MB2"):
            assert "-Get 'Get-ClientAccessService' -Set 'Set-ClientAccessService'" in scp_calls[server]


def test_every_cmdlet_is_checked_before_the_first_change(inventory: Callable[[str], Inventory]) -> None:
    """A missing cmdlet stops the script before anything changed, not after a server's vdirs."""
    inv = inventory(MIXED)
    plan = make_plan(inv, Targets.build(NS))
    for script in (apply_script(plan, inv), rollback_script(plan, inv)):
        first_change = script.index("    Update-CasSetting -Get")
        probe = script[:first_change]
        for cmdlet in ("Set-ClientAccessServer", "Get-ClientAccessServer", "Set-ClientAccessService",
                       "Set-OwaVirtualDirectory", "Set-OutlookAnywhere"):  # fmt: skip
            assert f"'{cmdlet}'" in probe, cmdlet


# 4. The seed's own output: GetVirtDirs | ConvertTo-Json.


def test_getvirtdirs_array_is_read(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(SEED)
    assert inv.virtual_directories_only
    assert len(inv.virtual_directories) == 3 * 8
    kinds = {v.kind for v in inv.virtual_directories}
    assert kinds == {"Owa", "Ecp", "WebServices", "Mapi", "Oab", "ActiveSync", "Autodiscover", "PowerShell"}
    ews = next(v for v in inv.virtual_directories if v.server == "MB2" and v.kind == "WebServices")
    assert ews.identity == "MB2\\EWS (Default Web Site)"
    assert ews.internal_url == "https://mb2.corp.com:444/EWS/Exchange.asmx"
    assert inv.server_names() == ("MB1", "MB2", "EX13")


def test_getvirtdirs_single_object_is_read() -> None:
    inv = parse_inventory(
        '{"Server": {"Name": "MB1"}, "Name": "owa (Default Web Site)", '
        '"InternalUrl": "https://mb1.corp.com/owa", "ExternalUrl": null}'
    )
    assert [(v.server, v.kind) for v in inv.virtual_directories] == [("MB1", "Owa")]


def test_getvirtdirs_entry_with_an_unknown_name_is_named() -> None:
    with pytest.raises(InventoryError, match=r"\[1\].*'Rpc \(Default Web Site\)'"):
        parse_inventory(
            '[{"Server": "MB1", "Name": "owa (Default Web Site)", "InternalUrl": null, "ExternalUrl": null},'
            ' {"Server": "MB1", "Name": "Rpc (Default Web Site)", "InternalUrl": null, "ExternalUrl": null}]'
        )


def test_getvirtdirs_plan_matches_the_full_inventory_on_vdirs(inventory: Callable[[str], Inventory]) -> None:
    full = make_plan(inventory(MIXED), Targets.build(NS))
    seed = make_plan(inventory(SEED), Targets.build(NS))
    vdir_rows = {(i.server, i.kind, i.property, i.current, i.target, i.action) for i in full.items}
    assert {(i.server, i.kind, i.property, i.current, i.target, i.action) for i in seed.items} <= vdir_rows
    assert not any(i.kind in ("OutlookAnywhere", "ClientAccessService") for i in seed.items)


def test_verify_cli_reads_getvirtdirs(fixture_path: Callable[[str], Path]) -> None:
    result = run("verify", "-i", fixture_path(SEED), "-n", NS)
    assert result.exit_code == 1
    assert "Outlook Anywhere and the Autodiscover SCP are not in" in result.stdout
    assert "off  MB2 WebServices InternalUrl: on mb2.corp.com" in result.stdout


def test_script_refuses_getvirtdirs(fixture_path: Callable[[str], Path]) -> None:
    result = run("script", "-i", fixture_path(SEED), "-n", NS)
    assert result.exit_code == 1
    assert "collector" in result.stderr


# 5. Scope: --server and --service.


def test_scope_by_server_and_service(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(MIXED)
    scope = Scope.build(inv, servers=["ex13"], services=["owa", "ecp"])
    plan = make_plan(inv, Targets.build(NS), scope)
    assert {(i.server, i.kind) for i in plan.items} == {("EX13", "Owa"), ("EX13", "Ecp")}
    rpc = make_plan(inv, Targets.build(NS), Scope.build(inv, services=["rpc", "autodiscover"]))
    assert {i.kind for i in rpc.items} == {"OutlookAnywhere", "Autodiscover", "ClientAccessService"}


def test_scope_names_an_unknown_server_or_service(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory(MIXED)
    with pytest.raises(InventoryError, match="MB9") as caught:
        Scope.build(inv, servers=["MB9"])
    assert caught.value.where == "--server"
    with pytest.raises(InventoryError, match="webmail") as caught:
        Scope.build(inv, services=["webmail"])
    assert caught.value.where == "--service"


def test_cli_filters_on_plan_script_and_verify(fixture_path: Callable[[str], Path], tmp_path: Path) -> None:
    inv = fixture_path(MIXED)
    rows = json.loads(
        run("plan", "-i", inv, "-n", NS, "--server", "MB2", "--service", "ews", "--json").stdout
    )
    assert {(r["server"], r["kind"]) for r in rows} == {("MB2", "WebServices")}
    out = tmp_path / "apply.ps1"
    assert run("script", "-i", inv, "-n", NS, "--server", "MB1,MB2", "-o", out).exit_code == 0
    text = out.read_text(encoding="utf-8-sig")
    assert "'MB2\\owa (Default Web Site)'" in text
    assert "EX13" not in text
    checked = json.loads(run("verify", "-i", inv, "-n", NS, "--service", "rpc", "--json").stdout)
    assert {c["kind"] for c in checked} == {"OutlookAnywhere"}
    assert run("verify", "-i", inv, "-n", NS, "--server", "MB9").exit_code == 1


# 6. The SCP hint.


def test_scp_on_autodiscover_name_gets_a_hint(inventory: Callable[[str], Inventory]) -> None:
    result = verify(inventory(MIXED), Targets.build(NS))
    (scp,) = [c for c in result.failures if c.server == "EX13" and c.kind == "ClientAccessService"]
    assert "a valid choice" in scp.reason
    assert "--autodiscover autodiscover.corp.com" in scp.reason
    kept = verify(inventory(MIXED), Targets.build(NS, autodiscover="autodiscover.corp.com"))
    assert any(c.server == "EX13" and c.kind == "ClientAccessService" and c.ok for c in kept.checks)


def test_plan_table_shows_the_scp_hint(fixture_path: Callable[[str], Path]) -> None:
    result = run("plan", "-i", fixture_path(MIXED), "-n", NS)
    assert result.exit_code == 0
    assert "--autodiscover autodiscover.corp.com" in result.stdout
