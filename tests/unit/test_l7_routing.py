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
    ("host", "allowed"),
    [
        (b"outlook.alwayshotcafe.com", True),
        (b"outlook.alwayshotcafe.com:443", True),
        (b"outlook.alwayshotcafe.com.", True),
        (b"autodiscover.alwayshotcafe.com", True),
        (b"mb1.alwayshotcafe.com", False),
        (b"outlook.alwayshotcafe.com.evil", False),
        (b"[::1]", False),
        (b"", False),
    ],
)
def test_host_check(router: Router, host: bytes, allowed: bool) -> None:
    assert router.host_allowed(host) is allowed
    assert router.host_allowed(host) is allowed
