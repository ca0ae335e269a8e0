"""The lab's users: every name a user may log on with, for Basic and for pyspnego's NTLM acceptor."""

from __future__ import annotations

from pathlib import Path

import pytest
import spnego
import spnego.exceptions

from casarray.lab.users import Credentials

USERS = [("ALWAYSHOTCAFE", "alice", "Passw0rd!"), ("ALWAYSHOTCAFE", "bob", "s3cret")]


def test_the_ntlm_store_lists_each_name_as_the_acceptor_looks_it_up() -> None:
    store = Credentials(USERS, "AlwaysHotCafe.com").ntlm_store()
    assert store.splitlines() == [
        "ALWAYSHOTCAFE:alice:Passw0rd!",
        ":alice@alwayshotcafe.com:Passw0rd!",
        ":alice:Passw0rd!",
        "ALWAYSHOTCAFE:bob:s3cret",
        ":bob@alwayshotcafe.com:s3cret",
        ":bob:s3cret",
    ]
    assert Credentials().ntlm_store() == ""


def test_every_name_is_one_account() -> None:
    users = Credentials(USERS)
    for name in ("alice", "ALICE@alwayshotcafe.com", "alwayshotcafe\\alice"):
        assert users.account(name) == "ALWAYSHOTCAFE\\alice"
        assert users.logon(name, "Passw0rd!") == "ALWAYSHOTCAFE\\alice"
    assert users.logon("alice@alwayshotcafe.com", "s3cret") is None
    assert users.account("carol@alwayshotcafe.com") == "carol@alwayshotcafe.com"


def _handshake(login: str, password: str) -> str | None:
    """A whole NTLM handshake in memory, pyspnego's initiator against its acceptor ($NTLM_USER_FILE)."""
    client = spnego.client(login, password, hostname="mb1.alwayshotcafe.com", protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    token = client.step()
    while not server.complete:
        assert token is not None
        answer = server.step(token)
        if server.complete:
            break
        token = client.step(answer)
    principal: str | None = server.client_principal
    return principal


@pytest.mark.parametrize("login", ["alice@alwayshotcafe.com", "ALWAYSHOTCAFE\\alice", "alice"])
def test_pyspnego_accepts_each_name_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    store = tmp_path / "store.txt"
    users = Credentials(USERS)
    store.write_text(users.ntlm_store())
    monkeypatch.setenv("NTLM_USER_FILE", str(store))
    principal = _handshake(login, "Passw0rd!")
    assert principal is not None
    assert users.account(principal) == "ALWAYSHOTCAFE\\alice"
    with pytest.raises(spnego.exceptions.SpnegoError):
        _handshake(login, "wrong")
