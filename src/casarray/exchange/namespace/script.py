"""The apply and rollback scripts: a plan's changes as PowerShell for the Exchange Management Shell.

Both scripts hold only the settings the plan changes. Each object is read with its Get- cmdlet and
set only where a property is not yet the wanted value, so a second run changes nothing; a `-WhatIf`
switch is passed to every Set- cmdlet; `$ErrorActionPreference = 'Stop'` ends the run at the first
error and Start-Transcript records it. The rollback script sets the values the inventory recorded,
$null included.

The SCP is set with the cmdlet the server's version has: Set-ClientAccessServer on Exchange 2013
(15.0), Set-ClientAccessService from 2016 (15.1) on. Every cmdlet a script calls is looked up before
its first change, so a shell without one of them stops the run before anything changed, never after
a server's virtual directories were already moved.

Every value written into a script is quoted by casarray.exchange.namespace.powershell.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from casarray.exchange import catalog
from casarray.exchange.namespace.inventory import (
    CLIENT_ACCESS_KIND,
    OUTLOOK_ANYWHERE,
    Inventory,
    OutlookAnywhere,
    client_access_cmdlets,
)
from casarray.exchange.namespace.plan import (
    EXTERNAL_HOSTNAME,
    INTERNAL_HOSTNAME,
    Plan,
    PlanItem,
    Targets,
)
from casarray.exchange.namespace.powershell import ps_bool, ps_comment, ps_string

_OUTLOOK_ANYWHERE = catalog.get("rpc")
# Set-OutlookAnywhere pairs each host name with its ClientsRequireSsl flag in Microsoft's examples. The
# apply script sets it to $true: with $false Autodiscover tells Outlook `<SSL>Off</SSL>` and Outlook
# Anywhere goes to http://<namespace>/rpc, which the VIP does not serve (it only redirects http; plan
# rule 1). The rollback puts back the inventory's value.
_REQUIRE_SSL = {
    INTERNAL_HOSTNAME: "InternalClientsRequireSsl",
    EXTERNAL_HOSTNAME: "ExternalClientsRequireSsl",
}


@dataclass(frozen=True, slots=True)
class _Update:
    """The properties of one object the script sets, with the cmdlets that read and set it."""

    server: str
    identity: str
    get_cmdlet: str
    set_cmdlet: str
    wanted: tuple[tuple[str, str | None], ...]
    with_flags: tuple[tuple[str, bool], ...]


def write_script(path: Path, text: str) -> None:
    """Save a script as the Exchange Management Shell reads it: Windows PowerShell 5.1 reads a .ps1
    without a BOM in the ANSI code page, so the BOM keeps any non-ASCII name intact
    (about_Character_Encoding); CRLF line ends, as Windows tools expect."""
    path.write_text(text, encoding="utf-8-sig", newline="\r\n")


def apply_script(plan: Plan, inventory: Inventory) -> str:
    """The script that makes every change of `plan`."""
    updates = list(_updates(plan, inventory, rollback=False))
    return _render(
        updates,
        log_name="casarray-apply",
        nothing="Nothing to change: every setting is already on the namespace.",
        synopsis=f"Moves Exchange client access to {_describe(plan.targets)}.",
        description=[
            f"Written by 'casarray namespace script' from {inventory.source}:",
            f"{_count(updates)} on {_servers(updates)}.",
            "Each setting is read first and set only when it is not yet the wanted value, so running",
            "the script again changes nothing. Collect a new inventory afterwards and run",
            "'casarray namespace verify' to check the result.",
        ],
    )


def rollback_script(plan: Plan, inventory: Inventory) -> str:
    """The script that puts back what the inventory recorded for every change of `plan`."""
    updates = list(_updates(plan, inventory, rollback=True))
    return _render(
        updates,
        log_name="casarray-rollback",
        nothing="Nothing to restore: the plan changes no setting.",
        synopsis="Restores the Exchange client-access settings recorded in the inventory.",
        description=[
            f"Written by 'casarray namespace script' from {inventory.source}:",
            f"{_count(updates)} on {_servers(updates)} go back to the inventory's values",
            "(settings that were empty are cleared with $null).",
        ],
    )


def _updates(plan: Plan, inventory: Inventory, *, rollback: bool) -> Iterator[_Update]:
    """One update per object with changes, in plan order."""
    groups: dict[tuple[str, str, str], list[PlanItem]] = {}
    for item in plan.changes:
        groups.setdefault((item.server, item.kind, item.identity), []).append(item)
    for (server, kind, identity), items in groups.items():
        get_cmdlet, set_cmdlet = _cmdlets(kind, inventory.version_of(server))
        wanted = tuple((i.property, i.current if rollback else i.target) for i in items)
        flags: tuple[tuple[str, bool], ...] = ()
        if kind == OUTLOOK_ANYWHERE:
            flags = _require_ssl(
                _find_outlook_anywhere(inventory, server, identity),
                [i.property for i in items],
                rollback=rollback,
            )
        yield _Update(server, identity, get_cmdlet, set_cmdlet, wanted, flags)


def _cmdlets(kind: str, version: str | None) -> tuple[str, str]:
    if kind == CLIENT_ACCESS_KIND:
        return client_access_cmdlets(version)
    service = _OUTLOOK_ANYWHERE if kind == OUTLOOK_ANYWHERE else catalog.BY_INVENTORY_TYPE[kind]
    return service.get_cmdlet, service.set_cmdlet


def _find_outlook_anywhere(inventory: Inventory, server: str, identity: str) -> OutlookAnywhere | None:
    for oa in inventory.outlook_anywhere:
        if oa.server == server and oa.identity == identity:
            return oa
    return None


def _require_ssl(
    oa: OutlookAnywhere | None, properties: Iterable[str], *, rollback: bool
) -> tuple[tuple[str, bool], ...]:
    flags = []
    for prop in properties:
        if not rollback:
            flags.append((_REQUIRE_SSL[prop], True))
            continue
        recorded = None
        if oa is not None:
            recorded = (
                oa.internal_clients_require_ssl
                if prop == INTERNAL_HOSTNAME
                else oa.external_clients_require_ssl
            )
        if recorded is not None:
            flags.append((_REQUIRE_SSL[prop], recorded))
    return tuple(flags)


def _render(
    updates: list[_Update], *, log_name: str, nothing: str, synopsis: str, description: list[str]
) -> str:
    lines = [
        "<#",
        ".SYNOPSIS",
        f"    {ps_comment(synopsis)}",
        ".DESCRIPTION",
        *(f"    {ps_comment(line)}" for line in description),
        "    It stops at the first error and records the run with Start-Transcript.",
        "    Run it in the Exchange Management Shell; try it with -WhatIf first.",
        ".PARAMETER WhatIf",
        "    Passed to every Set- cmdlet: show what would change without changing anything.",
        ".PARAMETER TranscriptPath",
        f"    The transcript file; default: {log_name}-<date>.log next to this script.",
        "#>",
        "param(",
        "    [switch]$WhatIf,",
        "    [string]$TranscriptPath = ''",
        ")",
        "",
        "$ErrorActionPreference = 'Stop'",
        "$script:Changed = 0",
        "$script:Unchanged = 0",
        "",
        _HELPERS,
        "",
        "if (-not $TranscriptPath) {",
        "    $folder = if ($PSScriptRoot) { $PSScriptRoot } else { (Get-Location).Path }",
        f"    $TranscriptPath = Join-Path $folder ('{log_name}-{{0:yyyyMMdd-HHmmss}}.log' -f (Get-Date))",
        "}",
        "Start-Transcript -Path $TranscriptPath",
        "try {",
    ]
    if not updates:
        lines.append(f"    Write-Host {ps_string(nothing)}")
    else:
        cmdlets = dict.fromkeys(c for u in updates for c in (u.get_cmdlet, u.set_cmdlet))
        lines += [
            "    # Every cmdlet this script calls, looked up before the first change.",
            "    $missing = @(@(",
            *(
                f"            {ps_string(c)}{',' if i < len(cmdlets) - 1 else ''}"
                for i, c in enumerate(cmdlets)
            ),
            "        ) | Where-Object { -not (Get-Command $_ -ErrorAction SilentlyContinue) })",
            "    if ($missing.Count -gt 0) {",
            "        throw ('Not available in this shell: ' + ($missing -join ', ') + '. Run this script in the ' +",
            "            'Exchange Management Shell of a server that has them; nothing was changed.')",
            "    }",
        ]
    server = None
    for update in updates:
        if update.server != server:
            server = update.server
            lines += ["", f"    Write-Host {ps_string(server)}"]
        lines += _update_call(update)
    lines += [
        "",
        "    $verb = if ($WhatIf) { 'would change' } else { 'changed' }",
        "    Write-Host ('{0} settings {1}, {2} already as wanted.' -f",
        "        $script:Changed, $verb, $script:Unchanged)",
        "} finally {",
        "    Stop-Transcript",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _update_call(update: _Update) -> list[str]:
    lines = [
        f"    Update-CasSetting -Get {ps_string(update.get_cmdlet)} -Set {ps_string(update.set_cmdlet)} `",
        f"        -Identity {ps_string(update.identity)} `",
        "        -Wanted ([ordered]@{",
        *(f"            {ps_string(name)} = {ps_string(value)}" for name, value in update.wanted),
    ]
    if update.with_flags:
        lines += [
            "        }) `",
            "        -With ([ordered]@{",
            *(f"            {ps_string(name)} = {ps_bool(value)}" for name, value in update.with_flags),
        ]
    lines.append("        })")
    return lines


# The two functions every script shares. Test-CasValue mirrors plan.same_url: scheme and host compare
# case-insensitively (-eq), the rest exactly (-ceq); host names compare case-insensitively.
_HELPERS = r"""function Test-CasValue {
    # True when a setting already holds the wanted value.
    param([AllowNull()][object]$Current, [AllowNull()][object]$Wanted)
    $currentText = if ($null -eq $Current) { '' } else { $Current.ToString() }
    $wantedText = if ($null -eq $Wanted) { '' } else { $Wanted.ToString() }
    if ($wantedText -eq '' -or $currentText -eq '') { return ($wantedText -eq $currentText) }
    if ($wantedText -notmatch '^[A-Za-z][A-Za-z0-9+.-]*://') { return ($currentText -eq $wantedText) }
    $currentUri = $null
    if (-not [Uri]::TryCreate($currentText, [UriKind]::Absolute, [ref]$currentUri)) { return $false }
    $wantedUri = [Uri]$wantedText
    return ($currentUri.Scheme -eq $wantedUri.Scheme) -and
        ($currentUri.Host -eq $wantedUri.Host) -and
        ($currentUri.Port -eq $wantedUri.Port) -and
        ($currentUri.UserInfo -ceq $wantedUri.UserInfo) -and
        ($currentUri.PathAndQuery -ceq $wantedUri.PathAndQuery) -and
        ($currentUri.Fragment -ceq $wantedUri.Fragment)
}

