"""Odd config files through every door an admin uses — `casarray check`, `casarray run`, a reload by
SIGHUP and by the admin API: one clear error each (file, line, found, expected), never a traceback; a
refused reload answers 409 and the running config keeps serving."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.config_inputs import BAD_INPUTS, BadInput
from tests.integration.conftest import L7Lab, get
from tests.support import casarray, free_port

TOKEN = "config-input-token-7d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFUSED = "reload refused, the running config keeps serving: "
# What `casarray run` and `casarray ctl` (which falls back to the admin: section of a file mid-edit)
# are given: inputs that each ended in a traceback before.
OTHER_DOORS = {
    "nested-flow",
    "huge-integer",
    "timestamp-impossible-date",
    "latin-1-not-utf-8",
    "nul-byte",
    "too-big",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        casarray(*args), capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )


def assert_one_error(bad: BadInput, path: Path, stderr: str) -> None:
    where = f"error: {path}:{bad.line}: " if bad.line is not None else f"error: {path}: "
    assert stderr.startswith(where), stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for words in bad.says:
        assert words in stderr, stderr


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
def test_check_gives_one_error_and_exit_1(bad: BadInput, tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_bytes(bad.data)
    done = cli("check", "-c", str(path))
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert_one_error(bad, path, done.stderr)


@pytest.mark.parametrize("verb", [("run",), ("ctl", "reload")], ids=" ".join)
@pytest.mark.parametrize("bad", [b for b in BAD_INPUTS if b.name in OTHER_DOORS], ids=lambda bad: bad.name)
def test_run_and_ctl_give_one_error(verb: tuple[str, ...], bad: BadInput, tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_bytes(bad.data)
    done = cli(verb[0], "-c", str(path), *verb[1:])
    assert done.returncode == 1, done.stderr
    assert_one_error(bad, path, done.stderr)


@pytest.mark.slow
def test_a_reload_refuses_each_odd_input_and_keeps_serving(l7: L7Lab) -> None:
    """Each bad file, by the admin API (409 with its one problem) and by SIGHUP (one log line);
    requests are served throughout, and the good file reloads afterwards."""
    l7.start_sims(1)
    token_file = l7.dir / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    admin = f"http://127.0.0.1:{free_port()}"
    # This test is about what a refusal says; tests/reliability/test_reload.py proves the parse runs off
    # the serving loop.
    proc, port = l7.balancer(
        extra=f"admin: {{listen: '{admin.removeprefix('http://')}', token_file: {token_file}}}\n",
        health="{interval: 200ms, timeout: 5s, rise: 1, fall: 3}",
    )
    proc.wait_log("admin API and dashboard on")
    path = Path(proc.args[-1])
    good = path.read_bytes()
    with httpx.Client(base_url=admin, timeout=30, trust_env=False) as http:
        for n, bad in enumerate(BAD_INPUTS, 1):
            path.write_bytes(bad.data)
            resp = http.post("/api/reload", headers=AUTH)  # bounded by the client's timeout
            assert resp.status_code == 409, (bad.name, resp.status_code, resp.text)
            (problem,) = resp.json()["problems"]
            assert problem.startswith(f"{path}:"), (bad.name, problem)
            assert resp.json()["error"] == REFUSED + problem
            proc.signal(signal.SIGHUP)
            proc.wait_log(REFUSED, count=2 * n)
            assert get(l7, port, "/owa/healthcheck.htm").status == 200, bad.name
        log = proc.log
        assert log.count(REFUSED) == 2 * len(BAD_INPUTS)
        assert "Traceback" not in log
        path.write_bytes(good)
        resp = http.post("/api/reload", headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert resp.json()["outcome"].startswith(f"reloaded {path}: generation 2 serving")
