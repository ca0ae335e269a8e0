"""Admin settings from the config: listen address, token file, and what start-up refuses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from casarray.admin.server import AdminServer, read_token
from casarray.config.model import Admin
from casarray.errors import StartupError
from tests.support import LoopThread
from tests.unit.admin.conftest import FakeControl


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_token_is_stripped(tmp_path: Path) -> None:
    assert read_token(str(token_file(tmp_path, "  abc123\n\n"))) == "abc123"


def test_empty_or_missing_token_file_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"admin\.token_file: the token file .* is empty"):
        read_token(str(token_file(tmp_path, "\n")))
    with pytest.raises(StartupError, match=r"cannot read the token file .*: No such file or directory"):
        read_token(str(tmp_path / "nope"))


def test_world_readable_token_file_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "casarray.admin"):
        read_token(str(token_file(tmp_path, "abc", 0o640)))  # group: how the service user reads it
        assert caplog.records == []
        read_token(str(token_file(tmp_path, "abc", 0o644)))
    assert "can be read by every user" in caplog.text


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [("127.0.0.1:9090", True), ("127.0.0.9:0", True), ("[::1]:9090", True), ("0.0.0.0:9090", False)],
)
def test_policy_follows_the_listen_address(tmp_path: Path, listen: str, loopback: bool) -> None:
    token = token_file(tmp_path, "abc\n")
    server = AdminServer.from_config(Admin(listen=listen, token_file=str(token)), FakeControl())
    assert server.policy.loopback is loopback
    assert server.policy.token == "abc"


def test_bad_listen_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"admin\.listen: expected address:port"):
        AdminServer.from_config(Admin(listen="9090"), FakeControl())


def test_port_in_use_is_a_startup_error(loop_thread: LoopThread) -> None:
    first = AdminServer(FakeControl(), "127.0.0.1", 0, AdminServer.from_config(Admin(), FakeControl()).policy)
    loop_thread.run(first.start())
    try:
        second = AdminServer(FakeControl(), "127.0.0.1", first.port, first.policy)
        with pytest.raises(StartupError, match=rf"admin\.listen: cannot listen on 127\.0\.0\.1:{first.port}"):
            loop_thread.run(second.start())
    finally:
        loop_thread.run(first.close())