function Update-CasSetting {
    # Reads one object and sets only the properties that are not yet the wanted value.
    param(
        [Parameter(Mandatory = $true)][string]$Get,
        [Parameter(Mandatory = $true)][string]$Set,
        [Parameter(Mandatory = $true)][string]$Identity,
        [Parameter(Mandatory = $true)][System.Collections.IDictionary]$Wanted,
        [System.Collections.IDictionary]$With = @{}
    )
    # -ErrorAction Stop on each Exchange cmdlet: implicit remoting ignores $ErrorActionPreference.
    $object = & $Get -Identity $Identity -ErrorAction Stop
    $changes = @{}
    foreach ($name in $Wanted.Keys) {
        $current = $object.$name
        if (Test-CasValue $current $Wanted[$name]) {
            Write-Host ("  ok      {0} {1} = {2}" -f $Identity, $name, $current)
            $script:Unchanged++
        } else {
            Write-Host ("  change  {0} {1}: '{2}' -> '{3}'" -f $Identity, $name, $current, $Wanted[$name])
            $changes[$name] = $Wanted[$name]
        }
    }
    if ($changes.Count -eq 0) { return }
    foreach ($name in $With.Keys) { $changes[$name] = $With[$name] }
    & $Set -Identity $Identity @changes -WhatIf:$script:WhatIf -ErrorAction Stop
    $script:Changed += $changes.Count - $With.Count
}"""


def _describe(targets: Targets) -> str:
    if targets.internal == targets.external or targets.external is None:
        text = f"the namespace {targets.internal}"
        if targets.external is None:
            text += " (internal URLs only)"
    elif targets.internal is None:
        text = f"the namespace {targets.external} (external URLs only)"
    else:
        text = f"the namespaces {targets.internal} (internal) and {targets.external} (external)"
    if targets.scp_host is not None:
        text += f", Autodiscover SCP on {targets.scp_host}"
    return text


def _count(updates: list[_Update]) -> str:
    total = sum(len(u.wanted) for u in updates)
    return f"{total} setting{'s' if total != 1 else ''}"


def _servers(updates: list[_Update]) -> str:
    total = len({u.server.lower() for u in updates})
    return f"{total} server{'s' if total != 1 else ''}"
