"""`casarray lab --mail`: the mail ports the sims get, the config's mail: section, the lines it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from casarray.config import parse_config
from casarray.lab import LabError
from casarray.lab.runner import SIM_MAIL_PORTS, mail_try_lines, plan, render_config, sim_command, try_lines


def test_no_mail_by_default(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert p.mail_routes == ()
    assert "mail:" not in render_config(p)
    assert "mail_ports" not in render_config(p)
    assert "--imap" not in sim_command(p, p.servers[0])
    assert not any("imap" in line for line in try_lines(p))


@pytest.mark.parametrize("mode", ["l4", "l7"])
def test_mail_config_is_valid_and_maps_tls_ports(tmp_path: Path, mode: str) -> None:
    p = plan(tmp_path, mode=mode, mail=True, mail_tls=True)  # type: ignore[arg-type]
    config = parse_config(render_config(p), "lab.yaml")
    assert config.mail is not None
    assert config.mail.imap is not None
    assert config.mail.pop3 is not None
    assert config.mail.smtp is not None
    assert config.mail.imap.ports == [10143, 993]
    assert config.mail.pop3.ports == [10110, 995]
    assert config.mail.smtp.ports == [10025, 10587]
    for server in config.servers:
        assert server.mail_ports == {
            10143: 10143, 993: 10993, 10110: 10110, 995: 10995, 10025: 10025, 10587: 10587,
        }  # fmt: skip


def test_without_root_implicit_tls_stays_out_of_the_balancer(tmp_path: Path) -> None:
    p = plan(tmp_path, mode="l4", mail=True, mail_tls=False)
    config = parse_config(render_config(p), "lab.yaml")
    assert config.mail is not None
    assert config.mail.imap is not None
    assert config.mail.imap.ports == [10143]
    assert 993 not in config.servers[0].mail_ports
    text = "\n".join(mail_try_lines(p))
    assert "needs ports 993/995, so root" in text
    assert "127.0.0.3:10993" in text
    # The sims answer implicit TLS all the same.
    assert "--imaps" in sim_command(p, p.servers[0])


def test_sims_get_every_mail_port(tmp_path: Path) -> None:
    p = plan(tmp_path, mail=True, mail_tls=True)
    command = sim_command(p, p.servers[2])
    for label, port in SIM_MAIL_PORTS.items():
        assert command[command.index(f"--{label}") + 1] == str(port)


def test_mail_try_lines(tmp_path: Path) -> None:
    p = plan(tmp_path, mail=True, mail_tls=True)
    text = "\n".join(try_lines(p))
    ca = p.ca
    assert f"openssl s_client -quiet -starttls imap -connect 127.0.0.1:10143 -CAfile {ca}" in text
    assert f"curl -v --ssl-reqd --cacert {ca} -u 'alice:Passw0rd!' imap://127.0.0.1:10143/" in text
    assert "pop3://127.0.0.1:10110/" in text
    assert "-T - smtp://127.0.0.1:10025" in text
    assert "-connect 127.0.0.1:993 -servername outlook.alwayshotcafe.com" in text
    assert f"curl -X POST --cacert {ca} https://127.0.0.3:8443/_sim/mail/imap/broken" in text
    assert "alice:any" in "\n".join(mail_try_lines(plan(tmp_path, mail=True, ntlm=False)))


def test_ports_that_collide_with_mail_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="sim port 10143"):
        plan(tmp_path, mail=True, sim_port=10143)
    with pytest.raises(LabError, match="port 993"):
        plan(tmp_path, mail=True, port=993)
    assert plan(tmp_path, sim_port=10143).servers[0].port == 10143  # without mail: allowed
