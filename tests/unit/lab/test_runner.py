"""`casarray lab` planning: the config it writes, the commands it runs, the lines it prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from casarray.config import parse_config
from casarray.exchange import catalog
from casarray.lab import LabError
from casarray.lab.runner import (
    LAB_USER,
    balancer_command,
    dns_records,
    plan,
    prepare,
    render_config,
    sim_command,
    try_lines,
)


def test_plan_puts_three_servers_on_127_0_0_2_to_4(tmp_path: Path) -> None:
    p = plan(tmp_path, port=9443, mode="l4", sim_port=10443)
    assert [(s.name, s.address, s.port) for s in p.servers] == [
        ("MB1", "127.0.0.2", 10443),
        ("MB2", "127.0.0.3", 10443),
        ("MB3", "127.0.0.4", 10443),
    ]
    assert (p.namespace, p.autodiscover) == ("outlook.alwayshotcafe.com", "autodiscover.alwayshotcafe.com")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "l5"}, "mode"),
        ({"port": 0}, "port 0"),
        ({"sim_port": 70000}, "sim port"),
        ({"dns_port": 65536}, "DNS port 65536"),
    ],
)
def test_plan_rejects_bad_input(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LabError, match=message):
        plan(tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["l4", "l7"])
def test_config_is_valid_for_the_balancer(tmp_path: Path, mode: str) -> None:
    p = plan(tmp_path / "dir with space", port=18443, mode=mode)  # type: ignore[arg-type]
    config = parse_config(render_config(p), "lab.yaml")
    assert config.namespace == "outlook.alwayshotcafe.com"
    assert config.autodiscover == "autodiscover.alwayshotcafe.com"
    assert config.mode == mode
    assert (config.listen.address, config.listen.https_port) == ("127.0.0.1", 18443)
    assert config.tls is not None
    assert Path(config.tls.certificate) == (tmp_path / "dir with space" / "server.pem").resolve()
    assert Path(config.tls.key) == (tmp_path / "dir with space" / "server.key").resolve()
    assert Path(str(config.upstream_tls.ca)) == (tmp_path / "dir with space" / "ca.pem").resolve()
    assert [(s.name, s.address, s.port) for s in config.servers] == [
        ("MB1", "127.0.0.2", 8443),
        ("MB2", "127.0.0.3", 8443),
        ("MB3", "127.0.0.4", 8443),
    ]
    assert config.health.interval == 2.0
    assert config.admin is not None
    assert config.admin.listen == "127.0.0.1:9090"  # the lab shows the dashboard


def test_commands(tmp_path: Path) -> None:
    p = plan(tmp_path, sim_port=8443)
    mb2 = p.servers[1]
    command = sim_command(p, mb2)
    assert command[:4] == [sys.executable, "-m", "casarray", "sim-cas"]
    assert command[command.index("--name") + 1] == "MB2"
    assert command[command.index("--listen") + 1] == "127.0.0.3:8443"
    assert command[command.index("--cert") + 1] == str(p.certificate)
    assert command[command.index("--ntlm-users") + 1] == str(p.users)
    assert "--ntlm-users" not in sim_command(plan(tmp_path, ntlm=False), mb2)
    assert balancer_command(p) == [sys.executable, "-m", "casarray", "run", "-c", str(p.config)]


def test_prepare_writes_pki_users_and_config(tmp_path: Path) -> None:
    p = plan(tmp_path / "lab")
    files = prepare(p)
    assert files.certificate == p.certificate
    assert files.ca == p.ca
    assert p.users.read_text() == ":".join(LAB_USER) + "\n"
    assert p.password_file.read_text() == LAB_USER[2] + "\n"  # for doctor --user --password-file
    assert p.password_file.stat().st_mode & 0o077 == 0
    assert p.config.read_text() == render_config(p)
    bare = plan(tmp_path / "bare", ntlm=False)
    prepare(bare)
    assert not bare.password_file.exists()


def test_the_lab_dns_serves_the_names_on_the_vip_and_each_server_on_its_address(tmp_path: Path) -> None:
    found = [(r.name, r.type, r.data) for r in dns_records(plan(tmp_path))]
    assert found == [
        ("outlook.alwayshotcafe.com", "A", "127.0.0.1"),
        ("autodiscover.alwayshotcafe.com", "A", "127.0.0.1"),
        ("mb1.alwayshotcafe.com", "A", "127.0.0.2"),
        ("mb2.alwayshotcafe.com", "A", "127.0.0.3"),
        ("mb3.alwayshotcafe.com", "A", "127.0.0.4"),
    ]


def test_the_client_check_lines(tmp_path: Path) -> None:
    """The lab prints doctor's two checks with its DNS server, and the client's with alice's password file;
    as installed it says the client check fails until the apply script has run."""
    p = plan(tmp_path, port=9443, dns_port=5353)
    lines = [line.strip() for line in try_lines(p)]
    doctor = f"doctor -c {p.config} --nameserver 127.0.0.1:5353"
    assert any(line.endswith(doctor) for line in lines)
    (user,) = [line for line in lines if " --user " in line]
    assert user.split(" ", 1)[1].startswith(
        f"{doctor} --user alice@alwayshotcafe.com --password-file {p.password_file}     (passes"
    )
    (user,) = [line for line in try_lines(plan(tmp_path, as_installed=True)) if " --user " in line]
    assert "(fails: every server tells clients its own name; passes after the apply script)" in user
    (user,) = [line for line in try_lines(plan(tmp_path, ntlm=False, dns_port=0)) if " --user " in line]
    assert "--password-file" not in user
    assert "--nameserver" not in user


def test_try_lines_use_resolve_cacert_and_catalog_paths(tmp_path: Path) -> None:
    p = plan(tmp_path, port=9443)
    text = "\n".join(try_lines(p))
    assert (
        f"curl -si --resolve outlook.alwayshotcafe.com:9443:127.0.0.1 --cacert {p.ca} "
        f"https://outlook.alwayshotcafe.com:9443{catalog.get('owa').health_path}"
    ) in text
    assert f"curl -X POST --cacert {p.ca} https://127.0.0.3:8443/_sim/service/ews/down" in text
    assert "--ntlm -u 'ALWAYSHOTCAFE\\alice:Passw0rd!'" in text
    # True whatever the number of workers: a spread over a few connections, not a change per request.
    assert "X-FEServer changes per" not in text
    assert "they spread over MB1, MB2, MB3" in text
    assert "for i in 1 2 3 4 5 6; do curl -si" in text
    assert "--ntlm" not in "\n".join(try_lines(plan(tmp_path, ntlm=False)))
    assert "each curl is a new connection" in "\n".join(try_lines(plan(tmp_path, mode="l4")))


def test_the_namespace_procedure_lines(tmp_path: Path) -> None:
    """By default the lab is on the namespace and says how to check and undo it; --as-installed prints the
    procedure step by step, with the options that fit this lab (its balancer's port in the URLs)."""
    configured = "\n".join(try_lines(plan(tmp_path, port=9443)))
    assert "lab apply -c" in configured
    assert "namespace-rollback.ps1" in configured
    assert "namespace verify -i" in configured
    p = plan(tmp_path, port=9443, as_installed=True)
    assert p.as_installed
    assert p.targets.https_port == 9443
    assert p.targets.autodiscover == "autodiscover.alwayshotcafe.com"
    lines = [line.strip() for line in try_lines(p)]
    start = next(i for i, line in enumerate(lines) if line.startswith("The servers are as installed"))
    steps = [line.split(" ", 1)[1] for line in lines[start + 1 : start + 6]]
    options = "-n outlook.alwayshotcafe.com --autodiscover autodiscover.alwayshotcafe.com --https-port 9443"
    assert steps[0] == f"lab inventory -c {p.config} -o {tmp_path / 'inventory.json'}"
    assert steps[1].startswith(f"namespace verify -i {tmp_path / 'inventory.json'} {options}")
    assert steps[2] == (
        f"namespace script -i {tmp_path / 'inventory.json'} {options} -o {tmp_path / 'apply.ps1'} "
        f"--rollback {tmp_path / 'rollback.ps1'}"
    )
    assert steps[3] == f"lab apply -c {p.config} {tmp_path / 'apply.ps1'}"
