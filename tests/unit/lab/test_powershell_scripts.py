"""The generated scripts, parsed with tree-sitter's PowerShell grammar and run by the lab's interpreter
against an organisation kept in memory (the simulated servers' own settings, no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casarray.exchange.namespace.collector import collector_script
from casarray.exchange.namespace.inventory import load_inventory, parse_inventory
from casarray.exchange.namespace.plan import Scope, Targets, make_plan
from casarray.exchange.namespace.powershell import ps_string
from casarray.exchange.namespace.script import apply_script, rollback_script
from casarray.exchange.namespace.verify import verify
from casarray.lab.powershell import (
    ExchangeShell,
    Interpreter,
    MemoryHost,
    ScriptError,
    Stream,
    parse,
    syntax_problems,
)
from tests.unit.lab.powershell_org import CLOCK, MemoryOrganization, inventory_json, run

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inventory"
NS = "outlook.alwayshotcafe.com"
AUTODISCOVER = "autodiscover.alwayshotcafe.com"

# (fixture, targets, services): plans for 2013, 2016 and 2019 servers, with and without Outlook Anywhere,
# one side only, two names, the PowerShell vdir, a non-default port, and a plan with nothing to change.
PLANS = {
    "2019 one server": ("one-server.json", Targets.build(NS), ()),
    "2019 one server, BOM": ("one-server-bom.json", Targets.build(NS, autodiscover=AUTODISCOVER), ()),
    "2013/2016/2019 mixed": ("mixed-org.json", Targets.build("mail.contoso.com"), ()),
    "2016/2019, eight servers": ("eight-servers.json", Targets.build("mail.contoso.com"), ()),
    "owa and ecp only (no Outlook Anywhere)": ("two-servers-mb1corp.json", Targets.build(NS), ("owa", "ecp")),
    "Outlook Anywhere only": ("two-servers-mb1corp.json", Targets.build(NS), ("rpc",)),
    "internal only": ("two-servers-mb1corp.json", Targets.build(NS, external=False), ()),
    "split names": (
        "mixed-org.json",
        Targets.build(internal_namespace="mail.corp.contoso.com", external_namespace="mail.contoso.com"),
        (),
    ),
    "PowerShell too, port 8443": ("one-server.json", Targets.build(NS, powershell=True, https_port=8443), ()),
    "nothing to change": ("unified.json", Targets.build("outlook.alwayshotcafe.com"), ()),
}


def _scripts(name: str) -> tuple[str, str]:
    fixture, targets, services = PLANS[name]
    inventory = load_inventory(FIXTURES / fixture)
    plan = make_plan(inventory, targets, Scope.build(inventory, services=services))
    return apply_script(plan, inventory), rollback_script(plan, inventory)


def test_the_collector_parses() -> None:
    assert syntax_problems(collector_script()) == []


@pytest.mark.parametrize("name", PLANS)
def test_every_apply_and_rollback_script_parses(name: str) -> None:
    apply, rollback = _scripts(name)
    assert syntax_problems(apply) == []
    assert syntax_problems(rollback) == []


def test_the_grammar_does_find_a_broken_script() -> None:
    apply, _ = _scripts("2019 one server")
    broken = apply.replace("} finally {", "} finally ", 1)
    problems = syntax_problems(broken)
    assert problems, "a script with an unclosed block must not parse"
    with pytest.raises(ScriptError, match=r"apply\.ps1:\d+: does not parse"):
        run(broken, MemoryOrganization.installed("MB1"), name="apply.ps1")


@pytest.mark.parametrize(
    "value", ["MB1\\owa (Default Web Site)", "O'Brien", "it\u2019s \u2018q\u2019", '$env:x `n "x"', "a #> b"]
)
def test_a_quoted_value_reads_back_exactly(value: str) -> None:
    # The generator quotes every value with ps_string; the grammar and the interpreter read it back.
    host, _ = run(f"Write-Host {ps_string(value)}")
    assert host.text(Stream.HOST) == [value]


def _collect(organization: MemoryOrganization, path: str = "inventory.json") -> str:
    host, outcome = run(collector_script(), organization, {"Path": path}, name="collector.ps1")
    assert outcome.ok
    return inventory_json(host, f"/lab/{path}")


def test_the_collector_writes_what_the_servers_hold() -> None:
    organization = MemoryOrganization.installed("MB1", "MB2", "MB3")
    text = _collect(organization)
    inventory = parse_inventory(text)
    assert [s.name for s in inventory.servers] == ["MB1", "MB2", "MB3"]
    assert len(inventory.virtual_directories) == 3 * 8
    owa = next(v for v in inventory.virtual_directories if v.kind == "Owa" and v.server == "MB2")
    assert (owa.identity, owa.internal_url, owa.external_url) == (
        "MB2\\owa (Default Web Site)",
        "https://mb2.alwayshotcafe.com/owa",
        None,
    )
    oa = inventory.outlook_anywhere[0]
    assert (oa.internal_hostname, oa.external_hostname, oa.ssl_offloading) == (
        "mb1.alwayshotcafe.com",
        None,
        True,
    )
    assert inventory.client_access_services[2].autodiscover_internal_uri == (
        "https://mb3.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    # The same records the servers' own documents hold, as the inventory loader reads them.
    documents = organization.documents()
    direct = {key: [e for d in documents.values() for e in d[key]] for key in next(iter(documents.values()))}
    assert parse_inventory(json.dumps(direct)) == inventory


def test_the_seed_procedure_in_memory() -> None:
    """As installed -> verify fails -> plan -> script -> -WhatIf changes nothing -> apply -> verify passes
    -> apply again changes nothing -> rollback -> as installed."""
    organization = MemoryOrganization.installed("MB1", "MB2", "MB3")
    installed = organization.documents()
    targets = Targets.build(NS, autodiscover=AUTODISCOVER)
    before = parse_inventory(_collect(organization))
    assert not verify(before, targets).ok
    plan = make_plan(before, targets)
    apply, rollback = apply_script(plan, before), rollback_script(plan, before)

    host, outcome = run(apply, organization, {"WhatIf": True}, name="apply.ps1")
    assert outcome.ok
    assert organization.changes == []
    what_if = [line for line in host.text(Stream.HOST) if line.startswith("What if:")]
    assert len(what_if) == 3 * 8  # six vdirs, Outlook Anywhere and the SCP on each server
    assert f"{len(plan.changes)} settings would change, 0 already as wanted." in host.text(Stream.HOST)

    host, outcome = run(apply, organization, name="apply.ps1")
    assert outcome.ok
    assert f"{len(plan.changes)} settings changed, 0 already as wanted." in host.text(Stream.HOST)
    after = parse_inventory(_collect(organization))
    assert verify(after, targets).ok
    # The transcript holds what the console showed, in a file named after the run, next to the script.
    transcript = host.transcripts["/scripts/casarray-apply-20250304-050607.log"]
    assert transcript[-1] == f"{len(plan.changes)} settings changed, 0 already as wanted."

    changes = len(organization.changes)
    host, outcome = run(apply, organization, name="apply.ps1")
    assert outcome.ok
    assert len(organization.changes) == changes
    assert f"0 settings changed, {len(plan.changes)} already as wanted." in host.text(Stream.HOST)

    _, outcome = run(rollback, organization, name="rollback.ps1")
    assert outcome.ok
    assert organization.documents() == installed


def test_outlook_anywhere_on_the_namespace_requires_ssl_and_the_rollback_restores_it() -> None:
    organization = MemoryOrganization.installed("MB1")
    inventory = parse_inventory(_collect(organization))
    plan = make_plan(inventory, Targets.build(NS), Scope.build(inventory, services=["rpc"]))
    run(apply_script(plan, inventory), organization)
    ((_, change),) = organization.changes
    assert change == {
        "Kind": "OutlookAnywhere",
        "Set": {
            "InternalHostname": NS,
            "ExternalHostname": NS,
            "InternalClientsRequireSsl": True,  # setup leaves $false: Outlook would be told SSL Off
            "ExternalClientsRequireSsl": True,
        },
    }
    run(rollback_script(plan, inventory), organization)
    (_, back) = organization.changes[-1]
    assert back["Set"]["InternalClientsRequireSsl"] is False
    assert back["Set"]["ExternalClientsRequireSsl"] is False


def test_exchange_2013_gets_set_client_access_server() -> None:
    organization = MemoryOrganization.from_inventory(load_inventory(FIXTURES / "mixed-org.json"))
    inventory = parse_inventory(_collect(organization))
    targets = Targets.build("mail.contoso.com")
    plan = make_plan(inventory, targets)
    apply = apply_script(plan, inventory)
    assert "'Set-ClientAccessServer'" in apply
    assert "'Set-ClientAccessService'" in apply
    _, outcome = run(apply, organization)
    assert outcome.ok
    assert verify(parse_inventory(_collect(organization)), targets).ok


def test_a_shell_without_a_cmdlet_stops_before_any_change() -> None:
    # A script written for Exchange 2016 or later, run in the shell of an Exchange 2013 organisation.
    organization = MemoryOrganization.installed("MB1", "MB2", version="Version 15.0 (Build 1497.2)")
    inventory = parse_inventory(_collect(organization))
    script = apply_script(make_plan(inventory, Targets.build(NS)), inventory)
    modern = script.replace("Set-ClientAccessServer", "Set-ClientAccessService").replace(
        "Get-ClientAccessServer", "Get-ClientAccessService"
    )
    with pytest.raises(ScriptError, match="Not available in this shell: Get-ClientAccessService, "):
        run(modern, organization, name="apply.ps1")
    assert organization.changes == []
    # The script's own version for that organisation runs.
    _, outcome = run(script, organization)
    assert outcome.ok
    assert organization.changes


def test_a_refused_change_stops_the_run_and_names_the_line() -> None:
    organization = MemoryOrganization.installed("MB1", "MB2")
    inventory = parse_inventory(_collect(organization))
    plan = make_plan(inventory, Targets.build(NS))
    apply = apply_script(plan, inventory)
    # A hand edit an administrator might make: a value the Set- cmdlet refuses.
    edited = apply.replace(
        "'ExternalUrl' = 'https://outlook.alwayshotcafe.com/ecp'", "'ExternalUrl' = 'outlook/ecp'", 1
    )
    line = next(i for i, text in enumerate(edited.splitlines(), 1) if "& $Set -Identity" in text)
    with pytest.raises(ScriptError) as caught:
        run(edited, organization, name="apply.ps1")
    message = str(caught.value)
    assert message.startswith(f"apply.ps1:{line}: & $Set -Identity $Identity @changes")
    assert (
        "Set-EcpVirtualDirectory: MB1: ExternalUrl: 'outlook/ecp' is not an absolute http(s) URL" in message
    )
    # Only what came before it changed: MB1's OWA, nothing of ECP, nothing on MB2.
    assert [(server, change.get("Type")) for server, change in organization.changes] == [("MB1", "Owa")]


def test_the_transcript_is_closed_when_the_run_fails() -> None:
    organization = MemoryOrganization.installed("MB1")
    inventory = parse_inventory(_collect(organization))
    apply = apply_script(make_plan(inventory, Targets.build(NS)), inventory)
    broken = apply.replace("'MB1\\owa (Default Web Site)'", "'MB9\\owa (Default Web Site)'", 1)
    host = MemoryHost(CLOCK, script_root="/scripts")
    with pytest.raises(ScriptError, match=r"couldn't be found"):
        Interpreter(parse(broken, "apply.ps1"), host, ExchangeShell(organization)).run()
    assert host.text(Stream.OUTPUT)[-1].startswith(
        "Transcript stopped, output file is /scripts/casarray-apply-"
    )
