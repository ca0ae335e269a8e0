"""What `casarray announce` says to BIRD and how it reads BIRD's answers (announce/bird.py), with the texts
BIRD 2.0.12's birdc prints; the command's refusals. Its loop runs against a real BIRD and casarray in
tests/ha/test_announce.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from casarray.announce.bird import MESSAGE_LIMIT, BirdError, Reply, command, message, parse_reply
from casarray.cli import app

READY = "BIRD 2.0.12 ready.\n"
runner = CliRunner()


def test_commands_carry_the_reason_as_a_bird_string() -> None:
    assert command("casarray_vip4", True, "casarray announce: healthy") == [
        "enable",
        "casarray_vip4",
        '"casarray announce: healthy"',
    ]
    assert command("casarray_vip6", False, "x")[:2] == ["disable", "casarray_vip6"]


def test_a_reason_cannot_end_the_string_or_the_line() -> None:
    assert message('connect refused "127.0.0.1:9090"\nagain') == "connect refused '127.0.0.1:9090' again"
    long = message("x" * 500)
    assert len(long) == MESSAGE_LIMIT
    assert long.endswith("...")


@pytest.mark.parametrize(
    ("enable", "output", "reply"),
    [
        (True, READY + "casarray_vip4: enabled\n", Reply("casarray_vip4", True, changed=True)),
        (True, READY + "casarray_vip4: already enabled\n", Reply("casarray_vip4", True, changed=False)),
        (False, READY + "casarray_vip4: disabled\n", Reply("casarray_vip4", False, changed=True)),
        (False, READY + "casarray_vip4: already disabled\n", Reply("casarray_vip4", False, changed=False)),
    ],
)
def test_birds_answers(enable: bool, output: str, reply: Reply) -> None:
    assert parse_reply("casarray_vip4", enable, output) == reply


@pytest.mark.parametrize(
    ("enable", "output", "said"),
    [
        # an unknown protocol name is a syntax error to BIRD's CLI parser
        (
            True,
            READY + "syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TEXT or ALL\n",
            "syntax error, unexpected CF_SYM_UNDEFINED",
        ),
        (
            True,
            "Unable to connect to server control socket (/run/bird/bird.ctl): No such file or directory\n",
            "Unable to connect to server control socket",
        ),
        (True, READY + "casarray_vip4: disabled\n", "casarray_vip4: disabled"),  # the other verb's answer
        (False, READY + "casarray_vip6: disabled\n", "casarray_vip6: disabled"),  # another protocol's
        (False, "", "no answer"),
    ],
)
def test_anything_else_is_an_error_naming_the_command(enable: bool, output: str, said: str) -> None:
    verb = "enable" if enable else "disable"
    with pytest.raises(BirdError, match=f"^birdc {verb} casarray_vip4: ") as caught:
        parse_reply("casarray_vip4", enable, output)
    assert said in str(caught.value)
    assert "ready." not in str(caught.value)


def test_the_command_needs_the_admin_api_and_a_sane_interval(tmp_path: Path) -> None:
    """casarray's health is read from its admin API: without `admin:` nothing could be checked."""
    conf = tmp_path / "casarray.yaml"
    conf.write_text(
        "namespace: outlook.alwayshotcafe.com\nlisten: {address: 10.0.9.1}\nservers: [{name: MB1, address: 10.0.1.11}]\n"
    )
    done = runner.invoke(app, ["announce", "-c", str(conf)])
    assert done.exit_code == 1
    assert done.stderr.startswith("error: the config has no admin: section")
    conf.write_text(conf.read_text() + "admin: {listen: 127.0.0.1:9090}\n")
    for interval in ("0", "2m", "soon"):
        assert runner.invoke(app, ["announce", "-c", str(conf), "--interval", interval]).exit_code == 2
    unusable = conf.read_text().replace("10.0.9.1", "0.0.0.0")
    conf.write_text(unusable)
    done = runner.invoke(app, ["announce", "-c", str(conf)])
    assert done.exit_code == 1
    assert done.stderr.startswith("error: listen.address: 0.0.0.0 is not an address a router can send")
