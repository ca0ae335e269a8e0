"""The one host:port parser (casarray/netaddr.py): listen addresses, DNS servers, Host values."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casarray.netaddr import split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("10.0.1.250", ("10.0.1.250", None)),
        ("[::1]:9090", ("::1", 9090)),
        ("[2001:db8::53]", ("2001:db8::53", None)),
        ("2001:db8::53", ("2001:db8::53", None)),  # a bare IPv6 address names no port
        ("::", ("::", None)),
        ("localhost:9090", ("localhost", 9090)),
        ("outlook.alwayshotcafe.com", ("outlook.alwayshotcafe.com", None)),
        ("Outlook.AlwaysHotCafe.com.:443", ("Outlook.AlwaysHotCafe.com.", 443)),  # case and dot kept
        ("name:0", ("name", 0)),
        ("name:65535", ("name", 65535)),
        ("name:00443", ("name", 443)),
    ],
)
def test_good_forms(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


def test_default_port_when_none_is_named() -> None:
    assert split_host_port("10.0.0.53", default_port=53) == ("10.0.0.53", 53)
    assert split_host_port("[::1]", default_port=53) == ("::1", 53)
    assert split_host_port("2001:db8::53", default_port=53) == ("2001:db8::53", 53)
    assert split_host_port("10.0.0.53:5353", default_port=53) == ("10.0.0.53", 5353)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("name:65536", "out of range"),
        ("name:99999", "out of range"),
        ("name:123456", "not a number"),  # more digits than a port has
        ("name:x@evil.example", "not a number"),
        ("x@evil.example:443", "not a host name"),
        ("name:443@evil.example", "not a number"),
        ("name:", "port is missing"),
        (":443", "host is missing"),
        ("", "host is missing"),
        ("name:-1", "not a number"),
        ("name: 443", "not a number"),
        ("name:٤٤٣", "not a number"),  # Arabic-Indic digits pass str.isdigit(), not a port
        ("na me:443", "not a host name"),
        ("exämple.com", "not a host name"),
        ("a/b:443", "not a host name"),
        ("name:443:1", "too many colons"),
        ("::1:9090:x", "too many colons"),
        ("[::1", "no closing bracket"),
        ("[::1]x", "only ':port'"),
        ("[::1]:", "port is missing"),
        ("[evil.example]:443", "not an IPv6 address"),
        ("[127.0.0.1]:443", "not an IPv6 address"),
    ],
)
def test_junk_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_host_port(text)


@given(st.ip_addresses(v=4), st.integers(0, 65535))
def test_any_ipv4_and_port_round_trips(ip: ipaddress.IPv4Address, port: int) -> None:
    assert split_host_port(f"{ip}:{port}") == (str(ip), port)


@given(st.ip_addresses(v=6), st.integers(0, 65535))
def test_any_ipv6_in_brackets_round_trips(ip: ipaddress.IPv6Address, port: int) -> None:
    assert split_host_port(f"[{ip}]:{port}") == (str(ip), port)
    assert split_host_port(str(ip), default_port=7) == (str(ip), 7)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        host, port = split_host_port(text)
    except ValueError:
        return
    assert host
    assert port is None or 0 <= port <= 65535
    assert not {"@", "/", " "} & set(host)
