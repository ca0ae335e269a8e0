"""How a node finds itself among peers.nodes (one list on every node), against this machine's own
addresses and routes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest

from casarray.admin.peers import is_this_node
from casarray.errors import reason_of
from tests.support import free_port


@pytest.mark.parametrize(
    ("url", "listen", "itself"),
    [
        ("http://127.0.0.1:9090", "127.0.0.1:9090", True),
        ("http://localhost:9090", "127.0.0.1:9090", True),
        ("http://127.0.0.1:9091", "127.0.0.1:9090", False),  # another node on the same machine
        ("http://127.0.0.2:9090", "127.0.0.1:9090", False),  # another address this node does not listen on
        ("http://127.0.0.5:9090", "0.0.0.0:9090", True),  # a wildcard listens on every local address
        ("http://[::1]:9090", "[::]:9090", True),
        ("http://198.51.100.7:9090", "0.0.0.0:9090", False),  # not an address of this machine
        ("http://198.51.100.7:9090", "198.51.100.7:9091", False),
        ("http://no-such-node.invalid:9090", "0.0.0.0:9090", False),  # a name that does not resolve
    ],
)
def test_a_node_is_the_url_of_its_own_admin_listen(url: str, listen: str, itself: bool) -> None:
    assert asyncio.run(is_this_node(url, listen)) is itself


def test_with_a_wildcard_listen_a_node_knows_its_own_interface_address() -> None:
    """The same file on every node: admin.listen 0.0.0.0:9090, peers.nodes the nodes' own addresses."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command to list this machine's addresses")
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
    ).stdout.split()
    addresses = [shown[i + 1].partition("/")[0] for i, word in enumerate(shown) if word == "inet"]
    if not addresses:
        pytest.skip("this machine has no global IPv4 address")
    mine = addresses[0]
    assert asyncio.run(is_this_node(f"http://{mine}:9090", "0.0.0.0:9090"))
    assert not asyncio.run(is_this_node(f"http://{mine}:9090", "127.0.0.1:9090"))
    neighbour = mine.rpartition(".")[0] + "." + ("7" if not mine.endswith(".7") else "8")
    assert not asyncio.run(is_this_node(f"http://{neighbour}:9090", "0.0.0.0:9090"))


async def _get(url: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.get(url)


def test_a_refused_connection_is_said_in_the_system_s_words() -> None:
    """The asyncio HTTP client wraps the refusal in "All connection attempts failed"."""
    with pytest.raises(httpx.ConnectError) as info:
        asyncio.run(_get(f"http://127.0.0.1:{free_port()}/api/peers/states"))
    assert reason_of(info.value) == "Connection refused"
    assert reason_of(ValueError("bad\nsecond line")) == "bad"
