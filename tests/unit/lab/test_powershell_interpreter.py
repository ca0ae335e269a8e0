"""The lab's PowerShell interpreter on small scripts: the language as the generated scripts use it, the
Exchange cmdlets, and every way a run is refused (each names the line and the statement)."""

from __future__ import annotations

import pytest

from casarray.lab.powershell import Interpreter, MemoryHost, ScriptError, Stream, parse
from tests.unit.lab.powershell_org import CLOCK, MemoryOrganization, run


def _host_lines(text: str, organization: MemoryOrganization | None = None, **arguments: object) -> list[str]:
    host, _ = run(text, organization, arguments)
    return host.text(Stream.HOST)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        # Comparisons ignore case unless -c…; a list on the left filters (about_Comparison_Operators).
        ("Write-Host ('ABC' -eq 'abc') ('ABC' -ceq 'abc') ('a' -ne 'A')", "True False False"),
        ("Write-Host (@(1, 2, 3, 2) -eq 2).Count", "2"),
        (
            "Write-Host (@('a', 'B') -contains 'b') ('b' -in @('a', 'B')) (@('a') -notcontains 'a')",
            "True True False",
        ),
        ("Write-Host ('10' -eq 10) (10 -eq '10') (3 -gt '20') ('3' -gt '20')", "True True False True"),
        ("Write-Host ($null -eq $null) ($null -eq '') ('' -eq $null)", "True False False"),
        ("Write-Host ('abc' -like 'A*') ('abc' -clike 'A*') ('x.y' -like 'x?y')", "True False True"),
        ("if ('mb1.contoso.com' -match '^(\\w+)\\.') { Write-Host $Matches[1] }", "mb1"),
        ("Write-Host ('https://MB1/owa' -replace 'mb1', 'outlook')", "https://outlook/owa"),
        ("Write-Host ('a-b' -replace '(\\w)-(\\w)', '$2-$1')", "b-a"),
        ("Write-Host (@('a', 'b') -join ', ')", "a, b"),
        # Arithmetic, and what + does to text, lists and hashtables.
        (
            "Write-Host (1 + 2 * 3) (7 / 2) (6 / 3) ('a' + 1) (@(1) + 2).Count (@{a = 1} + @{b = 2}).Count",
            "7 3.5 2 a1 2 2",
        ),
        # The format operator, .NET composite formatting.
        ("Write-Host ('{0,-4}|{1,3}|{{x}}' -f 'ab', 7)", "ab  |  7|{x}"),
        ("Write-Host ('{0:yyyyMMdd-HHmmss}' -f (Get-Date))", "20250304-050607"),
        ("Write-Host ((Get-Date).ToUniversalTime().ToString('o'))", "2025-03-04T05:06:07.0000000Z"),
        # Truth: $null, 0, '', an empty list are false; a one-item list is its item.
        (
            "Write-Host ([bool]@()) ([bool]@(0)) ([bool]@(0, 0)) ([bool]'') ([bool]'0') (-not $null)",
            "False False True False True True",
        ),
        # Strings: escapes, doubled quotes, expansions.
        ('$n = \'MB1\'; Write-Host "Reading $n`: ""$($n.ToLower())"" `$n"', 'Reading MB1: "mb1" $n'),
        ("Write-Host 'it''s' ('{0}' -f 'x''y')", "it's x'y"),
        # Hashtables: keys ignore case; [ordered] keeps the order; members and indexes read keys.
        (
            "$h = [ordered]@{ B = 1; a = 2 }; $h['b'] = 3; Write-Host ($h.Keys -join ',') $h.B $h['A'] $h.Count",
            "B,a 3 2 2",
        ),
        ("$h = @{}; $h.x = 1; $h['X'] += 1; Write-Host $h.x $h.ContainsKey('X')", "2 True"),
        # Arrays: @() collects, a comma builds, unary comma keeps a list whole through a return.
        ("function F { return , @(1, 2) }; $r = F; Write-Host $r.Count ($r -is [array])", "2 True"),
        ("function G { 1; 2 }; $r = @(G); $s = G; Write-Host $r.Count $s.Count", "2 2"),
        ("function H { @() }; $r = H; Write-Host ($null -eq $r)", "True"),
        # Pipelines and script blocks.
        ("Write-Host (@(1, 2, 3, 4) | Where-Object { $_ -gt 2 } | ForEach-Object { $_ * 10 })", "30 40"),
        ("$n = 0; @(1, 2, 3) | ForEach-Object { $n += $_ }; Write-Host $n", "6"),
        # Loops.
        (
            "foreach ($i in @(1, 2, 3, 4, 5)) { if ($i -eq 2) { continue }; if ($i -eq 4) { break }; Write-Host $i }",
            "1\n3",
        ),
        # URIs: members as System.Uri has them; TryCreate writes through [ref].
        (
            "$u = [Uri]'HTTPS://Outlook.Contoso.com/owa'; Write-Host $u.Scheme $u.Host $u.Port $u.PathAndQuery $u.OriginalString",
            "https outlook.contoso.com 443 /owa HTTPS://Outlook.Contoso.com/owa",
        ),
        (
            "$out = $null; $ok = [Uri]::TryCreate('not a url', [UriKind]::Absolute, [ref]$out); Write-Host $ok ($null -eq $out)",
            "False True",
        ),
        ("$out = $null; [void]1; Write-Host 1", None),
    ],
)
def test_language(script: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ScriptError, match=r"script\.ps1:1: .*the type \[void\]"):
            run(script)
        return
    assert "\n".join(_host_lines(script)) == expected


