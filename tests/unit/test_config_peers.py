"""`peers:`: the admin URLs of the nodes and their token, with errors that name line, key and value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from casarray.config import ConfigErrors, load_config, parse_config

BASE = """\
namespace: outlook.alwayshotcafe.com
servers: [{name: MB1, address: 10.0.1.11}]
admin: {listen: '0.0.0.0:9090', token_file: /etc/casarray/admin.token}
"""


def problems(peers: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(base + textwrap.dedent(peers), "casarray.yaml")
    return info.value.problems


def test_one_list_for_every_node_is_read_as_admin_urls() -> None:
    config = parse_config(
        BASE
        + "peers: {nodes: ['http://10.0.1.2:9090/', 'HTTP://Node-B.example.com:9090', 'http://[fd00::3]:9090']}\n"
    )
    assert config.peers is not None
    assert config.peers.nodes == [
        "http://10.0.1.2:9090",
        "http://node-b.example.com:9090",
        "http://[fd00::3]:9090",
    ]
    assert (config.peers.token_file, config.peers.timeout, config.peers.sync_interval) == (None, 2.0, 10.0)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://10.0.1.2:9090", "the admin API speaks plain http (no TLS of its own)"),
        ("10.0.1.2:9090", "the scheme http:// is missing"),
        ("http://10.0.1.2", "the port is missing (the port of that node's admin.listen)"),
        ("http://10.0.1.2:9090/api", "only http://host:port, without a path, query or user"),
        ("http://admin@10.0.1.2:9090", "only http://host:port, without a path, query or user"),
        ("http://10.0.1.2:99999", "port 99999 is out of range"),
    ],
)
def test_a_url_that_is_not_an_admin_api_is_named_at_its_line(url: str, words: str) -> None:
    found = problems(f"peers:\n  nodes:\n    - http://10.0.1.3:9090\n    - '{url}'\n")
    assert len(found) == 1
    assert found[0].startswith(f"casarray.yaml:7: peers.nodes[1]: found '{url}'; expected an admin API URL")
    assert words in found[0]


def test_the_rules_across_settings() -> None:
    assert problems("peers: {nodes: [http://10.0.1.2:9090, 'http://10.0.1.2:9090/']}\n") == [
        "casarray.yaml:4: peers.nodes[1]: http://10.0.1.2:9090 is listed twice (also nodes[0])"
    ]
    no_admin = BASE.replace("admin: {listen: '0.0.0.0:9090', token_file: /etc/casarray/admin.token}\n", "")
    assert problems("peers: {nodes: [http://127.0.0.1:9091]}\n", no_admin) == [
        "casarray.yaml:3: peers: needs an admin: section (the other nodes reach this one through its "
        "admin API)"
    ]
    no_token = BASE.replace(", token_file: /etc/casarray/admin.token", "")
    assert problems("peers: {nodes: [http://127.0.0.1:9091, http://10.0.1.2:9090]}\n", no_token) == [
        "casarray.yaml:4: peers: http://10.0.1.2:9090 is beyond loopback, where the admin API refuses every "
        "request without a token: set admin.token_file (the same token on every node) or peers.token_file"
    ]
    # On loopback (one machine), no token is needed; a peers.token_file alone will do elsewhere.
    assert parse_config(no_token + "peers: {nodes: [http://127.0.0.1:9091, 'http://localhost:9092']}\n")
    assert parse_config(no_token + "peers: {nodes: [http://10.0.1.2:9090], token_file: /etc/peers.token}\n")


def test_check_names_a_missing_peers_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "casarray.yaml"
    (tmp_path / "admin.token").write_text("t\n")
    path.write_text(
        BASE.replace("/etc/casarray/admin.token", "admin.token")
        + "peers:\n  nodes: [http://10.0.1.2:9090]\n  token_file: peers.token\n"
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, check_files=True)
    assert info.value.problems == [
        f"{path}:6: peers.token_file: found 'peers.token', which does not exist (relative to {tmp_path}); "
        "expected an existing file"
    ]
