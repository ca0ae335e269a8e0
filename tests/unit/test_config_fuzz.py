"""Fuzz the config loader: any text or bytes gives a Config or ConfigErrors — nothing else escapes,
and every problem is one line that names the file.

The short runs are part of `make test`; the `fuzz`-marked ones are the long runs of `make fuzz`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casarray.config import Config, ConfigErrors, parse_config
from casarray.config.load import UNEXPECTED

GOOD = """\
namespace: outlook.alwayshotcafe.com
autodiscover: autodiscover.alwayshotcafe.com
mode: l7
listen: {address: 10.0.1.250, https_port: 443, http_port: 80}
tls: {certificate: /etc/casarray/outlook.pem, key: /etc/casarray/outlook.key}
upstream_tls: {ca: /etc/casarray/internal-ca.pem, verify: true}
servers:
  - {name: MB1, address: 10.0.1.11, port: 443, weight: 1}
  - name: MB2
    address: 10.0.1.12
    mail_ports: {993: 10993}
services: [owa, ecp, ews, mapi, rpc, oab, eas, autodiscover, powershell]
balance: roundrobin
affinity: cookie
trusted_proxies: [10.0.0.0/8]
health: {interval: 5s, timeout: 3s, rise: 2, fall: 2}
timeouts: {connect: 5s, client_idle: 1h, server_idle: 1h, grace: 30s}
limits: {maxconn: 20000}
admin: {listen: 127.0.0.1:9090, token_file: /etc/casarray/admin.token}
log: {level: info, access: true}
mail: {imap: {ports: [143, 993]}, pop3: {ports: [110, 995]}, smtp: {ports: [25, 587]}}
"""

# The pieces YAML is made of, and values YAML reads as something else than text.
_TOKENS = [
    "\n",
    " ",
    "  ",
    "\t",
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "?",
    "? ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!int ",
    "!!str ",
    "!!float ",
    "!!timestamp ",
    "!!binary ",
    "!!python/object:os.system ",
    "!x ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "#",
    "'",
    '"',
    "|",
    ">",
    "\\",
    "\\x00",
    "\\u",
    "~",
    "null",
    "true",
    "yes",
    "on",
    ".inf",
    "-.nan",
    "0x",
    "0o",
    "0b",
    "1_000",
    "9" * 30,
    "1e400",
    "2001-01-01",
    "2001-13-45 12:00:00",
    "1:30:00",
    "5s",
    "1h",
    "64MiB",
    "namespace",
    "servers",
    "name",
    "address",
    "port",
    "health",
    "interval",
    "timeouts",
    "mode",
    "l7",
    "mail",
    "imap",
    "ports",
    "services",
    "owa",
    "outlook.alwayshotcafe.com",
    "10.0.1.11",
    "\u00e9",
    "\ufeff",
    "\u2028",
    "\x85",
    "\x00",
    "\x07",
    "\x7f",
    "\ud800",
]
yamlish = st.lists(st.sampled_from(_TOKENS) | st.text(max_size=8), max_size=60).map("".join)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """The valid config with a few bytes replaced, inserted or deleted."""
    data = bytearray(GOOD.encode())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "token"]))
        if kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            data[at : at + draw(st.integers(1, 8))] = b""
        else:
            data[at:at] = draw(st.sampled_from(_TOKENS)).encode("utf-8", "surrogatepass")
    return bytes(data)


def check(document: str | bytes) -> None:
    """A Config, or ConfigErrors whose every problem is one line naming the file; any other exception
    fails the test, and so does the loader's last-resort message for a failure it did not foresee."""
    try:
        outcome: Config | ConfigErrors = parse_config(document, "fuzz.yaml")
    except ConfigErrors as exc:
        outcome = exc
    if isinstance(outcome, Config):
        return
    assert outcome.problems
    for problem in outcome.problems:
        assert problem.startswith("fuzz.yaml"), problem
        assert problem.isprintable(), problem  # one line: no \n, U+2028 or other break inside
        assert UNEXPECTED not in problem, problem


_SHORT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LONG = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))


@_SHORT
@given(yamlish)
def test_yaml_ish_text(document: str) -> None:
    check(document)


@_SHORT
@given(mutations())
def test_mutated_valid_config(document: bytes) -> None:
    check(document)


@_SHORT
@given(st.binary(max_size=200))
def test_any_bytes(document: bytes) -> None:
    check(document)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@_LONG
@given(yamlish)
def test_yaml_ish_text_long(document: str) -> None:
    check(document)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@_LONG
@given(mutations())
def test_mutated_valid_config_long(document: bytes) -> None:
    check(document)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@_LONG
@given(st.binary(max_size=2000))
def test_any_bytes_long(document: bytes) -> None:
    check(document)