def test_scopes() -> None:
    script = """
$script:count = 0
$name = 'caller'
function Bump { $script:count++; $local = 'inside'; Write-Host $name }
function Outer { $name = 'outer'; Bump }
Bump
Outer
Write-Host $count ($null -eq $local)
"""
    # A function sees its caller's variables (dynamic scoping); its own die with it; $script: is shared.
    assert _host_lines(script) == ["caller", "outer", "2 True"]


def test_parameters_and_splatting() -> None:
    script = """
function F {
    param([Parameter(Mandatory = $true)][string]$Name, [int]$Count = 1, [switch]$Loud, [AllowNull()][object]$Extra)
    Write-Host $Name $Count $Loud ($null -eq $Extra)
}
F x
F -N y -Count '3' -Loud
$s = @{ Name = 'z'; Loud = $false }
F @s -Extra 5
F -Name w -Loud:$true 2
"""
    assert _host_lines(script) == ["x 1 False True", "y 3 True True", "z 1 False False", "w 2 True True"]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "function F { param([Parameter(Mandatory = $true)][string]$Name) }\nF",
            "missing mandatory parameters: Name",
        ),
        (
            "function F { param([Parameter(Mandatory = $true)][string]$Name) }\nF -Name $null",
            "because it is null",
        ),
        ("function F { param($A) }\nF -B 1", "A parameter cannot be found that matches parameter name 'B'"),
        (
            "function F { param($A) }\nF 1 2",
            "A positional parameter cannot be found that accepts argument '2'",
        ),
        (
            "Write-Host -Colour red",
            "Write-Host: A parameter cannot be found that matches parameter name 'Colour'",
        ),
        ("$x = $null\n$x.ToString()", "You cannot call a method on a null-valued expression"),
        ("Write-Host ('{1}' -f 'a')", "Index (zero based)"),
        ("throw 'stop here'", "stop here"),
    ],
)
def test_runtime_errors_name_the_line(script: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        run(script)
    line = script.count("\n") + 1
    last = script.splitlines()[-1]
    assert str(caught.value).startswith(f"script.ps1:{line}: {last}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("script", "what"),
    [
        ("Write-Host 1\nwhile ($true) { }", "the while statement"),
        ("$p = $env:PATH", "the variable $env:PATH"),
        ("class C { }", "the class statement"),
        ("Write-Host 1 > out.txt", "redirection"),
        ("function F { begin { } process { } }", "begin/process/end"),
        ("$a, $b = 1, 2", "assigning to"),
        ("[System.Net.Dns]::GetHostName()", "the type [System.Net.Dns]"),
        ("$x = 'a'\n$x.Normalize()", "the method Normalize() on a System.String"),
        (
            "Set-OwaVirtualDirectory -Identity 'MB1\\owa (Default Web Site)' -ExternalUrl 'https://o/owa' -Confirm",
            "-Confirm",
        ),
    ],
)
def test_what_is_not_understood_is_refused_with_its_line(script: str, what: str) -> None:
    organization = MemoryOrganization.installed("MB1")
    with pytest.raises(ScriptError) as caught:
        run(script, organization)
    text = str(caught.value)
    line = len(script.splitlines())
    assert text.startswith(f"script.ps1:{line}: {script.splitlines()[-1][:40]}")
    assert "not supported by casarray's PowerShell interpreter" in text
    assert what in text
    assert organization.changes == []


def test_try_catch_finally() -> None:
    script = """
try { Write-Host 'a'; throw 'boom'; Write-Host 'never' } catch { Write-Host "caught $($_.Exception.Message)" } finally { Write-Host 'finally' }
try { throw 'again' } finally { Write-Host 'cleanup' }
"""
    # The error names the throw itself, after the finally block ran.
    memory = MemoryHost(CLOCK)
    with pytest.raises(ScriptError, match=r"^script\.ps1:3: throw 'again': again$"):
        Interpreter(parse(script, "script.ps1"), memory).run()
    assert memory.text(Stream.HOST) == ["a", "caught boom", "finally", "cleanup"]


def test_error_actions() -> None:
    # An unknown command is an error; Continue writes it and goes on, Stop ends the run. Its own
    # -ErrorAction is never bound (there is no command to bind it to), as in PowerShell.
    host, outcome = run("Get-Nothing\nWrite-Host after\nGet-Nothing -ErrorAction SilentlyContinue")
    assert host.text(Stream.HOST) == ["after"]
    assert [error.split(": The term")[0] for error in outcome.errors] == ["script.ps1:1", "script.ps1:3"]
    assert outcome.errors[0].endswith(
        "The term 'Get-Nothing' is not recognized as the name of a cmdlet, function, script file, or operable program."
    )
    with pytest.raises(ScriptError, match=r"script\.ps1:2: Get-Nothing: The term 'Get-Nothing' is not"):
        run("$ErrorActionPreference = 'Stop'\nGet-Nothing\nWrite-Host after")
    host, outcome = run("Get-Command Get-Nothing -ErrorAction SilentlyContinue\nWrite-Host ok")
    assert outcome.ok
    assert host.text(Stream.OUTPUT) == []
    assert host.text(Stream.HOST) == ["ok"]


def test_exchange_errors_follow_only_their_own_error_action() -> None:
    # Implicit remoting does not apply $ErrorActionPreference to Exchange's cmdlets (hence the scripts'
    # -ErrorAction Stop on each): without it, a missing object is written and the script goes on.
    organization = MemoryOrganization.installed("MB1")
    script = "$ErrorActionPreference = 'Stop'\nGet-OwaVirtualDirectory -Identity 'MB9\\owa (Default Web Site)'\nWrite-Host after"
    host, outcome = run(script, organization)
    assert host.text(Stream.HOST) == ["after"]
    assert "couldn't be found" in outcome.errors[0]
    with pytest.raises(
        ScriptError,
        match=r"script\.ps1:2: .*Get-OwaVirtualDirectory: The operation couldn't be performed because object 'MB9",
    ):
        run(script.replace("Site)'", "Site)' -ErrorAction Stop"), organization)


def test_exchange_objects() -> None:
    organization = MemoryOrganization.installed("MB1", "MB2")
    script = r"""
$vd = Get-WebServicesVirtualDirectory -Identity 'mb2\EWS (Default Web Site)'
Write-Host $vd.Identity $vd.Server $vd.InternalUrl.Host $vd.InternalUrl.AbsoluteUri ($null -eq $vd.ExternalUrl)
Write-Host (Get-OwaVirtualDirectory).Count (Get-OwaVirtualDirectory -Server MB1).Identity
Write-Host (Get-OutlookAnywhere -Server mb1.alwayshotcafe.com).InternalHostname
Write-Host (Get-ClientAccessService MB2).AutoDiscoverServiceInternalUri
Write-Host (Get-ExchangeServer MB1).AdminDisplayVersion
Write-Host ([bool]$vd.PSObject.Properties['InternalUrl']) ([bool]$vd.PSObject.Properties['IsE15OrLater'])
"""
    assert _host_lines(script, organization) == [
        "MB2\\EWS (Default Web Site) MB2 mb2.alwayshotcafe.com https://mb2.alwayshotcafe.com/EWS/Exchange.asmx True",
        "2 MB1\\owa (Default Web Site)",
        "mb1.alwayshotcafe.com",
        "https://mb2.alwayshotcafe.com/Autodiscover/Autodiscover.xml",
        "Version 15.2 (Build 1544.4)",
        "True False",
    ]


def test_the_seed_style_pipeline_sets_what_it_reads() -> None:
    # The seed's step 2: Get-… -Server $server | Set-… -InternalUrl … -ExternalUrl …
    organization = MemoryOrganization.installed("MB1", "MB2")
    script = r"""
foreach ($server in @('MB1', 'MB2')) {
    $owa = (Get-OwaVirtualDirectory -Server $server).InternalUrl.AbsoluteUri
    $uni = $owa -replace $server, 'outlook'
    Get-OwaVirtualDirectory -Server $server | Set-OwaVirtualDirectory -InternalUrl $uni -ExternalUrl $uni -Confirm:$false
}
"""
    _, outcome = run(script, organization)
    assert outcome.ok
    assert [(s, c["Set"]["InternalUrl"]) for s, c in organization.changes] == [
        ("MB1", "https://outlook.alwayshotcafe.com/owa"),
        ("MB2", "https://outlook.alwayshotcafe.com/owa"),
    ]


def test_set_with_what_if_changes_nothing() -> None:
    organization = MemoryOrganization.installed("MB1")
    lines = _host_lines(
        "Set-ClientAccessService -Identity MB1 -AutoDiscoverServiceInternalUri 'https://a.b/Autodiscover/Autodiscover.xml' -WhatIf",
        organization,
    )
    assert lines == ['What if: Performing the operation "Set-ClientAccessService" on target "MB1".']
    assert organization.changes == []


def test_script_parameters() -> None:
    script = "param([switch]$WhatIf, [string]$Path = 'default.json', [string[]]$Server = @())\nWrite-Host $WhatIf $Path $Server.Count"
    assert _host_lines(script) == ["False default.json 0"]
    assert _host_lines(script, WhatIf=True, Path="x.json", Server=["MB1", "MB2"]) == ["True x.json 2"]
    with pytest.raises(ScriptError, match="A parameter cannot be found that matches parameter name 'Nope'"):
        run(script, None, {"Nope": 1})
