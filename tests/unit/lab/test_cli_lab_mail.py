"""`casarray sim-cas --imap …` argument errors: one `error:` line, exit 1, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--imaps", "70000"], "error: --imaps 70000: port must be 1..65535"),
        (["--submission", "0"], "error: --submission 0: port must be 1..65535"),
        (["--imap", "8443"], "error: each mail port must differ from the others and from the --listen port"),
        (["--pop3", "10110", "--smtp", "10110"], "error: each mail port must differ"),
    ],
)
def test_sim_cas_bad_mail_ports(app: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app,
        ["sim-cas", "--name", "MB1", "--listen", "127.0.0.2:8443",
         "--cert", str(tmp_path / "no.pem"), "--key", str(tmp_path / "no.key"), *args],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_lab_help_mentions_mail(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["lab", "--help"])
    assert result.exit_code == 0
    assert "--mail" in result.output
