"""Where a client looks for Autodiscover and which redirects it follows (doctor/discovery.py), and how
what it is told is judged (doctor/told.py). Plain values, no sockets."""

from __future__ import annotations

import pytest

from casarray.config import Config, parse_config
from casarray.doctor.autodiscover import Settings, parse_pox
from casarray.doctor.discovery import (
    Candidate,
    RedirectPolicy,
    Search,
    dns_candidates,
    domain_of,
    http_redirect_url,
    https_url,
    scp_candidates,
    srv_candidate,
    srv_name,
)
from casarray.doctor.reply import Reply, offered_schemes
from casarray.doctor.told import autoconfiguration, judge_reply, on_namespace, service_of, trailing_slash
from casarray.exchange import catalog
from tests.unit.tools.test_doctor_autodiscover import fixture

NS = "outlook.alwayshotcafe.com"
AD = "autodiscover.alwayshotcafe.com"


def config(port: int = 443) -> Config:
    return parse_config(
        f"namespace: {NS}\nautodiscover: {AD}\nlisten: {{address: 10.0.1.250, https_port: {port}}}\n"
        "servers: [{name: MB1, address: 10.0.1.11}]\n"
    )


# -- discovery -------------------------------------------------------------------------------------


def test_outlook_order_scp_then_root_domain_then_autodiscover_domain() -> None:
    scp = [
        "https://mb1.alwayshotcafe.com/Autodiscover/Autodiscover.xml",
        f"https://{AD}/Autodiscover/Autodiscover.xml",
    ]
    order = scp_candidates([*scp, scp[0]]) + dns_candidates("alwayshotcafe.com", 443)
    assert order == [
        Candidate("SCP", scp[0]),
        Candidate("SCP", scp[1]),
        Candidate("root domain", "https://alwayshotcafe.com/Autodiscover/Autodiscover.xml"),
        Candidate("autodiscover domain", f"https://{AD}/Autodiscover/Autodiscover.xml"),
    ]
    assert http_redirect_url("alwayshotcafe.com") == f"http://{AD}/Autodiscover/Autodiscover.xml"
    assert http_redirect_url("alwayshotcafe.com", 8080) == f"http://{AD}:8080/Autodiscover/Autodiscover.xml"
    assert srv_name("alwayshotcafe.com") == "_autodiscover._tcp.alwayshotcafe.com"
    assert (
        srv_candidate("mail.alwayshotcafe.com.", 443).url
        == "https://mail.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    # The lab's balancer listens on a high port: the client is pointed there, as the plan points URLs.
    assert https_url(AD, 8443) == f"https://{AD}:8443/Autodiscover/Autodiscover.xml"


@pytest.mark.parametrize("text", ["alice", "alice@", "@alwayshotcafe.com", "alice@localhost", "a b@x.com"])
def test_an_address_must_be_user_at_domain(text: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        domain_of(text)


def test_domain_of_lowers_the_domain() -> None:
    assert domain_of("Alice@AlwaysHotCafe.COM") == "alwayshotcafe.com"


def test_redirects_only_to_https_allowed_names_and_at_most_n() -> None:
    policy = RedirectPolicy.build([NS, AD, "Mail.Partner.example."], limit=2)
    assert policy.refusal(f"https://{AD}/Autodiscover/Autodiscover.xml", 0) is None
    assert policy.refusal("https://mail.partner.example/Autodiscover/Autodiscover.xml", 1) is None
    refused = policy.refusal(f"http://{AD}/Autodiscover/Autodiscover.xml", 0)
    assert refused is not None
    assert "http is not https" in refused
    refused = policy.refusal("https://evil.example/Autodiscover/Autodiscover.xml", 0)
    assert refused is not None
    assert "evil.example is not a name you allow" in refused
    assert "--allow-redirect" in refused
    refused = policy.refusal(f"https://{AD}/Autodiscover/Autodiscover.xml", 2)
    assert refused is not None
    assert "2 redirects already" in refused
    refused = policy.refusal("/Autodiscover/Autodiscover.xml", 0)
    assert refused is not None
    assert "not an absolute URL" in refused
    # redirectAddr: a new search for the new domain, which must reach an allowed name.
    assert policy.address_refusal("alice@alwayshotcafe.com", 0) is None
    refused = policy.address_refusal("alice@elsewhere.example", 0)
    assert refused is not None
    assert "Autodiscover for elsewhere.example is on none of the names" in refused
    refused = policy.address_refusal("not-an-address", 0)
    assert refused is not None
    assert "not an e-mail address" in refused


def test_a_search_follows_redirects_as_a_client_does() -> None:
    """redirectUrl/302 are tried next; redirectAddr starts over for the new domain; refused redirects
    leave the search where it was; the limit counts every followed redirect."""
    policy = RedirectPolicy.build([NS, AD, "autodiscover.corp.alwayshotcafe.com"], limit=3)
    scp = Candidate("SCP", f"https://{AD}/Autodiscover/Autodiscover.xml")
    search = Search("alice@alwayshotcafe.com", 443, policy, [scp])
    assert search.next() == scp
    assert search.next() == Candidate(
        "root domain", "https://alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    # The root domain answered redirectUrl: that URL comes next, before the autodiscover domain.
    assert search.redirect_to(f"https://{NS}/Autodiscover/Autodiscover.xml") is None
    assert search.next() == Candidate("redirect", f"https://{NS}/Autodiscover/Autodiscover.xml")
    # A redirect to http, or to a name not allowed, is refused and changes nothing.
    assert search.redirect_to(f"http://{NS}/Autodiscover/Autodiscover.xml") is not None
    assert search.redirect_to("https://evil.example/Autodiscover/Autodiscover.xml") is not None
    assert search.followed == 1
    assert search.next() == Candidate("autodiscover domain", f"https://{AD}/Autodiscover/Autodiscover.xml")
    # redirectAddr: a new search for the new address's domain.
    assert search.redirect_to_address("alice.martin@corp.alwayshotcafe.com") is None
    assert (search.address, search.domain, search.followed) == (
        "alice.martin@corp.alwayshotcafe.com",
        "corp.alwayshotcafe.com",
        2,
    )
    assert search.next() == Candidate(
        "root domain", "https://corp.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    assert (
        search.redirect_to("https://autodiscover.corp.alwayshotcafe.com/Autodiscover/Autodiscover.xml")
        is None
    )
    # The limit: a fourth redirect is refused, whatever it points to.
    refusal = search.redirect_to(f"https://{NS}/Autodiscover/Autodiscover.xml")
    assert refusal is not None
    assert "3 redirects already" in refusal
    assert search.next() == Candidate(
        "redirect", "https://autodiscover.corp.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    assert search.next() == Candidate(
        "autodiscover domain", "https://autodiscover.corp.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    assert search.next() is None
    assert not search.fallbacks_added
    search.add([Candidate("SRV record", f"https://{NS}/Autodiscover/Autodiscover.xml")])
    assert search.fallbacks_added
    assert search.next() == Candidate("SRV record", f"https://{NS}/Autodiscover/Autodiscover.xml")
    assert search.next() is None


# -- judging what is told -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok", "why"),
    [
        (f"https://{NS}/EWS/Exchange.asmx", True, "yes"),
        (f"https://{NS.upper()}:443/owa/", True, "yes"),
        (f"https://{AD}/Autodiscover/Autodiscover.xml", True, "yes"),
        (
            "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx",
            False,
            f"mb1.alwayshotcafe.com is not {NS} or {AD}",
        ),
        (f"http://{NS}/rpc/rpcproxy.dll", False, "http, not https; port 80, not 443 (listen.https_port)"),
        (f"https://{NS}:444/mapi/", False, "port 444, not 443"),
        ("EWS/Exchange.asmx", False, "not an absolute URL"),
    ],
)
def test_on_namespace(url: str, ok: bool, why: str) -> None:
    found_ok, found_why = on_namespace(url, config())
    assert found_ok is ok
    assert why in found_why


def test_on_namespace_follows_the_balancers_https_port() -> None:
    assert on_namespace(f"https://{NS}:8443/owa/", config(8443)) == (True, "yes")
    ok, why = on_namespace(f"https://{NS}/owa/", config(8443))
    assert not ok
    assert "port 443, not 8443" in why


def reply(status: int, *headers: tuple[str, str], reason: str = "") -> Reply:
    return Reply(status, reason, (("X-FEServer", "MB2"), *headers), b"")


def test_the_vdirs_real_answer() -> None:
    ews, eas, owa = catalog.get("ews"), catalog.get("eas"), catalog.get("owa")
    assert service_of(f"https://{NS}/EWS/Exchange.asmx") is ews
    assert service_of(f"https://{NS}/Microsoft-Server-ActiveSync") is eas
    assert service_of(f"https://{NS}/nothing") is None
    assert judge_reply(ews, reply(200)) == ("ok", "200: answers")
    negotiate = reply(401, ("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM"))
    assert judge_reply(ews, negotiate) == ("ok", "401 Negotiate, NTLM")
    # ActiveSync phones log on with Basic (Exchange's default there): Windows authentication alone warns.
    status, text = judge_reply(eas, negotiate)
    assert status == "warn"
    assert "log on with Basic" in text
    assert (
        judge_reply(eas, reply(401, ("WWW-Authenticate", 'Basic realm="outlook.alwayshotcafe.com"')))[0]
        == "ok"
    )
    assert judge_reply(ews, reply(401))[0] == "fail"
    logon = reply(302, ("Location", f"https://{NS}/owa/auth/logon.aspx?url=https%3a%2f%2f{NS}%2fowa%2f"))
    assert judge_reply(owa, logon) == ("ok", "302 to the forms logon page")
    status, text = judge_reply(
        ews, reply(302, ("Location", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"))
    )
    assert status == "fail"
    assert "mb1.alwayshotcafe.com" in text
    assert judge_reply(ews, reply(421))[1].startswith("421: the balancer does not serve this name")
    assert judge_reply(ews, reply(503, reason="Service Unavailable")) == ("fail", "503 Service Unavailable")


def test_a_redirect_to_the_url_with_a_trailing_slash_is_followed_and_nothing_else() -> None:
    """IIS, and the l7 balancer for /owa, send a directory asked without its slash to itself with one."""
    url = f"https://{NS}:8443/owa"
    for location in (f"https://{NS}:8443/owa/", f"https://{NS.upper()}:8443/owa/", "/owa/"):
        assert trailing_slash(url, reply(302, ("Location", location))) == "/owa/", location
    assert trailing_slash(f"{url}?a=1", reply(301, ("Location", "/owa/?a=1"))) == "/owa/?a=1"
    for location in (
        f"https://{NS}/owa/",  # another port
        f"http://{NS}:8443/owa/",  # another scheme
        "https://mb1.alwayshotcafe.com:8443/owa/",  # another host
        f"https://{NS}:8443/owa/auth/logon.aspx",  # somewhere else on the same host
        "/owa/?b=2",  # another query
        "",
    ):
        assert trailing_slash(url, reply(302, ("Location", location))) is None, location
    assert trailing_slash(url, reply(200, ("Location", "/owa/"))) is None
    assert trailing_slash(f"{url}/", reply(302, ("Location", f"{url}//"))) is None  # never twice


@pytest.mark.parametrize(
    ("values", "schemes"),
    [
        (["NTLM", "Negotiate"], ["NTLM", "Negotiate"]),
        (['Basic realm="a, b", NTLM'], ["Basic", "NTLM"]),
        (['Basic realm="x\\", y", charset="UTF-8", Negotiate'], ["Basic", "Negotiate"]),
        (["NTLM TlRMTVNTUAACAAAAAAAAACgAAAABggAAU3J2Tm9uY2UAAAAAAAAAAA=="], ["NTLM"]),
        ([], []),
    ],
)
def test_offered_schemes(values: list[str], schemes: list[str]) -> None:
    assert offered_schemes(values) == schemes


def test_what_test_email_autoconfiguration_would_show() -> None:
    answer = parse_pox(fixture("outlook-settings-namespace.xml"))
    assert isinstance(answer, Settings)
    lines = autoconfiguration(
        "alice@alwayshotcafe.com", answer, ["Attempting URL https://x found through SCP"], "MB2"
    )
    assert lines[:3] == [
        "Test E-mail AutoConfiguration for alice@alwayshotcafe.com",
        "Results (answered by MB2)",
        "  Display Name: Alice Martin",
    ]
    assert "  Protocol: Exchange RPC" in lines
    assert "  Protocol: Exchange HTTP" in lines
    assert f"    Exchange Web Services URL: https://{NS}/EWS/Exchange.asmx" in lines
    assert "    SSL: Yes" in lines
    assert "    Auth Package: Negotiate" in lines
    assert f"    External OWA URL: https://{NS}/owa/" in lines
    assert lines[-2:] == ["Log", "  Attempting URL https://x found through SCP"]
    empty = autoconfiguration("alice@alwayshotcafe.com", None, [])
    assert "  Autodiscover failed: no settings were received" in empty
