"""What `casarray init` writes runs as it is: `casarray check` accepts it, `casarray run` starts on it, and
`casarray ctl` reads and changes states with the token init generated — no edit in between."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from casarray.lab.pki import CertFiles
from tests.integration.conftest import Lab
from tests.support import NAMESPACE, Proc, casarray, free_port

SERVERS = {"MB1": "127.0.0.2", "MB2": "127.0.0.3"}


def _inventory(path: Path) -> Path:
    vdirs = [
        {"Type": kind, "Server": name, "Identity": f"{name}\\{kind}"}
        for name in SERVERS
        for kind in ("Owa", "WebServices", "Mapi")
    ]
    path.write_text(
        json.dumps(
            {
                # Get-ExchangeServer's Fqdn; addresses here so nothing depends on a resolver
                "Servers": [{"Name": name, "Fqdn": address} for name, address in SERVERS.items()],
                "VirtualDirectories": vdirs,
            }
        )
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        casarray(*args), capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )


@pytest.mark.slow
def test_the_generated_config_runs_and_ctl_works_with_the_generated_token(lab: Lab, pki: CertFiles) -> None:
    config = lab.dir / "casarray.yaml"
    port, admin = free_port(), free_port()
    made = _cli(
        "init",
        "-i",
        str(_inventory(lab.dir / "inventory.json")),
        "-n",
        NAMESPACE,
        "--vip",
        "127.0.0.1",
        "--https-port",
        str(port),
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--ca",
        str(pki.ca),
        "-o",
        str(config),
    )
    assert made.returncode == 0, made.stderr
    token = (lab.dir / "admin.token").read_text().strip()
    assert token not in made.stdout + made.stderr

    checked = _cli("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr

    proc = Proc(casarray("run", "-c", str(config)), lab.dir / "run.log")
    lab.procs.append(proc)
    proc.wait_log("admin API and dashboard on")

    status = _cli("ctl", "-c", str(config), "status")
    assert status.returncode == 0, status.stderr
    assert "MB1" in status.stdout
    assert "MB2" in status.stdout

    # A change needs the token: the generated one is read from admin.token_file, a wrong one is refused.
    wrong = lab.dir / "wrong.token"
    wrong.write_text("not-the-token\n")
    refused = _cli("ctl", "-c", str(config), "--token-file", str(wrong), "drain", "MB2")
    assert refused.returncode == 1
    assert "401" in refused.stderr or "token" in refused.stderr
    drained = _cli("ctl", "-c", str(config), "drain", "MB1")
    assert drained.returncode == 0, drained.stderr
    after = _cli("ctl", "-c", str(config), "status")
    assert after.returncode == 0, after.stderr
    row = next(line for line in after.stdout.splitlines() if "MB1" in line)
    assert "drain" in row
    assert token not in proc.log
