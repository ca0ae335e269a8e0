"""The apply and rollback scripts, checked as text (quoting, guards, only the changes)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import Inventory, parse_inventory
from casarray.exchange.namespace.plan import Targets, make_plan
from casarray.exchange.namespace.powershell import ps_comment, ps_string
from casarray.exchange.namespace.script import apply_script, rollback_script

NS = "outlook.mb1corp.com"


def _scripts(inv: Inventory, targets: Targets) -> tuple[str, str]:
    plan = make_plan(inv, targets)
    return apply_script(plan, inv), rollback_script(plan, inv)


def _calls(script: str) -> list[str]:
    """Each Update-CasSetting call as one string."""
    return re.findall(r"    Update-CasSetting .*?\n        }\)\n", script, flags=re.S)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("MB1\\owa (Default Web Site)", "'MB1\\owa (Default Web Site)'"),
        ("O'Brien", "'O''Brien'"),
        ("it\u2019s", "'it\u2019\u2019s'"),
        ("$env:x `n", "'$env:x `n'"),
        (None, "$null"),
    ],
)
def test_ps_string(value: str | None, quoted: str) -> None:
    assert ps_string(value) == quoted


def test_ps_comment_cannot_end_the_block() -> None:
    assert ps_comment("a\r\nb #> Remove-Item") == "a  b # > Remove-Item"


def test_apply_script_frame(inventory: Callable[[str], Inventory]) -> None:
    apply, _ = _scripts(inventory("two-servers-mb1corp.json"), Targets.build(NS))
    assert "param(\n    [switch]$WhatIf," in apply
    assert "$ErrorActionPreference = 'Stop'" in apply
    assert "Start-Transcript -Path $TranscriptPath" in apply
    assert "Stop-Transcript" in apply
    assert "-WhatIf:$script:WhatIf -ErrorAction Stop" in apply
    assert "-replace" not in apply


def test_apply_script_holds_only_the_changes(inventory: Callable[[str], Inventory]) -> None:
    inv = inventory("eight-servers.json")
    plan = make_plan(inv, Targets.build("mail.contoso.com"))
    apply = apply_script(plan, inv)
    calls = _calls(apply)
    # 6 vdirs (not Autodiscover, not PowerShell) + Outlook Anywhere + the SCP on each of the five
    # servers that are not done.
    assert len(calls) == 5 * 8
    wanted = [
        line for call in calls for line in call.splitlines() if " = " in line and "RequireSsl" not in line
    ]
    assert len(wanted) == len(plan.changes)
    for done in ("EX01", "EX02", "EX03"):
        assert f"'{done}\\" not in apply
    assert "Autodiscover (Default Web Site)" not in apply  # the Autodiscover vdir is never set


def test_each_change_is_guarded(inventory: Callable[[str], Inventory]) -> None:
    apply, _ = _scripts(inventory("two-servers-mb1corp.json"), Targets.build(NS))
    # Set- cmdlets only run inside Update-CasSetting, after Test-CasValue compared the current value.
    for service in catalog.iter_services():
        assert f"{service.set_cmdlet} " not in apply.replace(f"-Set '{service.set_cmdlet}'", "")
    guard = apply.index("if (Test-CasValue $current $Wanted[$name])")
    assert guard < apply.index("& $Set -Identity $Identity @changes")
    assert "if ($changes.Count -eq 0) { return }" in apply


def test_apply_call_for_owa(inventory: Callable[[str], Inventory]) -> None:
    apply, _ = _scripts(inventory("two-servers-mb1corp.json"), Targets.build(NS))
    expected = (
        "    Update-CasSetting -Get 'Get-OwaVirtualDirectory' -Set 'Set-OwaVirtualDirectory' `\n"
        "        -Identity 'MB1\\owa (Default Web Site)' `\n"
        "        -Wanted ([ordered]@{\n"
        "            'InternalUrl' = 'https://outlook.mb1corp.com/owa'\n"
        "            'ExternalUrl' = 'https://outlook.mb1corp.com/owa'\n"
        "        })\n"
    )
    assert expected in apply


def test_outlook_anywhere_on_the_namespace_requires_ssl_and_the_rollback_restores_it(
    inventory: Callable[[str], Inventory],
) -> None:
    """With ClientsRequireSsl $false Autodiscover tells Outlook SSL Off: http, which the VIP does not
    serve. The apply script sets it with each host name; the rollback puts back what was recorded."""
    apply, rollback = _scripts(inventory("two-servers-mb1corp.json"), Targets.build(NS))
    (call,) = [c for c in _calls(apply) if "'MB1\\Rpc (Default Web Site)'" in c]
    assert "'InternalHostname' = 'outlook.mb1corp.com'" in call
    assert "-With ([ordered]@{" in call
    assert "'InternalClientsRequireSsl' = $true" in call
    assert "'ExternalClientsRequireSsl' = $true" in call  # recorded $false
    (back,) = [c for c in _calls(rollback) if "'MB1\\Rpc (Default Web Site)'" in c]
    assert "'ExternalClientsRequireSsl' = $false" in back  # as recorded
    (back,) = [c for c in _calls(rollback) if "'MB2\\Rpc (Default Web Site)'" in c]
    assert "'ExternalHostname' = $null" in back


def test_rollback_restores_inventory_values_and_nulls(inventory: Callable[[str], Inventory]) -> None:
    _, rollback = _scripts(inventory("two-servers-mb1corp.json"), Targets.build(NS))
    assert "'InternalUrl' = 'https://MB1.mb1corp.com/owa'" in rollback  # exactly as recorded
    assert "'ExternalUrl' = 'https://mail.mb1corp.com/owa'" in rollback
    mb2_owa = next(c for c in _calls(rollback) if "'MB2\\owa (Default Web Site)'" in c)
    assert "'ExternalUrl' = $null" in mb2_owa
    assert (
        "'AutoDiscoverServiceInternalUri' = 'https://mb1.mb1corp.com/Autodiscover/Autodiscover.xml'"
        in rollback
    )
    assert "$ErrorActionPreference = 'Stop'" in rollback
    assert "casarray-rollback-" in rollback


def test_nothing_to_change(inventory: Callable[[str], Inventory]) -> None:
    apply, rollback = _scripts(inventory("unified.json"), Targets.build("outlook.alwayshotcafe.com"))
    assert "Update-CasSetting -Get" not in apply
    assert "Nothing to change" in apply
    assert "Nothing to restore" in rollback


def test_hostile_identity_is_quoted() -> None:
    inv = parse_inventory(
        '{"VirtualDirectories": [{"Type": "Owa", "Server": "MB1", '
        '"Identity": "MB1\\\\owa (O\'Brien\\u2019s site)\\r\\n#> Remove-Item", '
        '"InternalUrl": "https://mb1.contoso.com/owa", "ExternalUrl": null}]}',
        where="evil'\n#>.json",
    )
    apply, _ = _scripts(inv, Targets.build("mail.contoso.com"))
    assert "-Identity 'MB1\\owa (O''Brien\u2019\u2019s site)\r\n#> Remove-Item'" in apply
    header = apply[: apply.index("#>\nparam(")]
    assert "#>" not in header.replace("# >", "")


@pytest.mark.parametrize(
    ("fixture", "namespace"), [("two-servers-mb1corp.json", NS), ("mixed-org.json", "outlook.corp.com")]
)
def test_scripts_parse_with_pwsh(
    inventory: Callable[[str], Inventory], tmp_path: Path, fixture: str, namespace: str
) -> None:
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        pytest.skip("pwsh is not installed")
    for name, text in zip(
        ("apply", "rollback"), _scripts(inventory(fixture), Targets.build(namespace)), strict=True
    ):
        path = tmp_path / f"{name}.ps1"
        path.write_text(text, encoding="utf-8-sig")
        check = (
            "$e = $null; [void][System.Management.Automation.Language.Parser]::ParseFile("
            f"'{path}', [ref]$null, [ref]$e); if ($e) {{ $e | Out-String; exit 1 }}"
        )
        subprocess.run([pwsh, "-NoProfile", "-Command", check], check=True, timeout=60)
