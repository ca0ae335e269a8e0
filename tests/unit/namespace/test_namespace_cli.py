"""`casarray namespace …` end to end through the command line: output, files and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import casarray
from casarray.cli.namespace import app

NS = "outlook.alwayshotcafe.com"
PLAN_KEYS = ["server", "kind", "identity", "property", "current", "target", "action"]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_help_on_every_verb() -> None:
    for verb in ("collector", "plan", "script", "verify", "dns"):
        result = run(verb, "--help")
        assert result.exit_code == 0, verb
        assert "Usage" in result.stdout


def test_collector_prints_the_script() -> None:
    result = run("collector")
    assert result.exit_code == 0
    assert result.stdout.startswith("<#\n.SYNOPSIS")
    assert "Get-OwaVirtualDirectory" in result.stdout


def test_collector_writes_a_file_with_a_bom(tmp_path: Path) -> None:
    out = tmp_path / "collect.ps1"
    result = run("collector", "-o", out)
    assert result.exit_code == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbf<#\r\n")
    assert "collect.ps1" in result.stdout


def test_plan_json(fixture_path: Callable[[str], Path]) -> None:
    result = run("plan", "--inventory", fixture_path("one-server.json"), "--namespace", NS, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 19
    assert all(list(row) == PLAN_KEYS for row in rows)
    owa = rows[0]
    assert owa == {
        "server": "MB1",
        "kind": "Owa",
        "identity": "MB1\\owa (Default Web Site)",
        "property": "InternalUrl",
        "current": "https://mb1.alwayshotcafe.com/owa",
        "target": f"https://{NS}/owa",
        "action": "change",
    }


def test_plan_table(fixture_path: Callable[[str], Path]) -> None:
    result = run("plan", "-i", fixture_path("two-servers-mb1corp.json"), "-n", "outlook.mb1corp.com")
    assert result.exit_code == 0
    assert "https://outlook.mb1corp.com/EWS/Exchange.asmx" in result.stdout
    assert "30 settings to change on 2 servers" in result.stdout
    assert "SCP" in result.stdout


def test_plan_of_unified_inventory(fixture_path: Callable[[str], Path]) -> None:
    result = run("plan", "-i", fixture_path("unified.json"), "-n", NS)
    assert result.exit_code == 0
    assert "Nothing to change" in result.stdout


def test_plan_internal_only_json(fixture_path: Callable[[str], Path]) -> None:
    result = run(
        "plan",
        "-i",
        fixture_path("eight-servers.json"),
        "-n",
        "mail.contoso.com",
        "--internal-only",
        "--json",
    )
    assert result.exit_code == 0
    assert {row["property"] for row in json.loads(result.stdout)} == {
        "InternalUrl",
        "InternalHostname",
        "AutoDiscoverServiceInternalUri",
    }


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "-n", NS),  # no --inventory
        ("plan", "-i", "x.json"),  # no namespace
        ("plan", "-i", "x.json", "-n", NS, "--internal-only", "--external-only"),
        ("plan", "-i", "x.json", "--internal-namespace", NS),  # no external name
        ("dns", "--namespace", NS),  # no --vip
        ("verify", "-i", "x.json", "-n", NS, "--bogus"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert run(*args).exit_code == 2


def test_missing_inventory_is_one_error_line(tmp_path: Path) -> None:
    result = run("plan", "-i", tmp_path / "none.json", "-n", NS)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "none.json: no such file" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"VirtualDirectories": [\n  {"Type": "Owa",}\n]}', "invalid JSON at line 2, column 18"),
        ('["not", "an", "object"]', "not an inventory"),
        ('{"VirtualDirectories": [{"Type": "Imap", "Server": "MB1", "Identity": "x"}]}', "unknown virtual"),
    ],
)
def test_bad_inventory_exits_1(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "inv.json"
    path.write_text(content, encoding="utf-8")
    for verb in ("plan", "script", "verify"):
        result = run(verb, "-i", path, "-n", NS)
        assert result.exit_code == 1, verb
        assert result.stderr.startswith(f"error: {path}: ")
        assert message in result.stderr
        assert result.stderr.count("\n") == 1


def test_bad_namespace_exits_1(fixture_path: Callable[[str], Path]) -> None:
    result = run("plan", "-i", fixture_path("one-server.json"), "-n", "out_look.contoso.com")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --namespace: 'out_look.contoso.com' is not a valid DNS name")


def test_script_writes_apply_and_rollback(fixture_path: Callable[[str], Path], tmp_path: Path) -> None:
    apply, rollback = tmp_path / "apply.ps1", tmp_path / "rollback.ps1"
    result = run(
        "script",
        "-i",
        fixture_path("two-servers-mb1corp.json"),
        "-n",
        "outlook.mb1corp.com",
        "-o",
        apply,
        "--rollback",
        rollback,
    )
    assert result.exit_code == 0
    assert "30 changes" in result.stdout
    apply_text = apply.read_text(encoding="utf-8-sig")
    assert "'ExternalUrl' = 'https://outlook.mb1corp.com/owa'" in apply_text
    assert apply.read_bytes().startswith(b"\xef\xbb\xbf")
    assert "'ExternalUrl' = $null" in rollback.read_text(encoding="utf-8-sig")


def test_script_to_stdout(fixture_path: Callable[[str], Path]) -> None:
    result = run("script", "-i", fixture_path("one-server.json"), "-n", NS)
    assert result.exit_code == 0
    assert result.stdout.startswith("<#\n.SYNOPSIS")
    assert "Set-OwaVirtualDirectory" in result.stdout


def test_script_unwritable_output_exits_1(fixture_path: Callable[[str], Path], tmp_path: Path) -> None:
    result = run("script", "-i", fixture_path("one-server.json"), "-n", NS, "-o", tmp_path / "no" / "a.ps1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_verify_passes_on_unified(fixture_path: Callable[[str], Path]) -> None:
    result = run("verify", "-i", fixture_path("unified.json"), "-n", NS)
    assert result.exit_code == 0
    assert "Every setting is on the namespace" in result.stdout


def test_verify_fails_and_lists_what_is_off(fixture_path: Callable[[str], Path]) -> None:
    result = run("verify", "-i", fixture_path("eight-servers.json"), "-n", "mail.contoso.com")
    assert result.exit_code == 1
    assert "off  EX05 Owa ExternalUrl: on webmail.contoso.com, not mail.contoso.com" in result.stdout
    assert "off  EX01" not in result.stdout


def test_verify_json(fixture_path: Callable[[str], Path]) -> None:
    result = run("verify", "-i", fixture_path("one-server-bom.json"), "-n", NS, "--json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert all(
        set(row) == {"server", "kind", "identity", "property", "current", "expected", "ok"} for row in rows
    )
    assert sum(not row["ok"] for row in rows) == 15
    ok = run("verify", "-i", fixture_path("unified.json"), "-n", NS, "--json")
    assert ok.exit_code == 0
    assert all(row["ok"] for row in json.loads(ok.stdout))


def test_dns() -> None:
    result = run(
        "dns", "-n", NS, "--vip", "10.0.1.250", "--autodiscover", "autodiscover.alwayshotcafe.com", "--srv"
    )
    assert result.exit_code == 0
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "outlook.alwayshotcafe.com. 3600 IN A 10.0.1.250" in lines
    assert "autodiscover.alwayshotcafe.com. 3600 IN A 10.0.1.250" in lines
    assert "_autodiscover._tcp.alwayshotcafe.com. 3600 IN SRV 0 0 443 outlook.alwayshotcafe.com." in lines
    assert any(
        line.startswith("Add-DnsServerResourceRecordA -ZoneName 'alwayshotcafe.com' -Name 'autodiscover'")
        for line in lines
    )


def test_dns_bad_vip_exits_1() -> None:
    result = run("dns", "-n", NS, "--vip", "10.0.1.256")
    assert result.exit_code == 1
    assert (
        result.stderr == "error: --vip: '10.0.1.256' is not an IP address "
        "(the balancer's virtual address, e.g. 10.0.1.250)\n"
    )


def _casarray(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m casarray …` in a child process, with this checkout's package importable."""
    env = {**os.environ, "PYTHONPATH": str(Path(casarray.__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "casarray", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_registered_under_casarray_namespace(fixture_path: Callable[[str], Path]) -> None:
    ok = _casarray("namespace", "verify", "-i", fixture_path("unified.json"), "-n", NS, "--json")
    assert ok.returncode == 0, ok.stderr
    off = _casarray("namespace", "verify", "-i", fixture_path("one-server.json"), "-n", NS, "--json")
    assert off.returncode == 1
    bad = _casarray("namespace", "plan", "-i", fixture_path("missing.json"), "-n", NS)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.startswith("error: ")
    assert bad.stderr.count("\n") == 1
    usage = _casarray("namespace", "dns", "-n", NS)
    assert usage.returncode == 2
