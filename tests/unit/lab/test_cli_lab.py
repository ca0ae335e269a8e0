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
