"""The access decision, as a table: listen address × token file × read/change × what the request carries."""

from __future__ import annotations

import pytest

from casarray.admin.auth import Access, Policy, bearer, decide, is_loopback_host, split_listen

TOKEN = "0123456789abcdef"
LOCAL = "127.0.0.1:9090"
READ, CHANGE = Access.READ, Access.CHANGE


def status(
    policy: Policy,
    access: Access,
    auth: str | None = None,
    host: str | None = LOCAL,
    origin: str | None = None,
) -> int:
    verdict = decide(policy, access, authorization=auth, host=host, origin=origin)
    return 200 if verdict is None else verdict.status


@pytest.mark.parametrize(
    ("loopback", "token", "access", "auth", "expected"),
    [
        # loopback with a token file: reads free, changes need the token
        (True, TOKEN, READ, None, 200),
        (True, TOKEN, CHANGE, None, 401),
        (True, TOKEN, CHANGE, "Bearer wrong", 401),
        (True, TOKEN, CHANGE, f"Bearer {TOKEN}", 200),
        (True, TOKEN, CHANGE, f"bearer   {TOKEN}  ", 200),  # scheme is case-insensitive (RFC 6750 §2.1)
        (True, TOKEN, CHANGE, f"Basic {TOKEN}", 401),
        (True, TOKEN, CHANGE, "Bearer", 401),
        (True, TOKEN, READ, "Bearer wrong", 401),  # a presented token is always checked
        (True, TOKEN, CHANGE, f"Bearer {TOKEN}x", 401),
        (True, TOKEN, CHANGE, f"Bearer {TOKEN[:-1]}", 401),
        # loopback without a token file: local callers may change (documented decision)
        (True, None, READ, None, 200),
        (True, None, CHANGE, None, 200),
        (True, None, CHANGE, "Bearer anything", 200),  # nothing to check it against
        # beyond loopback: everything needs the token
        (False, TOKEN, READ, None, 401),
        (False, TOKEN, READ, "Bearer wrong", 401),
        (False, TOKEN, READ, f"Bearer {TOKEN}", 200),
        (False, TOKEN, CHANGE, None, 401),
        (False, TOKEN, CHANGE, f"Bearer {TOKEN}", 200),
        # beyond loopback without a token file: locked
        (False, None, READ, None, 403),
        (False, None, CHANGE, None, 403),
        (False, None, CHANGE, "Bearer anything", 403),
    ],
)
def test_decision_table(
    loopback: bool, token: str | None, access: Access, auth: str | None, expected: int
) -> None:
    assert status(Policy(loopback, token), access, auth) == expected


def test_refusals_say_what_to_do() -> None:
    locked = decide(Policy(False, None), READ, host=LOCAL)
    assert locked is not None
    assert "admin.token_file is not set" in locked.message
    missing = decide(Policy(True, TOKEN), CHANGE, host=LOCAL)
    assert missing is not None
    assert "bearer token is required for changes" in missing.message
    wrong = decide(Policy(True, TOKEN), CHANGE, authorization="Bearer nope", host=LOCAL)
    assert wrong is not None
    assert wrong.message == "wrong token (see admin.token_file)"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:9090", 200),
        ("127.0.0.5:9090", 200),
        ("localhost:9090", 200),
        ("[::1]:9090", 200),
        ("127.0.0.1", 200),
        ("evil.example.com:9090", 403),  # DNS rebinding: a name resolving to 127.0.0.1
        ("10.0.0.5:9090", 403),
        (None, 403),
    ],
)
def test_loopback_trust_needs_a_loopback_host(host: str | None, expected: int) -> None:
    assert status(Policy(True, None), READ, host=host) == expected
    assert status(Policy(True, None), CHANGE, host=host) == expected


def test_a_valid_token_needs_no_loopback_host() -> None:
    assert status(Policy(True, TOKEN), READ, f"Bearer {TOKEN}", host="lb.example.com:9090") == 200
    assert status(Policy(False, TOKEN), CHANGE, f"Bearer {TOKEN}", host="lb.example.com:9090") == 200


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (None, 200),  # curl, ctl
        ("http://127.0.0.1:9090", 200),  # the dashboard itself
        ("https://evil.example.com", 403),  # cross-site form post (CSRF)
        ("http://127.0.0.1:8080", 403),  # another local port is another origin
        ("null", 403),  # sandboxed frame, file://
    ],
)
def test_token_less_changes_refuse_other_origins(origin: str | None, expected: int) -> None:
    assert status(Policy(True, None), CHANGE, host=LOCAL, origin=origin) == expected
    assert status(Policy(True, None), READ, host=LOCAL, origin=origin) == 200  # reads are not changes


def test_bearer_parsing() -> None:
    assert bearer(None) is None
    assert bearer("Bearer abc") == "abc"
    assert bearer("BEARER abc ") == "abc"
    assert bearer("Basic abc") == ""
    assert bearer("") == ""


@pytest.mark.parametrize(
    ("listen", "host", "port", "loopback"),
    [
        ("127.0.0.1:9090", "127.0.0.1", 9090, True),
        ("127.0.0.42:9090", "127.0.0.42", 9090, True),  # all of 127.0.0.0/8 is loopback
        ("[::1]:9090", "::1", 9090, True),
        ("localhost:9090", "localhost", 9090, True),
        ("0.0.0.0:9090", "0.0.0.0", 9090, False),
        ("[::]:9090", "::", 9090, False),
        ("10.0.1.250:9090", "10.0.1.250", 9090, False),
        ("lb.example.com:9090", "lb.example.com", 9090, False),  # names may change: not trusted
    ],
)
def test_listen_address_decides_loopback(listen: str, host: str, port: int, loopback: bool) -> None:
    assert split_listen(listen) == (host, port)
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("listen", ["9090", "127.0.0.1", "127.0.0.1:http", ":9090", "127.0.0.1:70000"])
def test_bad_listen_values(listen: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:9090|out of range"):
        split_listen(listen)
