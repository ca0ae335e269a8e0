"""The command line as a new admin meets it: --version, --help with an example on every verb, the
config found the same way by every verb that reads it, every problem of a config at once."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
from typer.testing import CliRunner

from casarray import __version__
from casarray.cli import app, root
from casarray.cli.core import DEFAULT_CONFIGS, plural

VALID = "namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 127.0.0.2}\n"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _verbs(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every visible verb of the command tree (typer's own click: groups have .commands)."""
    commands = getattr(command, "commands", None)
    if commands is not None:
        # A group that runs by itself (`casarray lab`) is a verb too.
        found: list[tuple[str, ...]] = [path] if path and command.invoke_without_command else []
        for name, sub in commands.items():
            if not sub.hidden:
                found += _verbs(sub, (*path, name))
        return found
    return [path]


VERBS = _verbs(typer.main.get_command(app))


def test_version() -> None:
    # Which build runs is tested in test_compiled.py; here: the version, and the build in brackets.
    code, out, err = invoke("--version")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"casarray {re.escape(__version__)} \((compiled: mypyc \S+|pure Python(: .+)?)\)\n", out
    )


def test_every_verb_is_found() -> None:
    names = {" ".join(verb) for verb in VERBS}
    assert {
        "run", "check", "doctor", "init", "lab", "lab apply", "ctl drain", "namespace plan", "export haproxy"
    } <= names  # fmt: skip


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(verb) for verb in VERBS])
def test_help_has_an_example_and_no_bool_type(verb: tuple[str, ...]) -> None:
    code, out, _ = invoke(*verb, "--help")
    assert code == 0
    assert f"Example: casarray {' '.join(verb)}" in " ".join(out.split()), out
    assert "<bool>" not in out


def test_top_level_help_lists_each_verb_on_one_line() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    assert "<bool>" not in out
    assert "..." not in out.partition("Commands:")[2]  # no summary cut short


def test_plural() -> None:
    assert [plural(1, "server"), plural(3, "server"), plural(2, "entry", "entries")] == [
        "1 server",
        "3 servers",
        "2 entries",
    ]


def test_check_says_one_server(tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_text(VALID + "services: [owa]\n")
    code, out, _ = invoke("check", "-c", str(path))
    assert (code, out) == (0, f"{path}: valid (mode l4, 1 server, service owa)\n")


def test_check_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_text(
        "namespace: outlook.alwayshotcafe.com\nmode: L7\ntls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem}\n"
        "servers:\n  - {name: MB1, address: 127.0.0.2}\nbalanse: leastconn\n"
    )
    code, out, err = invoke("check", "-c", str(path))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(
        f"error: {path}:3: tls.certificate: found '/nonexistent/c.pem', which does not exist"
    )
    assert lines[1].startswith(f"error: {path}:3: tls.key: found '/nonexistent/k.pem', which does not exist")
    assert lines[2].startswith(f"error: {path}:6: balanse: unknown key 'balanse' (did you mean 'balance'?)")
    assert len(lines) == 3  # mode: L7 is l7


@pytest.fixture
def no_system_config() -> None:
    if DEFAULT_CONFIGS[1].exists():
        pytest.skip(f"{DEFAULT_CONFIGS[1]} exists on this machine")


@pytest.mark.usefixtures("no_system_config")
@pytest.mark.parametrize(
    "verb",
    [
        ("check",),
        ("run",),
        ("doctor",),
        ("export", "haproxy"),
        ("export", "keepalived"),
        ("export", "bird", "--router", "10.0.1.1", "--asn", "65000"),
        ("announce",),
    ],
)
def test_without_c_every_verb_reads_casarray_yaml_in_the_working_directory(
    verb: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(*verb)
    assert code == 2
    assert err == (
        "error: no config file: -c FILE was not given, and neither ./casarray.yaml nor "
        "/etc/casarray/casarray.yaml exists\n"
    )
    # An invalid one, so no verb goes further than reading it: its error shows which file was read.
    (tmp_path / "casarray.yaml").write_text(VALID + "balance: fastest\n")
    code, _, err = invoke(*verb)
    assert code == 1
    assert err.startswith("error: casarray.yaml:4: balance: found 'fastest'"), err


@pytest.mark.usefixtures("no_system_config")
def test_ctl_finds_it_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "casarray.yaml").write_text(VALID + f"admin: {{listen: 127.0.0.1:{port}}}\n")
    code, _, err = invoke("ctl", "status")
    assert code == 1
    assert f"the admin API at http://127.0.0.1:{port} does not answer" in err


def test_each_verb_is_registered_by_the_module_root_imports_for_it() -> None:
    """`casarray VERB` imports only VERB's module (cli/root.py): the table must name every verb, and
    that module alone must give the verb with the options the whole app gives it."""
    whole = typer.main.get_command(app)
    assert isinstance(whole, typer.core.TyperGroup)
    assert set(whole.commands) == set(root.VERBS)
    for verb in root.VERBS:
        alone = typer.main.get_command(root.make_app(verb))
        assert isinstance(alone, typer.core.TyperGroup)
        assert verb in alone.commands, f"{verb}: not registered by cli/{root.VERBS[verb]}.py"
        options = [p.opts for p in alone.commands[verb].params]
        assert options == [p.opts for p in whole.commands[verb].params]


def test_a_verb_does_not_import_the_other_verbs_modules() -> None:
    """`casarray run` (and each worker) starts without the lab, the doctor or tree-sitter."""
    code = (
        "import sys; sys.argv = ['casarray', 'run', '--help']\n"
        "from casarray.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('casarray.lab', 'casarray.doctor', "
        "'casarray.cli.tools', 'aiohttp', 'tree_sitter'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
