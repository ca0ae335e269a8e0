"""After `make lab`: the commands the lab prints run as printed (the venv is not on the PATH), and the
lab installs only what casarray needs at run time."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from casarray.lab import runner

ROOT = Path(__file__).resolve().parents[2]


def _venv(tmp_path: Path, *, with_script: bool = True) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    if with_script:
        script = bin_dir / "casarray"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
    return python


def test_the_venv_script_is_printed_when_it_is_not_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _venv(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert runner.casarray_command(str(python)) == "venv/bin/casarray"  # as `make lab` leaves it: .venv/bin/…
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert runner.casarray_command(str(python)) == str(tmp_path / "venv" / "bin" / "casarray")


def test_plain_casarray_when_the_path_finds_this_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = _venv(tmp_path)
    monkeypatch.setenv("PATH", f"{python.parent}:/usr/bin:/bin")
    assert runner.casarray_command(str(python)) == "casarray"


def test_python_m_casarray_without_a_script(tmp_path: Path) -> None:
    python = _venv(tmp_path, with_script=False)
    assert runner.casarray_command(str(python)) == f"{python} -m casarray"


def test_the_printed_ctl_command_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ctl line of the lab's hints, run through a shell whose PATH lacks the venv: it reaches casarray
    (which says the admin API is not there: no balancer runs), never 'command not found'."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    plan = dataclasses.replace(runner.plan(Path("lab-run"), admin_port=port), python=sys.executable)
    plan.directory.mkdir()
    plan.config.write_text(runner.render_config(plan))
    (line,) = [line for line in runner.try_lines(plan) if " ctl -c " in line]
    status = line.split("        ")[0].strip()
    assert status.endswith(f"ctl -c {plan.config} status")
    done = subprocess.run(
        ["/bin/sh", "-c", status], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert done.returncode == 1, (status, done.stderr)  # 127: command not found
    assert f"the admin API at http://127.0.0.1:{port} does not answer" in done.stderr


def make_dry_run(target: str) -> str:
    """What `make -n -B TARGET` would run (no directory lines, as under `make test` itself)."""
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_make_lab_installs_only_the_runtime_package() -> None:
    dry = make_dry_run("lab")
    assert "pip install --quiet -e .\n" in dry
    assert "[dev]" not in dry
    assert dry.rstrip().endswith(".venv/bin/casarray lab")
    unit = make_dry_run("unit")  # the development tools are still there for tests, installed on their own
    assert '["optional-dependencies"]["dev"]' in unit
    assert "pip install --quiet -r .venv/dev-requirements.txt\n" in unit
    assert unit.count("pip install --quiet -e .\n") == 1  # casarray built (and compiled) once
