"""`casarray sim-cas` / `casarray lab` argument errors: one `error:` line, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nowhere"], "error: --listen 'nowhere': expected HOST:PORT"),
        (["--listen", "mb1:8443"], "is not an IP address"),
        (["--listen", "127.0.0.2:0"], "error: tls: cannot read"),
    ],
)
def test_sim_cas_bad_input(app: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "sim-cas",
            "--name",
            "MB1",
            "--cert",
            str(tmp_path / "no.pem"),
            "--key",
            str(tmp_path / "no.key"),
            *args,
        ],
    )
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_sim_cas_unusable_users_file(app: typer.Typer, tmp_path: Path) -> None:
    from casarray.lab.pki import make_lab_pki

    files = make_lab_pki(tmp_path)
    users = tmp_path / "users.txt"
    users.write_text("just-a-name\n")
    result = CliRunner().invoke(
        app,
        [
            "sim-cas",
            "--name",
            "MB1",
            "--listen",
            "127.0.0.2:0",
            "--cert",
            str(files.certificate),
            "--key",
            str(files.key),
            "--ntlm-users",
            str(users),
        ],
    )
    assert result.exit_code == 1
    assert "line 1: expected DOMAIN:user:password" in result.output


def test_lab_bad_port(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lab", "--dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert "error: port 0: expected 1..65535" in result.output


def test_lab_bad_mode_is_a_usage_error(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lab", "--dir", str(tmp_path), "--mode", "l5"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("try {\n  Write-Host 1\n", "error: bad.ps1:2: does not parse: line 2, column 15: missing '}'"),
        ("Write-Host 'first'\nwhile ($true) { }\n", "error: bad.ps1:2: while ($true) { }: not supported by"),
        ("Write-Host \xe9t\xe9\n", "bad.ps1: not valid UTF-8: found byte 0xe9 at line 1, column 12"),
    ],
)
def test_lab_apply_refuses_a_script_it_cannot_run(
    app: typer.Typer, tmp_path: Path, script: str, message: str
) -> None:
    # No server is reached: the script stops before its first Exchange cmdlet.
    config = tmp_path / "casarray.yaml"
    config.write_text("namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 127.0.0.2}\n")
    (tmp_path / "bad.ps1").write_bytes(script.encode("latin-1"))
    result = CliRunner().invoke(app, ["lab", "apply", "-c", str(config), str(tmp_path / "bad.ps1")])
    assert result.exit_code == 1, result.output
    assert message in result.stderr
