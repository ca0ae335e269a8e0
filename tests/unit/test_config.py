import textwrap

import pytest

from casarray.config import ConfigErrors, parse_config

GOOD = """\
namespace: outlook.alwayshotcafe.com
autodiscover: autodiscover.alwayshotcafe.com
mode: l4
listen:
  address: 10.0.1.250
  https_port: 443
servers:
  - {name: MB1, address: 10.0.1.11, port: 443, weight: 1}
  - {name: MB2, address: 10.0.1.12}
balance: roundrobin
health: {interval: 5s, timeout: 3s, rise: 2, fall: 2}
timeouts: {connect: 5s, client_idle: 1h, server_idle: 1h}
limits: {maxconn: 20000}
admin: {listen: 127.0.0.1:9090, token_file: /etc/casarray/admin.token}
mail: {imap: {ports: [143, 993]}, pop3: {ports: [110, 995]}, smtp: {ports: [25, 587]}}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(textwrap.dedent(text), "casarray.yaml")
    return info.value.problems


def test_the_design_example_is_valid_and_defaults_fit_exchange() -> None:
    cfg = parse_config(GOOD, "casarray.yaml")
    assert cfg.servers[1].port == 443
    assert cfg.timeouts.client_idle == 3600.0  # ActiveSync Ping holds up to 59 min
    assert cfg.health.interval == 5.0
    assert cfg.services == ["owa", "ecp", "ews", "mapi", "rpc", "oab", "eas", "autodiscover", "powershell"]
    assert cfg.required_services == tuple(cfg.services)
    assert cfg.names == ("outlook.alwayshotcafe.com", "autodiscover.alwayshotcafe.com")
    assert cfg.check_server_name == "outlook.alwayshotcafe.com"
    assert cfg.retries == 2


def test_misspelt_key_is_an_error_on_its_line() -> None:
    problems = errors_of(
        GOOD.replace("{name: MB2, address: 10.0.1.12}", "{name: MB2, address: 10.0.1.12, wieght: 2}")
    )
    assert problems == [
        "casarray.yaml:9: servers[1].wieght: unknown key 'wieght' (did you mean 'weight'?); "
        "expected one of: name, address, port, weight, maxconn, mail_ports"
    ]


def test_each_problem_names_line_key_found_and_expected() -> None:
    problems = errors_of("""\
        namespace: outlook.alwayshotcafe.com
        servers:
          - name: MB1
            address: 10.0.1.11
            port: 99999
        health:
          interval: 5x
        balance: random
        """)
    assert "casarray.yaml:5: servers[0].port: found 99999; expected at most 65535" in problems
    assert any(
        p.startswith("casarray.yaml:7: health.interval: found '5x'; expected a duration") for p in problems
    )
    assert any(
        p.startswith("casarray.yaml:8: balance: found 'random'; expected ") and "'roundrobin'" in p
        for p in problems
    )


def test_missing_required_key() -> None:
    assert errors_of("servers: [{name: MB1, address: 10.0.1.11}]\n") == [
        "casarray.yaml:1: namespace: required key is missing"
    ]


def test_bad_namespace_and_listen_address() -> None:
    problems = errors_of("""\
        namespace: not_a_name
        listen: {address: outlook}
        servers: [{name: MB1, address: 10.0.1.11}]
        """)
    assert problems == [
        "casarray.yaml:1: namespace: found 'not_a_name'; expected a DNS name such as outlook.example.com",
        "casarray.yaml:2: listen.address: found 'outlook'; expected an IP address such as 10.0.1.250",
    ]


def test_unknown_service_and_l4_require_outside_services() -> None:
    problems = errors_of("""\
        namespace: outlook.alwayshotcafe.com
        servers: [{name: MB1, address: 10.0.1.11}]
        services: [owa, ews]
        l4_require: [owa, mapi]
        """)
    assert problems == ["casarray.yaml:4: l4_require[1]: 'mapi' is not in services (owa, ews)"]


def test_cross_field_rules_name_their_line() -> None:
    problems = errors_of("""\
        namespace: outlook.alwayshotcafe.com
        mode: l7
        servers:
          - {name: MB1, address: 10.0.1.11}
          - {name: mb1, address: 10.0.1.12}
        affinity: cookie
        """)
    assert "casarray.yaml:5: servers[1].name: duplicate server name 'mb1' (also servers[0])" in problems
    assert (
        "casarray.yaml:2: mode: mode: l7 needs a tls: section (certificate and key clients see)" in problems
    )


def test_cookie_affinity_needs_l7() -> None:
    problems = errors_of("""\
        namespace: outlook.alwayshotcafe.com
        servers: [{name: MB1, address: 10.0.1.11}]
        affinity: cookie
        """)
    assert problems == ["casarray.yaml:3: affinity: cookie affinity needs mode: l7 (l4 cannot see cookies)"]


def test_yaml_syntax_error_names_the_line() -> None:
    problems = errors_of("namespace: outlook.alwayshotcafe.com\nservers: [\n  {name: MB1\n")
    assert len(problems) == 1
    assert problems[0].startswith("casarray.yaml:")
    assert "invalid YAML" in problems[0]


def test_duplicate_key_is_an_error() -> None:
    problems = errors_of(
        "namespace: a.example.com\nnamespace: b.example.com\nservers: [{name: A, address: x}]\n"
    )
    assert "invalid YAML" in problems[0]
    assert problems[0].startswith("casarray.yaml:2:")


def test_not_a_mapping() -> None:
    assert errors_of("- just\n- a list\n") == [
        "casarray.yaml:1: found a list; expected a mapping of settings (namespace:, servers:, …)"
    ]


def test_config_is_frozen() -> None:
    cfg = parse_config(GOOD)
    with pytest.raises(ValueError, match="frozen"):
        cfg.mode = "l7"  # type: ignore[misc]


# -- affinity: a mode alone, or a section -----------------------------------------------------------

L7 = """\
namespace: outlook.alwayshotcafe.com
mode: l7
tls: {certificate: c.pem, key: k.pem}
servers: [{name: MB1, address: 10.0.1.11}]
"""


def test_affinity_as_a_mode_alone_is_the_section_with_defaults() -> None:
    for text in ("affinity: Cookie\n", "affinity: {mode: cookie}\n"):
        cfg = parse_config(L7 + text)
        assert (cfg.affinity.mode, cfg.affinity.cookie, cfg.affinity.secret_file) == ("cookie", None, None)
        assert cfg.cookie_name == "CASARRAY"
    assert parse_config(L7).affinity.mode == "none"


def test_affinity_section_names_the_cookie_and_the_secret_file() -> None:
    cfg = parse_config(
        L7 + "affinity:\n  mode: cookie\n  cookie: CASID\n  secret_file: /etc/casarray/affinity.secret\n"
    )
    assert cfg.cookie_name == "CASID"
    assert cfg.affinity.secret_file == "/etc/casarray/affinity.secret"


def test_the_older_affinity_cookie_key_is_still_read() -> None:
    assert parse_config(L7 + "affinity: cookie\naffinity_cookie: CASID\n").cookie_name == "CASID"


def test_the_cookie_named_twice_is_an_error() -> None:
    problems = errors_of(L7 + "affinity: {mode: cookie, cookie: A}\naffinity_cookie: B\n")
    assert problems == [
        "casarray.yaml:6: affinity_cookie: the cookie is named twice (affinity.cookie and this older "
        "spelling); keep affinity.cookie"
    ]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (
            "affinity: sticky",
            "casarray.yaml:5: affinity.mode: found 'sticky'; expected 'none', 'source' or 'cookie'",
        ),
        (
            "affinity: {mode: cookies}",
            "casarray.yaml:5: affinity.mode: found 'cookies'; expected 'none', 'source'",
        ),
        ("affinity: 5", "casarray.yaml:5: affinity: found 5; expected none, source or cookie, or a section"),
        ("affinity: [cookie]", "casarray.yaml:5: affinity: found a list; expected none, source or cookie"),
        ("affinity: {mode: cookie, secret: x}", "casarray.yaml:5: affinity.secret: unknown key 'secret'"),
        (
            "affinity: {cookie: 'a b'}",
            "casarray.yaml:5: affinity.cookie: found 'a b'; expected a cookie name",
        ),
    ],
)
def test_affinity_errors_name_the_line_and_what_is_expected(line: str, says: str) -> None:
    (problem,) = errors_of(L7 + line + "\n")
    assert problem.startswith(says), problem


def test_upstream_release_is_a_duration_and_0_turns_it_off() -> None:
    assert parse_config(GOOD, "casarray.yaml").timeouts.upstream_release == 5.0
    off = parse_config(GOOD.replace("server_idle: 1h}", "server_idle: 1h, upstream_release: 0}"), "c.yaml")
    assert off.timeouts.upstream_release == 0.0
    slow = parse_config(GOOD.replace("server_idle: 1h}", "server_idle: 1h, upstream_release: 30s}"), "c.yaml")
    assert slow.timeouts.upstream_release == 30.0
    (problem,) = errors_of(GOOD.replace("server_idle: 1h}", "server_idle: 1h, upstream_release: never}"))
    assert problem == (
        "casarray.yaml:12: timeouts.upstream_release: found 'never'; "
        "expected a duration such as 250ms, 5s, 1h or a number of seconds"
    )
