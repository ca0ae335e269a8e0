"""`casarray init`: the config written from an inventory, and `casarray check` accepting it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casarray.cli import app
from casarray.config import load_config
from casarray.errors import CasarrayError
from casarray.exchange.namespace.init import InitOptions, render
from casarray.exchange.namespace.inventory import load_inventory, parse_inventory
from casarray.lab.pki import make_lab_pki, make_other_pki

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inventory"
NAMESPACE = "outlook.alwayshotcafe.com"
runner = CliRunner()


def options(**kw: object) -> InitOptions:
    values: dict[str, object] = {"namespace": NAMESPACE, "vip": "10.0.1.250"}
    values.update(kw)
    return InitOptions(**values)  # type: ignore[arg-type]


def test_servers_and_services_come_from_the_inventory() -> None:
    draft = render(load_inventory(FIXTURES / "eight-servers.json"), options(namespace="mail.contoso.com"))
    cfg = draft.config
    assert [s.name for s in cfg.servers] == [f"EX0{i}" for i in range(1, 9)]
    assert [s.address for s in cfg.servers][:2] == ["ex01.corp.contoso.com", "ex02.corp.contoso.com"]
    # catalog order; rpc because Outlook Anywhere is in the inventory
    assert cfg.services == ["owa", "ecp", "ews", "mapi", "rpc", "oab", "eas", "autodiscover", "powershell"]
    assert (cfg.mode, cfg.balance, cfg.affinity, cfg.listen.address) == (
        "l4",
        "roundrobin",
        "none",
        "10.0.1.250",
    )
    assert cfg.timeouts.client_idle >= 3600  # ActiveSync Ping: 59 minutes


def test_every_default_says_why() -> None:
    text = render(load_inventory(FIXTURES / "unified.json"), options()).text
    assert "MS-ASCMD 2.2.3.88.1" in text  # one-hour idle for ActiveSync
    assert "client_idle: 1h" in text
    assert "never 444" in text
    assert "Extended Protection" in text
    assert "Microsoft advises" in text  # no affinity
    assert "# ca: " in text  # commented: the system store is the default


def test_services_follow_the_vdir_types_present() -> None:
    inventory = parse_inventory(
        json.dumps(
            {
                "Servers": [
                    {"Name": "MB1", "Fqdn": "MB1.contoso.com"},
                    {"Name": "MB2", "Fqdn": "MB2.contoso.com"},
                    {"Name": "EDGE1", "Fqdn": "EDGE1.contoso.com"},
                ],
                "VirtualDirectories": [
                    {"Type": "Owa", "Server": "MB1", "Identity": "MB1\\owa"},
                    {"Type": "Owa", "Server": "MB2", "Identity": "MB2\\owa"},
                    {"Type": "WebServices", "Server": "MB1", "Identity": "MB1\\EWS"},
                ],
            }
        )
    )
    draft = render(inventory, options(namespace="mail.contoso.com"))
    assert draft.services == ("owa", "ews")  # no Outlook Anywhere in the file: no rpc
    assert [s.name for s in draft.servers] == ["MB1", "MB2"]
    assert any("EDGE1 is left out" in note for note in draft.notes)
    assert any("(ews) is not listed for mb2" in note for note in draft.notes)
    assert "#   - EDGE1 is left out" in draft.text


def test_bad_input_is_an_error_naming_the_option() -> None:
    inventory = load_inventory(FIXTURES / "unified.json")
    with pytest.raises(CasarrayError, match="--vip"):
        render(inventory, options(vip="outlook"))
    with pytest.raises(CasarrayError, match="--vip"):
        render(inventory, options(vip="0.0.0.0"))
    with pytest.raises(CasarrayError, match="--namespace"):
        render(inventory, options(namespace="outlook"))
    with pytest.raises(CasarrayError, match="--cert and --key"):
        render(inventory, options(mode="l7"))


def test_missing_fqdn_is_an_error() -> None:
    inventory = parse_inventory(
        json.dumps({"Servers": [], "VirtualDirectories": [{"Type": "Owa", "Server": "MB1", "Identity": "x"}]})
    )
    with pytest.raises(CasarrayError, match="no Fqdn for MB1"):
        render(inventory, options())


def test_l7_takes_the_servers_certificate_and_checks_the_pair(tmp_path: Path) -> None:
    pki = make_lab_pki(tmp_path / "pki")
    inventory = load_inventory(FIXTURES / "unified.json")
    draft = render(
        inventory,
        options(
            mode="l7",
            certificate=pki.certificate,
            key=pki.key,
            ca=pki.ca,
            autodiscover="autodiscover.alwayshotcafe.com",
        ),
    )
    assert draft.config.mode == "l7"
    assert draft.config.tls is not None
    assert draft.config.tls.certificate == str(pki.certificate)
    assert draft.config.upstream_tls.ca == str(pki.ca)
    assert draft.notes == ()
    other = make_other_pki(tmp_path / "other")  # for wrong.example.net only
    narrow = render(inventory, options(mode="l7", certificate=other.certificate, key=other.key))
    assert any(f"does not cover {NAMESPACE}" in note for note in narrow.notes)
    with pytest.raises(CasarrayError, match="does not belong"):
        render(inventory, options(mode="l7", certificate=pki.certificate, key=other.key))


def test_cli_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    pki = make_lab_pki(tmp_path / "pki")
    out = tmp_path / "casarray.yaml"
    args = ["init", "-i", str(FIXTURES / "unified.json"), "-n", NAMESPACE, "--vip", "10.0.1.250"]
    args += ["--mode", "l7", "--cert", str(pki.certificate), "--key", str(pki.key), "--ca", str(pki.ca)]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 servers" in result.stdout
    check = runner.invoke(app, ["check", "-c", str(out)])
    assert check.exit_code == 0, check.output
    assert "valid (mode l7, 2 servers" in check.stdout
    assert load_config(out).servers[0].address == "mb1.alwayshotcafe.com"


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "casarray.yaml"
    out.write_text("keep me\n")
    args = [
        "init",
        "-i",
        str(FIXTURES / "unified.json"),
        "-n",
        NAMESPACE,
        "--vip",
        "10.0.1.250",
        "-o",
        str(out),
    ]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "exists already" in refused.stderr
    assert out.read_text() == "keep me\n"
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert runner.invoke(app, ["check", "-c", str(out)]).exit_code == 0


def test_cli_usage_errors(tmp_path: Path) -> None:
    base = ["init", "-i", str(FIXTURES / "unified.json"), "-n", NAMESPACE, "-o", str(tmp_path / "x.yaml")]
    assert runner.invoke(app, [*base, "--vip", "10.0.1.250", "--mode", "l7"]).exit_code == 2
    assert runner.invoke(app, [*base, "--vip", "10.0.1.250", "--mode", "l5"]).exit_code == 2
    bad = runner.invoke(app, [*base, "--vip", "nowhere"])
    assert bad.exit_code == 1
    assert "error: --vip" in bad.stderr
    missing = runner.invoke(app, [*base[:2], str(tmp_path / "none.json"), *base[3:], "--vip", "10.0.1.250"])
    assert missing.exit_code == 1
    assert "no such file" in missing.stderr
