"""`casarray ctl health` against a real `casarray run`: running, listener accepting, every pool served;
the fast path (`--admin URL`) and the full command (`-c FILE`) give the same verdict."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from casarray.cli.health import check
from casarray.lab.pki import CertFiles
from tests.integration.conftest import in_loop
from tests.integration.test_admin import AdminLab
from tests.support import casarray, free_port, wait_until


@pytest.fixture
def lab(tmp_path: Path, pki: CertFiles) -> Iterator[AdminLab]:
    with in_loop(AdminLab, tmp_path, pki) as lab:
        lab.start_sims(3)
        yield lab


def health(*args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"} if importtime else None  # -X importtime
    return subprocess.run(
        casarray("ctl", "health", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def imported(run: subprocess.CompletedProcess[str]) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    }


def set_service(lab: AdminLab, name: str, service: str, up: bool) -> None:
    sim = lab.sims[name]

    async def flip() -> None:
        sim.state.set_service(service, up)

    lab.loop.run(flip())


def test_a_healthy_node_passes_and_the_fast_path_imports_no_framework(lab: AdminLab) -> None:
    lab.balancer(workers=1)
    fast = health("--admin", lab.admin_url, "--exit-code", importtime=True)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    line = fast.stdout.strip()
    assert line.startswith(f"ok: listener 127.0.0.1:{lab.port} accepts; 9 pools")
    assert "\n" not in line
    # The fast path: neither typer, httpx nor pydantic (each costs more CPU than the whole check).
    assert not {"typer", "httpx", "pydantic", "rich", "ruamel.yaml"} & imported(fast)
    full = health("-c", str(lab.config), "--exit-code", importtime=True)
    assert full.returncode == 0, full.stderr
    assert "typer" in imported(full)
    assert full.stdout.strip() == line
    data = json.loads(health("--admin", lab.admin_url, "--json").stdout)
    assert data["ok"] is True
    assert data["listener"] == {"address": f"127.0.0.1:{lab.port}", "accepts": True, "note": ""}
    assert data["pools"]["ews"] == ["MB1", "MB2", "MB3"]


def test_a_pool_without_a_server_fails_and_service_narrows_what_is_required(lab: AdminLab) -> None:
    lab.balancer(workers=1)
    for name in lab.sims:
        set_service(lab, name, "ews", False)
    wait_until(lambda: not check(lab.admin_url, None).ok, 15, what="ews down on every server")
    failed = health("--admin", lab.admin_url, "--exit-code")
    assert failed.returncode == 1
    assert (
        failed.stdout.strip() == "fail: no server takes new traffic for ews (down, drained or in maintenance)"
    )
    # Without --exit-code the verdict is printed and the status is 0 (a report, not a check).
    assert health("--admin", lab.admin_url).returncode == 0
    narrowed = health("--admin", lab.admin_url, "--service", "owa", "-s", "MAPI", "--exit-code")
    assert narrowed.returncode == 0, narrowed.stdout
    assert "owa, mapi: each has a server" in narrowed.stdout
    unknown = health("--admin", lab.admin_url, "-s", "nope", "--exit-code")
    assert unknown.returncode == 1
    assert "no pool or service 'nope'" in unknown.stdout
    set_service(lab, "MB2", "ews", True)
    wait_until(lambda: check(lab.admin_url, None).ok, 15, what="ews back on MB2")
    assert "(fewest: ews 1 of 3)" in health("--admin", lab.admin_url).stdout


def test_draining_every_server_fails_the_node(lab: AdminLab) -> None:
    lab.balancer(workers=1)
    for name in lab.sims:
        assert lab.api("POST", f"/api/servers/{name}/drain").status_code == 200
    failed = health("--admin", lab.admin_url, "--exit-code")
    assert failed.returncode == 1
    assert "no server takes new traffic for 9 pools (owa, ecp, ews, …)" in failed.stdout
    assert lab.api("POST", "/api/servers/MB3/ready").status_code == 200
    assert health("--admin", lab.admin_url, "--exit-code").returncode == 0


def test_l4_has_one_pool_for_the_listener(lab: AdminLab) -> None:
    lab.balancer(mode="l4", workers=1)
    set_service(lab, "MB1", "ews", False)  # l4 cannot tell services apart: MB1 leaves the l4 pool
    wait_until(lambda: check(lab.admin_url, None).detail["pools"]["l4"] == ["MB2", "MB3"], 15, what="MB1 out")
    ok = health("--admin", lab.admin_url, "--exit-code")
    assert ok.returncode == 0
    assert "l4: each has a server (fewest: l4 2 of 3)" in ok.stdout
    for name in ("MB2", "MB3"):
        set_service(lab, name, "oab", False)
    wait_until(lambda: not check(lab.admin_url, None).ok, 15, what="no server for l4")
    assert health("--admin", lab.admin_url, "-s", "ews", "--exit-code").stdout.startswith(
        "fail: no server takes new traffic for l4"
    )


def test_not_running_and_refusing_admin_apis_fail_with_one_line(lab: AdminLab, tmp_path: Path) -> None:
    port = free_port()
    down = health("--admin", f"http://127.0.0.1:{port}", "--exit-code")
    assert down.returncode == 1
    assert down.stdout.strip() == (
        f"fail: casarray is not running here: the admin API at http://127.0.0.1:{port} does not answer "
        "(connection refused)"
    )
    proc = lab.balancer(workers=1)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    refused = health("--admin", lab.admin_url, "--token-file", str(wrong), "--exit-code")
    assert refused.returncode == 1
    assert refused.stdout.strip() == (
        f"fail: the admin API at {lab.admin_url} answered 401 Unauthorized: wrong token (see admin.token_file)"
    )
    assert (
        health("--admin", lab.admin_url, "--token-file", str(lab.token_file), "--exit-code").returncode == 0
    )
    proc.stop()
    stopped = health("-c", str(lab.config), "--exit-code")
    assert stopped.returncode == 1
    assert "casarray is not running here" in stopped.stdout


def test_a_listener_that_does_not_accept_fails(lab: AdminLab) -> None:
    """The listener step on its own: a port nobody listens on refuses, one that listens accepts."""
    from casarray.cli.health import _probe_listener

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert _probe_listener(f"127.0.0.1:{listening.getsockname()[1]}", 2.0) == (True, "")
    closed = free_port()
    assert _probe_listener(f"127.0.0.1:{closed}", 2.0) == (False, "connection refused")
    # Not held here (TEST-NET-1 is no local address): not probed rather than reaching another host.
    accepts, note = _probe_listener("192.0.2.10:443", 2.0)
    assert accepts is None
    assert "not held by this host" in note
    assert _probe_listener("0.0.0.0:0", 2.0) == (None, "not probed (port 0: any free port)")
