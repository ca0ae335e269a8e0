"""`casarray ctl` in-process against a real admin server on loopback (fake Control behind it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casarray.cli import app
from casarray.cli.ctl import _listen_url
from casarray.errors import ConfigError
from tests.support import free_port
from tests.unit.admin.conftest import TOKEN, Running

Start = Callable[..., Running]


def ctl(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ctl", *args])
    return result.exit_code, result.stdout, result.stderr


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "admin.token"
    path.write_text(text)
    path.chmod(0o600)
    return path


def config_file(tmp_path: Path, admin: str) -> Path:
    path = tmp_path / "casarray.yaml"
    path.write_text(
        "namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 127.0.0.2}\n" + admin
    )
    return path


def test_status_prints_the_grid(start_admin: Start) -> None:
    running = start_admin()
    running.control.health[("MB2", "ews")] = "down"
    running.control.operator["MB1"] = "drain"
    code, out, _ = ctl("--admin", running.url, "status")
    assert code == 0
    assert "outlook.alwayshotcafe.com  mode l7  clients 2 (accepted 14)" in out
    assert "requests 2xx 7  5xx 1" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ MB")}
    assert lines["MB1"].split()[3:5] == ["drain", "│"]
    assert "down L7STS" in lines["MB2"]
    running.control.operator["MB2"] = "maint"
    _, out, _ = ctl("--admin", running.url, "status")
    assert "maint, down" in out  # the operator's state colours the cell, the health still shows
    assert "1000 B" in lines["MB1"]
    assert "4.9 KiB" in lines["MB1"]


def test_status_json(start_admin: Start) -> None:
    running = start_admin()
    code, out, _ = ctl("status", "--admin", running.url, "--json")  # options may follow the verb
    assert code == 0
    assert '"namespace": "outlook.alwayshotcafe.com"' in out


def test_drain_ready_maint_with_the_token(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin()
    token = str(token_file(tmp_path))
    assert ctl("--admin", running.url, "--token-file", token, "drain", "mb1") == (0, "MB1: drain\n", "")
    assert ctl("--admin", running.url, "--token-file", token, "maint", "MB2", "--service", "ews")[1] == (
        "MB2/ews: maint\n"
    )
    assert ctl("--admin", running.url, "--token-file", token, "ready", "MB1")[1] == "MB1: ready\n"
    assert [(s, svc, st.value) for s, svc, st in running.control.calls] == [
        ("MB1", None, "drain"),
        ("MB2", "ews", "maint"),
        ("MB1", None, "ready"),
    ]


def test_errors_are_one_line_and_exit_1(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin()
    api = f"the admin API at {running.url}"
    code, out, err = ctl("--admin", running.url, "drain", "MB1")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: {api} answered 401 Unauthorized: a bearer token is required for changes")
    assert "no token file (use --token-file or admin.token_file)" in err
    token = str(token_file(tmp_path))
    code, _, err = ctl("--admin", running.url, "--token-file", token, "drain", "MB7")
    assert (code, err) == (1, f"error: {api} answered 404 Not Found: no server 'MB7' (servers: MB1, MB2)\n")
    running.control.reload_error = ConfigError("a.yaml:1: x: bad\na.yaml:2: y: bad")
    code, _, err = ctl("--admin", running.url, "--token-file", token, "reload")
    assert code == 1
    assert err == (
        f"error: {api} answered 409 Conflict: reload refused, the running config keeps serving: a.yaml:1: x: bad; a.yaml:2: y: bad\n"
    )


def test_unreachable_admin_api() -> None:
    port = free_port()
    code, _, err = ctl("--admin", f"127.0.0.1:{port}", "status")
    assert code == 1
    assert err.startswith(
        f"error: the admin API at http://127.0.0.1:{port} does not answer (Connection refused) "
    )
    assert err.count("\n") == 1


def test_address_and_token_come_from_the_config(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin()
    token = token_file(tmp_path)
    config = config_file(
        tmp_path, f"admin: {{listen: '127.0.0.1:{running.server.port}', token_file: {token}}}\n"
    )
    code, out, err = ctl("-c", str(config), "drain", "MB2")
    assert (code, out, err) == (0, "MB2: drain\n", "")
    code, out, _ = ctl("-c", str(config), "reload")
    assert (code, out) == (0, "reloaded test.yaml: generation 2 serving\n")


def test_unreadable_configured_token_still_allows_reads(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin()
    missing = tmp_path / "missing.token"
    config = config_file(
        tmp_path, f"admin: {{listen: '127.0.0.1:{running.server.port}', token_file: {missing}}}\n"
    )
    assert ctl("-c", str(config), "status")[0] == 0
    code, _, err = ctl("-c", str(config), "drain", "MB1")
    assert code == 1
    assert f"(admin.token_file {missing}: No such file or directory)" in err


def test_config_without_admin_section(tmp_path: Path) -> None:
    config = config_file(tmp_path, "")
    code, _, err = ctl("-c", str(config), "status")
    assert code == 1
    assert "has no admin: section" in err


def test_events_lines(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin(token=None)
    from casarray.engine.control import Event

    running.control.log = [
        Event(1700000000.0, "MB1", "ews", "up", "down", "L7STS", "HTTP 503"),
        Event(1700000001.0, "", "", "-", "generation 2", "reload", "/etc/casarray/casarray.yaml"),
    ]
    code, out, _ = ctl("--admin", running.url, "events")
    assert code == 0
    first, second = out.splitlines()
    assert first.endswith("MB1/ews up -> down L7STS 'HTTP 503'")
    assert second.endswith("config - -> generation 2 reload '/etc/casarray/casarray.yaml'")


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("0.0.0.0:9090", "http://127.0.0.1:9090"),
        ("[::]:9090", "http://[::1]:9090"),
        ("[::1]:9191", "http://[::1]:9191"),
        ("localhost:9090", "http://localhost:9090"),
    ],
)
def test_listen_to_url(listen: str, url: str) -> None:
    assert _listen_url(listen) == url


def test_a_config_mid_edit_still_finds_the_admin_api(start_admin: Start, tmp_path: Path) -> None:
    running = start_admin(token=None)
    config = config_file(tmp_path, f"admin: {{listen: '127.0.0.1:{running.server.port}'}}\nmode: l9\n")
    code, out, _ = ctl("-c", str(config), "reload")  # the balancer, not ctl, judges the new file
    assert (code, out) == (0, "reloaded test.yaml: generation 2 serving\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mode: l9\n")
    code, _, err = ctl("-c", str(broken), "status")
    assert code == 1
    assert "mode" in err


def test_status_fits_100_columns_and_names_who_set_a_state(
    start_admin: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.admin import conftest

    every = ("owa", "ecp", "ews", "mapi", "rpc", "oab", "eas", "autodiscover", "powershell")
    monkeypatch.setattr(conftest, "SERVICES", every)
    running = start_admin()
    running.control.health[("MB2", "ews")] = "down"
    token = str(token_file(tmp_path))
    drained = ctl("--admin", running.url, "--token-file", token, "drain", "MB1", "--reason", "CU14")
    assert drained[:2] == (0, "MB1: drain (CU14)\n")
    reason, by = running.control.notes[-1]
    assert reason == "CU14"
    assert by.endswith("(ctl) from 127.0.0.1") or by == "ctl from 127.0.0.1"
    result = CliRunner().invoke(app, ["ctl", "--admin", running.url, "status"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, result.stdout
    text = "\n".join(line.rstrip() for line in lines)
    assert "MB1  drain  conns 2  total 10" in text
    assert "drain: owa ecp ews mapi rpc oab eas autodiscover powershell" in text  # MB1's services
    assert "down L7STS: ews" in text  # MB2's failing service, named
    assert f"MB1 drain since {_local(1700000000.0)} by {by}: CU14" in text
    wide = CliRunner().invoke(app, ["ctl", "--admin", running.url, "status"], env={"COLUMNS": "220"})
    assert "│ MB1" in wide.stdout  # wide enough: the one table


def _local(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def test_drain_wait_with_a_service_is_a_usage_error(start_admin: Start) -> None:
    running = start_admin(token=None)
    code, _, err = ctl("--admin", running.url, "drain", "MB1", "--service", "ews", "--wait")
    assert code == 2
    assert "--wait waits for a whole server" in err
    assert running.control.calls == []


def test_drain_wait_times_out_with_exit_1(start_admin: Start) -> None:
    running = start_admin(token=None)  # MB1 holds 2 connections that never end
    code, _, err = ctl("--admin", running.url, "drain", "MB1", "--wait", "--timeout", "300ms")
    assert code == 1
    assert err.splitlines()[-1] == (
        "error: MB1 still has 2 open connection(s) after 300ms (--timeout); it stays in drain"
    )
    code, out, _ = ctl("--admin", running.url, "drain", "MB2", "--wait", "--timeout", "5s")
    assert code == 0
    assert out.splitlines()[-1].startswith("MB2: every connection has finished (after ")


def test_events_say_still_rather_than_drain_to_drain(start_admin: Start) -> None:
    running = start_admin(token=None)
    from casarray.engine.control import Event

    running.control.log = [
        Event(
            1700000000.0, "MB1", "", "drain", "drain", "operator", "already drain, nothing changed (by ctl)"
        )
    ]
    _, out, _ = ctl("--admin", running.url, "events")
    assert out.rstrip().endswith("MB1 still drain operator 'already drain, nothing changed (by ctl)'")
