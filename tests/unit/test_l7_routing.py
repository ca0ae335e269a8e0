"""The l7 router's answers (service, redirect, 404, Host check), the same on a memo hit as on a miss."""

import textwrap

import pytest

from casarray.config.load import parse_config
from casarray.engine.l7 import REDIRECT, Router

CONFIG = textwrap.dedent(
    """\
    namespace: outlook.alwayshotcafe.com
    autodiscover: autodiscover.alwayshotcafe.com
    services: [owa, ecp, ews, mapi, autodiscover]
    servers: [{name: MB1, address: 10.0.1.11}]
    """
)


@pytest.fixture
def router() -> Router:
    return Router(parse_config(CONFIG), [])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/owa/", "owa"),
        (b"/OWA/auth/logon.aspx?replaceCurrent=1", "owa"),
        (b"/ews/Exchange.asmx", "ews"),
        (b"/EWS/Exchange.asmx", "ews"),
        (b"/mapi/emsmdb/?MailboxId=x", "mapi"),
        (b"/Autodiscover/Autodiscover.xml", "autodiscover"),
        (b"/", REDIRECT),
        (b"/?a=/b", REDIRECT),
        (b"/owa", REDIRECT),
        (b"/OWA?x=/y", REDIRECT),  # the slash after "?" is part of the query, not a second segment
        (b"/owax/", None),
        (b"/oab/x.xml", None),  # a catalog service that is not configured here
        (b"/favicon.ico", None),
        (b"//owa/", "owa"),  # leading slashes ignored like IIS
    ],
)
def test_route_is_the_same_on_a_memo_hit(router: Router, target: bytes, expected: str | None) -> None:
    assert router.route(target) == expected
    assert router.route(target) == expected  # second time from the memo, when memoised


def test_a_full_route_memo_is_cleared_not_grown(router: Router) -> None:
    for i in range(2000):
        assert router.route(b"/nothing%d/x" % i) is None
    assert len(router._routes) <= 256
    assert router.route(b"/owa/x") == "owa"


@pytest.mark.parametrize(
    ("host", "authority"),
    [
        (b"outlook.alwayshotcafe.com", b"outlook.alwayshotcafe.com"),
        (b"outlook.alwayshotcafe.com:443", b"outlook.alwayshotcafe.com"),
        (b"outlook.alwayshotcafe.com.", b"outlook.alwayshotcafe.com"),
        (b"autodiscover.alwayshotcafe.com", b"autodiscover.alwayshotcafe.com"),
        (b"mb1.alwayshotcafe.com", None),
        (b"outlook.alwayshotcafe.com.evil", None),
        (b"[::1]", None),
        (b"", None),
        # The port is checked too: a port that is not a port, or not ours, is refused (a redirect built
        # from "outlook…:x@evil.example" would send a browser elsewhere).
        (b"outlook.alwayshotcafe.com:x@evil.example", None),
        (b"outlook.alwayshotcafe.com:@evil.example", None),
        (b"outlook.alwayshotcafe.com:8443", None),
        (b"outlook.alwayshotcafe.com:0443", b"outlook.alwayshotcafe.com"),
        (b"outlook.alwayshotcafe.com:99999", None),
        (b"outlook.alwayshotcafe.com:", None),
        (b"outlook.alwayshotcafe.com/x", None),
        (b"user@outlook.alwayshotcafe.com", None),
    ],
)
def test_host_check_covers_name_and_port(router: Router, host: bytes, authority: bytes | None) -> None:
    assert router.authority(host) == authority
    assert router.authority(host) == authority  # second time from the memo


def test_a_host_may_name_the_listener_port() -> None:
    router = Router(parse_config(CONFIG + "listen: {address: 127.0.0.1, https_port: 8443}\n"), [])
    assert router.authority(b"outlook.alwayshotcafe.com:8443") == b"outlook.alwayshotcafe.com:8443"
    assert router.authority(b"outlook.alwayshotcafe.com:443") == b"outlook.alwayshotcafe.com"
    assert router.authority(b"outlook.alwayshotcafe.com:8444") is None
