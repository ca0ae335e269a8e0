"""The seed's procedure end to end on real simulated servers (processes, HTTPS on 127.0.0.2-4), with
the artifacts an administrator runs: the collector takes the inventory, `namespace script` writes the
apply and rollback scripts, the lab's PowerShell runs them (`casarray lab inventory`, `casarray lab
apply`), `namespace verify` judges the settings, and `doctor --user` what a client is told through the
VIP (names from the lab's DNS server, the user logging on with the UPN)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from typer.testing import CliRunner, Result

from casarray.cli import app
from tests.integration.conftest import SIM_IPS, Lab
from tests.integration.test_doctor import start_dns
from tests.support import (
    DOMAIN,
    NAMESPACE,
    LoopThread,
    Proc,
    casarray,
    free_port,
    https_request,
    wait_until,
)

AUTODISCOVER = "autodiscover.alwayshotcafe.com"
USER, PASSWORD = f"alice@{DOMAIN}", "Passw0rd!"  # the UPN Outlook sends, as the lab's user file has it


def _casarray(cwd: Path, *args: str | Path) -> Result:
    """A casarray verb run in this process (the lab's servers are processes; every request is real)."""
    with contextlib.chdir(cwd):
        return CliRunner().invoke(app, [str(a) for a in args])


def _settings(lab: Lab, name: str) -> dict[str, Any]:
    address, port, _ = lab.sims[name]
    response = https_request(address, port, "/_sim/settings", lab.pki.ca, host=address)
    assert response.status == 200, response
    document: dict[str, Any] = json.loads(response.body)
    return document


def _urls(lab: Lab) -> dict[str, list[Any]]:
    """Every server's URLs, host names and SCP, from the servers themselves."""
    found: dict[str, list[Any]] = {}
    for name in lab.sims:
        document = _settings(lab, name)
        found[name] = [
            *((v["Type"], v["InternalUrl"], v["ExternalUrl"]) for v in document["VirtualDirectories"]),
            *((o["InternalHostname"], o["ExternalHostname"]) for o in document["OutlookAnywhere"]),
            *(c["AutoDiscoverServiceInternalUri"] for c in document["ClientAccessServices"]),
        ]
    return found


@contextlib.contextmanager
def _lab_dns(lab: Lab) -> Iterator[str]:
    """The lab's names on a DNS server (lab/dns.py): the namespace and Autodiscover on the VIP, each
    server's FQDN on its own address. Yields the --nameserver value."""
    records = {NAMESPACE: ["127.0.0.1"], AUTODISCOVER: ["127.0.0.1"]}
    records |= {f"{name.lower()}.{DOMAIN}": [address] for name, (address, _, _) in lab.sims.items()}
    loop = LoopThread()
    transport, _, port = cast("tuple[asyncio.DatagramTransport, object, int]", loop.run(start_dns(records)))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        transport.close()
        loop.close()


def _client_check(lab: Lab, config: Path, nameserver: str) -> tuple[int, dict[str, Any]]:
    """`casarray doctor --user` as a user would run it: the address, a password file, the lab's DNS."""
    password = lab.dir / "alice.password"
    password.write_text(PASSWORD + "\n")
    done = _casarray(
        lab.dir, "doctor", "-c", config, "--nameserver", nameserver, "--user", USER, "--password-file", password,
        "--json",
    )  # fmt: skip
    document: dict[str, Any] = json.loads(done.stdout)
    assert PASSWORD not in done.stdout
    return done.exit_code, document


def _told_server_names(document: dict[str, Any]) -> None:
    """The client check fails on exactly the URLs on the servers' own names, each told by that server,
    after Autodiscover itself was found through the VIP with the user's UPN log-on."""
    failing = [url for url in document["urls"] if url["status"] == "fail"]
    assert {urlsplit(url["url"]).hostname for url in failing} == {
        "mb1.alwayshotcafe.com",
        "mb2.alwayshotcafe.com",
        "mb3.alwayshotcafe.com",
    }
    for url in failing:
        server = urlsplit(url["url"]).hostname.split(".")[0].upper()  # type: ignore[union-attr]
        assert url["told_by"] == server, url
        assert "is not outlook.alwayshotcafe.com" in url["on_namespace"]
        assert url["via_vip"].startswith("no: → 127.0.0."), url  # the server itself, not the VIP
    assert [s for s in document["steps"] if s["status"] == "fail"] == []
    assert not any("authentication failed" in s["detail"] for s in document["steps"])


def test_the_seed_procedure_end_to_end(lab: Lab) -> None:
    users = lab.dir / "ntlm-users.txt"
    users.write_text(f"ALWAYSHOTCAFE:alice:{PASSWORD}\n")
    for i, address in enumerate(SIM_IPS):
        lab.sim(f"MB{i + 1}", address, "--ntlm-users", str(users), "--extended-protection")
    _, port = lab.balancer(f"autodiscover: {AUTODISCOVER}\n")
    config = lab.dir / f"balancer-{port}.yaml"
    names = ["-n", NAMESPACE, "--autodiscover", AUTODISCOVER, "--https-port", str(port)]
    installed = _urls(lab)
    assert ("Owa", "https://mb1.alwayshotcafe.com/owa", None) in installed["MB1"]
    with _lab_dns(lab) as nameserver:
        _the_procedure(lab, config, port, names, installed, nameserver)


def _the_procedure(
    lab: Lab, config: Path, port: int, names: list[str], installed: dict[str, list[Any]], nameserver: str
) -> None:
    # 1. As installed: the collector's inventory, and verify fails naming the servers' own URLs; so does
    #    the client's side, what Autodiscover tells alice through the VIP.
    done = _casarray(lab.dir, "lab", "inventory", "-c", config, "-o", "before.json")
    assert done.exit_code == 0, done.stderr
    assert "Reading MB1" in done.stdout
    assert "Reading MB3" in done.stdout
    done = _casarray(lab.dir, "namespace", "verify", "-i", "before.json", *names, "--json")
    assert done.exit_code == 1, done.stderr
    failed = [check for check in json.loads(done.stdout) if not check["ok"]]
    assert {"MB1", "MB2", "MB3"} == {check["server"] for check in failed}
    assert {
        "kind": "Owa",
        "property": "InternalUrl",
        "server": "MB2",
        "current": "https://mb2.alwayshotcafe.com/owa",
        "expected": NAMESPACE,
    }.items() <= next(c for c in failed if c["server"] == "MB2" and c["kind"] == "Owa").items()
    code, document = _client_check(lab, config, nameserver)
    assert code == 1
    _told_server_names(document)

    # 2. Plan and script, as today.
    done = _casarray(lab.dir, "namespace", "plan", "-i", "before.json", *names, "--json")
    assert done.exit_code == 0, done.stderr
    changes = [item for item in json.loads(done.stdout) if item["action"] == "change"]
    assert len(changes) == len(failed)
    done = _casarray(
        lab.dir,
        "namespace",
        "script",
        "-i",
        "before.json",
        *names,
        "-o",
        "apply.ps1",
        "--rollback",
        "rollback.ps1",
    )
    assert done.exit_code == 0, done.stderr

    # 3. The apply script with -WhatIf changes nothing; without it, everything.
    done = _casarray(lab.dir, "lab", "apply", "-c", config, "apply.ps1", "--what-if")
    assert done.exit_code == 0, done.stderr
    assert f"{len(changes)} settings would change, 0 already as wanted." in done.stdout
    assert _urls(lab) == installed
    done = _casarray(lab.dir, "lab", "apply", "-c", config, "apply.ps1")
    assert done.exit_code == 0, done.stderr
    assert f"{len(changes)} settings changed, 0 already as wanted." in done.stdout
    started = next(line for line in done.stdout.splitlines() if line.startswith("Transcript started"))
    transcript = Path(started.removeprefix("Transcript started, output file is ")).read_text()
    assert transcript.startswith("**********************\nPowerShell transcript start\n")
    assert f"{len(changes)} settings changed, 0 already as wanted." in transcript
    owa = f"https://{NAMESPACE}:{port}/owa"
    assert ("Owa", owa, owa) in _urls(lab)["MB3"]

    # 4. Verify passes on a new inventory.
    done = _casarray(lab.dir, "lab", "inventory", "-c", config, "-o", "after.json")
    assert done.exit_code == 0, done.stderr
    done = _casarray(lab.dir, "namespace", "verify", "-i", "after.json", *names)
    assert done.exit_code == 0, done.stdout + done.stderr
    assert "Every setting is on the namespace." in done.stdout

    # 5. The client's side: what Autodiscover tells alice through the VIP is on the namespace, and every
    #    URL answers through the VIP, from every server (Outlook 2016, Outlook without MAPI/HTTP, a phone,
    #    Autodiscover v2).
    code, document = _client_check(lab, config, nameserver)
    assert code == 0, [u for u in document["urls"] if u["status"] != "ok"]
    assert document["ok"] is True
    assert {u["on_namespace"] for u in document["urls"]} == {"yes"}
    assert {u["via_vip"] for u in document["urls"]} == {"yes"}
    assert {u["answered_by"] for u in document["urls"]} <= {"MB1", "MB2", "MB3"}
    protocols = {u["protocol"] for u in document["urls"]}
    assert {"mapiHttp MailStore InternalUrl", "EXCH EwsUrl", "EXPR Server", "MobileSync Url"} <= protocols
    rpc = next(u for u in document["urls"] if u["protocol"] == "EXPR Server")
    assert rpc["url"] == f"https://{NAMESPACE}:{port}/rpc/rpcproxy.dll"  # SSL required by the script

    # 6. Running the apply script again changes nothing; the rollback puts back what was installed.
    done = _casarray(lab.dir, "lab", "apply", "-c", config, "apply.ps1")
    assert done.exit_code == 0, done.stderr
    assert f"0 settings changed, {len(changes)} already as wanted." in done.stdout
    done = _casarray(lab.dir, "lab", "apply", "-c", config, "rollback.ps1")
    assert done.exit_code == 0, done.stderr
    assert _urls(lab) == installed
    done = _casarray(lab.dir, "lab", "inventory", "-c", config, "-o", "rolled-back.json")
    assert done.exit_code == 0, done.stderr
    assert (
        json.loads((lab.dir / "rolled-back.json").read_text())["VirtualDirectories"]
        == json.loads((lab.dir / "before.json").read_text())["VirtualDirectories"]
    )
    # 7. And the client is told the servers' own names again.
    code, document = _client_check(lab, config, nameserver)
    assert code == 1
    _told_server_names(document)


def test_a_change_a_server_refuses_ends_the_run_with_its_line(lab: Lab) -> None:
    lab.sims3()
    _, port = lab.balancer()
    config = lab.dir / f"balancer-{port}.yaml"
    assert _casarray(lab.dir, "lab", "inventory", "-c", config, "-o", "before.json").exit_code == 0
    done = _casarray(lab.dir, "namespace", "script", "-i", "before.json", "-n", NAMESPACE, "-o", "apply.ps1")
    assert done.exit_code == 0, done.stderr
    script = (lab.dir / "apply.ps1").read_text(encoding="utf-8-sig")
    # A hand edit: a host name Set-OutlookAnywhere refuses, on MB2.
    edited = script.replace(
        f"'InternalHostname' = '{NAMESPACE}'", "'InternalHostname' = 'not a host'", 2
    ).replace("'InternalHostname' = 'not a host'", f"'InternalHostname' = '{NAMESPACE}'", 1)
    (lab.dir / "edited.ps1").write_text(edited, encoding="utf-8-sig")
    installed_mb3 = _settings(lab, "MB3")
    done = _casarray(lab.dir, "lab", "apply", "-c", config, "edited.ps1")
    assert done.exit_code == 1
    line = next(i for i, text in enumerate(edited.splitlines(), 1) if "& $Set -Identity" in text)
    assert done.stderr.startswith(f"error: edited.ps1:{line}: & $Set -Identity $Identity @changes"), (
        done.stderr
    )
    assert "Set-OutlookAnywhere: MB2: InternalHostname: 'not a host' is not a valid DNS name" in done.stderr
    assert _settings(lab, "MB2")["OutlookAnywhere"][0]["InternalHostname"] == "mb2.alwayshotcafe.com"
    assert _settings(lab, "MB3") == installed_mb3  # the run stopped before MB3
    assert "Transcript stopped" in done.stdout  # the script's finally block ran


def _lab_ports() -> tuple[int, int]:
    """A balancer port on 127.0.0.1 and one sim port free on each of 127.0.0.2-4."""
    balancer = free_port()
    for _ in range(50):
        port = free_port("127.0.0.2")
        try:
            for address in ("127.0.0.3", "127.0.0.4"):
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        if port != balancer:
            return balancer, port
    raise AssertionError("no port free on each of 127.0.0.2-4")


def _start_lab(tmp_path: Path, *options: str) -> tuple[Proc, int, Path]:
    """`casarray lab` as a user starts it, on free ports (its DNS server too); waits until it runs and
    the namespace answers through the balancer. (The balancer's workers may still be starting when its
    port first accepts: a slow handshake is asked again.)"""
    port, sim_port = _lab_ports()
    directory = tmp_path / "lab-run"
    ports = ["--port", str(port), "--sim-port", str(sim_port), "--admin-port", "0"]
    dns = ["--dns-port", str(free_port(kind=socket.SOCK_DGRAM))]
    lab = Proc(casarray("lab", "--dir", str(directory), *ports, *dns, *options), tmp_path / "lab.log")
    lab.wait_log("lab running:", timeout=90)

    def answers() -> bool:
        try:
            response = https_request(
                "127.0.0.1", port, "/owa/healthcheck.htm", directory / "ca.pem", host=NAMESPACE
            )
        except OSError:
            return False
        return response.status == 200

    wait_until(answers, timeout=90, what="the namespace answering through the balancer")
    return lab, port, directory


def _client_check_as_printed(log: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run the client check exactly as the lab printed it (docs/lab.md: the seed's third step)."""
    (line,) = [line for line in log.splitlines() if " doctor -c " in line and " --user " in line]
    command, _, comment = line.strip().partition("     (")
    # A wide terminal, so that no URL is folded across lines of the table.
    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, env=env, timeout=300)
    assert PASSWORD not in done.stdout + done.stderr
    return comment, done


def test_the_lab_as_installed_fails_the_printed_client_check_naming_the_servers(tmp_path: Path) -> None:
    lab, _, directory = _start_lab(tmp_path, "--as-installed")
    try:
        log = lab.log
        assert "namespace-apply.ps1" not in log
        assert f"--user {USER} --password-file {directory / 'alice.password'}" in log
        comment, done = _client_check_as_printed(log)
        assert comment.startswith("fails: every server tells clients its own name")
        assert done.returncode == 1, done.stdout + done.stderr
        for server in ("mb1", "mb2", "mb3"):
            assert f"https://{server}.alwayshotcafe.com/EWS/Exchange.asmx" in done.stdout
        assert not done.stdout.rstrip().endswith(" 0 failures")
        assert "authentication failed" not in done.stdout  # alice logged on with the UPN
        assert "Test E-mail AutoConfiguration for alice@alwayshotcafe.com" in done.stdout
        # The balancer's side of the same lab is fine: names on the VIP, every server healthy.
        (line,) = [x for x in log.splitlines() if x.strip().endswith(" --nameserver " + _nameserver(log))]
        balancer_side = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=300)
        assert balancer_side.returncode == 0, balancer_side.stdout + balancer_side.stderr
    finally:
        assert lab.stop() == 0, lab.log


def _nameserver(log: str) -> str:
    return log.split(" --nameserver ", 1)[1].split()[0]


def test_the_default_lab_is_on_the_namespace_and_the_rollback_undoes_it(tmp_path: Path) -> None:
    lab, port, directory = _start_lab(tmp_path)
    try:
        log = lab.log
        assert f"namespace {NAMESPACE} applied by {directory / 'namespace-apply.ps1'}" in log
        assert "settings changed, 0 already as wanted" in log
        config = directory / "casarray.yaml"
        names = ["-n", NAMESPACE, "--autodiscover", AUTODISCOVER, "--https-port", str(port)]
        assert f"lab apply -c {config} {directory / 'namespace-rollback.ps1'}" in log
        done = _casarray(tmp_path, "lab", "inventory", "-c", config, "-o", "now.json")
        assert done.exit_code == 0, done.stderr
        assert _casarray(tmp_path, "namespace", "verify", "-i", "now.json", *names).exit_code == 0

        # The client's side, as the lab prints it: every URL on the namespace, through the VIP.
        comment, client = _client_check_as_printed(log)
        assert comment.startswith("passes")
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout.rstrip().endswith(" 0 failures")
        assert "mb1.alwayshotcafe.com" not in client.stdout

        done = _casarray(tmp_path, "lab", "apply", "-c", config, directory / "namespace-rollback.ps1")
        assert done.exit_code == 0, done.stderr
        assert _casarray(tmp_path, "lab", "inventory", "-c", config, "-o", "back.json").exit_code == 0
        done = _casarray(tmp_path, "namespace", "verify", "-i", "back.json", *names)
        assert done.exit_code == 1
        assert "mb1.alwayshotcafe.com" in done.stdout
        _, client = _client_check_as_printed(log)
        assert client.returncode == 1
        assert "https://mb2.alwayshotcafe.com/EWS/Exchange.asmx" in client.stdout
    finally:
        assert lab.stop() == 0, lab.log
