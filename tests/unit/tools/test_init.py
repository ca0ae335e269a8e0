"""`casarray init`: the config written from an inventory, and `casarray check` accepting it."""

from __future__ import annotations

import json
import stat
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
    assert (cfg.mode, cfg.balance, cfg.affinity.mode, cfg.listen.address) == (
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
    assert any("(ews) is not listed for MB2: left out of l4_require" in note for note in draft.notes)
    assert draft.config.l4_require == ["owa"]
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
    with pytest.raises(CasarrayError, match="does not belong"):
        render(
            inventory, options(mode="l7", certificate=pki.certificate, key=make_other_pki(tmp_path / "o").key)
        )


def test_a_certificate_that_does_not_name_the_namespace_is_an_error(tmp_path: Path) -> None:
    other = make_other_pki(tmp_path / "other")  # for wrong.example.net only
    inventory = load_inventory(FIXTURES / "unified.json")
    with pytest.raises(CasarrayError, match=f"{NAMESPACE} is not on the certificate clients see") as raised:
        render(inventory, options(mode="l7", certificate=other.certificate, key=other.key))
    assert "wrong.example.net" in str(raised.value)  # what the certificate does name
    out = tmp_path / "casarray.yaml"
    args = ["init", "-i", str(FIXTURES / "unified.json"), "-n", NAMESPACE, "--vip", "10.0.1.250"]
    args += ["--mode", "l7", "--cert", str(other.certificate), "--key", str(other.key), "-o", str(out)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert f"{NAMESPACE} is not on the certificate" in refused.stderr
    assert not out.exists()
    assert not (tmp_path / "admin.token").exists()  # nothing is left half done


def test_check_reports_the_certificate_as_init_does(tmp_path: Path) -> None:
    pki = make_lab_pki(tmp_path / "pki")
    other = make_other_pki(tmp_path / "other")
    base = f"namespace: {NAMESPACE}\nmode: l7\nservers: [{{name: MB1, address: 10.0.1.11}}]\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + f"tls: {{certificate: {pki.certificate}, key: {pki.key}}}\n")
    assert runner.invoke(app, ["check", "-c", str(good)]).exit_code == 0
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(
        base + "autodiscover: autodiscover.alwayshotcafe.com\n"
        f"tls: {{certificate: {other.certificate}, key: {other.key}}}\n"
    )
    result = runner.invoke(app, ["check", "-c", str(narrow)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any(
        line.startswith(f"error: {narrow}: namespace: {NAMESPACE} is not on the certificate")
        for line in lines
    ), lines
    assert any(f"{narrow}: autodiscover: autodiscover.alwayshotcafe.com is not" in line for line in lines)
    mismatched = tmp_path / "mismatched.yaml"
    mismatched.write_text(base + f"tls: {{certificate: {pki.certificate}, key: {other.key}}}\n")
    result = runner.invoke(app, ["check", "-c", str(mismatched)])
    assert result.exit_code == 1
    assert f"{mismatched}: tls.certificate: {pki.certificate}: the key" in result.stderr
    assert "does not belong to this certificate" in result.stderr


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


def _three_servers(*, mb3_types: tuple[str, ...]) -> str:
    types = ("Owa", "Ecp", "WebServices", "ActiveSync")
    vdirs = [
        {"Type": t, "Server": server, "Identity": f"{server}\\{t}"}
        for server, kinds in (("MB1", types), ("MB2", types), ("MB3", mb3_types))
        for t in kinds
    ]
    return json.dumps(
        {
            "Servers": [{"Name": n, "Fqdn": f"{n}.contoso.com"} for n in ("MB1", "MB2", "MB3")],
            "VirtualDirectories": vdirs,
            "OutlookAnywhere": [{"Server": n, "Identity": f"{n}\\Rpc"} for n in ("MB1", "MB2", "MB3")],
        }
    )


def test_l4_require_holds_the_services_every_server_publishes(tmp_path: Path) -> None:
    # MB3 has no ActiveSync virtual directory: its eas health check fails, and with every service
    # required l4 would take MB3 out for everything.
    inventory = parse_inventory(_three_servers(mb3_types=("Owa", "Ecp", "WebServices")))
    draft = render(inventory, options(namespace="mail.contoso.com"))
    assert draft.services == ("owa", "ecp", "ews", "rpc", "eas")
    assert draft.config.l4_require == ["owa", "ecp", "ews", "rpc"]
    assert draft.config.required_services == ("owa", "ecp", "ews", "rpc")
    assert "l4_require: [owa, ecp, ews, rpc]" in draft.text
    assert "#   eas is left out: MB3 has no Exchange ActiveSync" in draft.text
    assert any("left out of l4_require" in note and "MB3" in note for note in draft.notes)
    full = render(
        parse_inventory(_three_servers(mb3_types=("Owa", "Ecp", "WebServices", "ActiveSync"))), options()
    )
    assert full.config.l4_require == ["owa", "ecp", "ews", "rpc", "eas"]
    assert full.notes == ()
    # l7 judges each service on its own: no l4_require, a note on where eas requests go
    pki = make_lab_pki(tmp_path)
    l7 = render(inventory, options(namespace=NAMESPACE, mode="l7", certificate=pki.certificate, key=pki.key))
    assert l7.config.l4_require is None
    assert any("its requests go to the other servers" in note for note in l7.notes)


def test_l4_without_a_service_common_to_every_server_is_an_error() -> None:
    inventory = parse_inventory(
        json.dumps(
            {
                "Servers": [{"Name": n, "Fqdn": f"{n}.contoso.com"} for n in ("MB1", "MB2")],
                "VirtualDirectories": [
                    {"Type": "Owa", "Server": "MB1", "Identity": "MB1\\owa"},
                    {"Type": "WebServices", "Server": "MB2", "Identity": "MB2\\EWS"},
                ],
            }
        )
    )
    with pytest.raises(CasarrayError, match="no service is published by every server") as raised:
        render(inventory, options())
    assert "--mode l7" in str(raised.value)


def test_a_getvirtdirs_list_is_refused_with_what_to_collect() -> None:
    inventory = load_inventory(FIXTURES / "mixed-org-getvirtdirs.json")
    with pytest.raises(CasarrayError, match="names no server FQDN") as raised:
        render(inventory, options())
    assert "casarray namespace collector" in str(raised.value)
    result = runner.invoke(
        app,
        ["init", "-i", str(FIXTURES / "mixed-org-getvirtdirs.json"), "-n", NAMESPACE, "--vip", "10.0.1.250"],
    )
    assert result.exit_code == 1
    assert "names no server FQDN" in result.stderr
    assert "Traceback" not in result.output


def test_cli_writes_an_admin_section_and_a_private_token(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "casarray.yaml"
    out.parent.mkdir()
    args = ["init", "-i", str(FIXTURES / "unified.json"), "-n", NAMESPACE, "--vip", "10.0.1.250"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    token_file = out.parent / "admin.token"
    token = token_file.read_text().strip()
    assert len(token) == 64
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in result.output  # never printed
    assert token[:8] not in result.output
    cfg = load_config(out)
    assert cfg.admin is not None
    assert (cfg.admin.listen, cfg.admin.token_file) == ("127.0.0.1:9090", str(token_file))
    # again with --force: the token is kept (a running balancer and its operators hold it)
    again = runner.invoke(app, [*args, "-o", str(out), "--force"])
    assert again.exit_code == 0, again.output
    assert "Kept the admin token" in again.stdout
    assert token_file.read_text().strip() == token
    # a config that exists is refused before any token file is written
    elsewhere = tmp_path / "private" / "ctl.token"
    elsewhere.parent.mkdir()
    refused = runner.invoke(app, [*args, "-o", str(out), "--token-file", str(elsewhere)])
    assert refused.exit_code == 1
    assert not elsewhere.exists()
    moved = tmp_path / "other.yaml"
    given = [*args, "-o", str(moved), "--token-file", str(elsewhere), "--admin-listen", "127.0.0.1:9191"]
    assert runner.invoke(app, [*given, "--https-port", "8443"]).exit_code == 0
    cfg = load_config(moved)
    assert cfg.admin is not None
    assert (cfg.admin.listen, cfg.admin.token_file, cfg.listen.https_port) == (
        "127.0.0.1:9191",
        str(elsewhere),
        8443,
    )
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o600
    bad = runner.invoke(app, [*args, "-o", str(tmp_path / "bad.yaml"), "--admin-listen", "9090"])
    assert bad.exit_code == 1
    assert "--admin-listen" in bad.stderr
