"""What `casarray check` tells an admin: every problem of the file in one run, each at its line, in the
words of the YAML they wrote (never Python's), with a suggestion for a near miss."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from casarray.config import ConfigErrors, load_config, parse_config

BASE = "namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 10.0.1.11}\n"


def problems_of(text: str, filename: str = "casarray.yaml") -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, filename)
    return info.value.problems


def test_a_misspelt_key_hides_neither_missing_files_nor_other_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outlook.pem").write_text("present")
    path = tmp_path / "casarray.yaml"
    path.write_text(
        "namespace: outlook.alwayshotcafe.com\n"  # 1
        "mode: l7\n"  # 2
        "tls:\n"  # 3
        "  certificate: outlook.pem\n"  # 4
        "  key: /nonexistent/outlook.key\n"  # 5
        "upstream_tls: {ca: internal-ca.pem}\n"  # 6
        "servers:\n"  # 7
        "  - {name: MB1, address: 10.0.1.11}\n"  # 8
        "  - {name: mb1, address: 10.0.1.12}\n"  # 9
        "balanse: roundrobin\n"  # 10
        "admin: {token_file: " + str(tmp_path) + "}\n"  # 11
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, check_files=True)
    assert info.value.problems == [
        f"{path}:5: tls.key: found '/nonexistent/outlook.key', which does not exist; expected an existing file",
        f"{path}:6: upstream_tls.ca: found 'internal-ca.pem', which does not exist (relative to {tmp_path}); "
        "expected an existing file",
        f"{path}:9: servers[1].name: duplicate server name 'mb1' (also servers[0])",
        f"{path}:10: balanse: unknown key 'balanse' (did you mean 'balance'?); expected one of: namespace, "
        "autodiscover, mode, listen, tls, upstream_tls, servers, services, l4_require, balance, affinity, "
        "retries, affinity_cookie, trusted_proxies, host_check, health, timeouts, limits, admin, peers, log, "
        "workers, mail",
        f"{path}:11: admin.token_file: found {str(tmp_path)!r}, which is a directory; expected a file",
    ]


def test_files_are_checked_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_text(BASE + "upstream_tls: {ca: /nonexistent/ca.pem}\n")
    assert load_config(path).upstream_tls.ca == "/nonexistent/ca.pem"  # ctl, run: the engine says it


def test_files_are_checked_even_when_their_section_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_text(
        BASE + "mode: l7\ntls: {certificate: /nonexistent/c.pem, key: /nonexistent/k.pem, min_version: 1.1}\n"
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, check_files=True)
    assert sorted(p.split(": ")[1] for p in info.value.problems) == [
        "tls.certificate",
        "tls.key",
        "tls.min_version",
    ]


def test_a_rule_across_settings_is_judged_only_on_valid_settings() -> None:
    # mode is invalid: whether cookie affinity fits it cannot be known, so only mode is reported (and
    # 'l8' is as near to l4 as to l7: no guess).
    assert problems_of(BASE + "mode: l8\naffinity: cookie\n") == [
        "casarray.yaml:4: mode: found 'l8'; expected 'l4' or 'l7'"
    ]
    # The namespace is invalid, the servers are not: their rule still runs.
    assert problems_of(
        BASE.replace("outlook.alwayshotcafe.com", "outlook") + "  - {name: mb1, address: x}\n"
    ) == [
        "casarray.yaml:1: namespace: found 'outlook'; expected a DNS name such as outlook.example.com",
        "casarray.yaml:4: servers[1].name: duplicate server name 'mb1' (also servers[0])",
    ]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (
            "balance: leastconns",
            "balance: found 'leastconns'; expected 'roundrobin', 'leastconn' or 'source' (did you mean 'leastconn'?)",
        ),
        (
            "services: [owa, mapii]",
            "services[1]: found 'mapii'; expected 'owa', 'ecp', 'ews', 'mapi', 'rpc', 'oab', 'eas', 'autodiscover' or 'powershell' (did you mean 'mapi'?)",
        ),
        (
            "timeouts: {conect: 5s}",
            "timeouts.conect: unknown key 'conect' (did you mean 'connect'?); expected one of: ",
        ),
        ("helth: {rise: 3}", "helth: unknown key 'helth' (did you mean 'health'?)"),
        ("balance: random", "balance: found 'random'; expected 'roundrobin', 'leastconn' or 'source'"),
    ],
)
def test_a_near_miss_gets_a_suggestion(line: str, says: str) -> None:
    (problem,) = problems_of(BASE + line + "\n")
    assert problem.startswith(f"casarray.yaml:4: {says}"), problem
    if "random" in line:
        assert "did you mean" not in problem  # nothing close: no guess


def test_a_choice_is_read_in_any_case() -> None:
    config = parse_config(
        BASE + "mode: L7\ntls: {certificate: c.pem, key: k.pem, min_version: 1.3}\nbalance: LeastConn\n"
        "affinity: None\nservices: [OWA, Ews]\nl4_require: [OWA]\nlog: {level: DEBUG, format: JSON}\n"
        "mail: {imap: {ports: [143], balance: Source}}\n"
    )
    assert (config.mode, config.balance, config.affinity.mode) == ("l7", "leastconn", "none")
    assert config.services == ["owa", "ews"]
    assert config.l4_require == ["owa"]
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.tls is not None
    assert config.tls.min_version == "1.3"
    assert config.mail is not None
    assert config.mail.imap is not None
    assert config.mail.imap.balance == "source"


# Inputs whose message used to name Python's types or values (None, NoneType, CommentedSeq, "a valid
# dictionary or instance of Listen", "Input should be"), each with what the admin should read instead.
PYTHON_LEAKS = [
    ("listen: [1]", "listen: found a list; expected a mapping of settings"),
    ("listen: ~", "listen: found nothing (an empty value); expected a mapping of settings"),
    ("tls: 5", "tls: found 5; expected a mapping of settings"),
    ("health: {rise: ~}", "health.rise: found nothing (an empty value); expected a whole number"),
    ("health: {rise: 1.5}", "health.rise: found 1.5; expected a whole number"),
    ("health: {enabled: maybe}", "health.enabled: found 'maybe'; expected true or false"),
    ("services: ~", "services: found nothing (an empty value); expected a list"),
    ("admin: {listen: [1]}", "admin.listen: found a list; expected text"),
    ("workers: 0", "workers: found 0; expected at least 1"),
    ("retries: 11", "retries: found 11; expected at most 10"),
    (
        "trusted_proxies: [10.0.0.0/8, x]",
        "trusted_proxies[1]: found 'x'; expected a network such as 10.0.0.0/8",
    ),
    ("affinity_cookie: 'a b'", "affinity_cookie: found 'a b'; expected a cookie name"),
    (
        "tls: {extra: [~], certificate: c, key: k}",
        "tls.extra[0]: found nothing (an empty value); expected a mapping",
    ),
    ("servers: [{name: '', address: x}]", "servers[0].name: found empty text; expected at least 1 character"),
    ("servers: []", "servers: found an empty list; expected at least 1 entry"),
    (
        "servers: [{name: A, address: x, mail_ports: {imap: 1}}]",
        "servers[0].mail_ports.imap: found the key 'imap'; expected a whole number as the key",
    ),
    ("mode: true", "mode: found true; expected 'l4' or 'l7'"),
    (
        "namespace: outlook.alwayshotcafe.com",
        "invalid YAML: duplicate key 'namespace' in one mapping; expected each key once",
    ),
    ("servers: ~", "invalid YAML: duplicate key 'servers' in one mapping"),
    ("[a]: 1", "(top level): found a list as a key; expected a key name: namespace,"),
    ("~: 1", "(top level): found null (~) as a key; expected a key name: namespace,"),
]


@pytest.mark.parametrize(("line", "says"), PYTHON_LEAKS, ids=[line for line, _ in PYTHON_LEAKS])
def test_no_python_names_reach_the_admin(line: str, says: str) -> None:
    text = BASE + line + "\n"
    if line.startswith("servers: "):
        text = text.replace("servers:\n  - {name: MB1, address: 10.0.1.11}\n", "")
    if line.startswith("servers: ~"):
        text = BASE + line + "\n"  # the duplicate key, with a value ruamel would quote as Python's
    (problem,) = problems_of(text)
    assert re.match(r"casarray\.yaml:\d+: ", problem), problem
    assert says in problem, problem
    for python in ("None", "NoneType", "Commented", "dict", "Input should", "instance of", "valid string"):
        assert python not in problem, problem


def test_a_flood_of_typos_is_worded_only_as_far_as_shown() -> None:
    """Every problem is located (to list them in file order) but only the first 50 are worded."""
    text = BASE + "services: [" + ", ".join(["owaa"] * 20_000) + "]\n"
    problems = problems_of(text)
    assert len(problems) == 51
    assert problems[-1] == "casarray.yaml: … and 19950 more problems"
