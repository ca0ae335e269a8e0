"""Autodiscover answers built from a server's settings (lab/autodiscover.py), read back with a real XML
parser; the users and mailboxes they are for (lab/users.py)."""

from __future__ import annotations

import uuid
from xml.etree import ElementTree

import pytest

from casarray.lab import autodiscover as ad
from casarray.lab.settings import ServerSettings
from casarray.lab.users import Credentials, Mailbox

DOMAIN = "alwayshotcafe.com"
FQDN = f"mb1.{DOMAIN}"
NAMESPACE = f"outlook.{DOMAIN}"
USERS = Credentials([("ALWAYSHOTCAFE", "alice", "Passw0rd!")], DOMAIN)
_ALICE = USERS.mailbox(f"alice@{DOMAIN}")
assert _ALICE is not None
ALICE: Mailbox = _ALICE
BASE = f"{{{ad.RESPONSE_SCHEMA}}}"
OUT = f"{{{ad.OUTLOOK_RESPONSE}}}"
MOB = f"{{{ad.MOBILESYNC_RESPONSE}}}"


def request(
    email: str = f"alice@{DOMAIN}", schema: str = ad.OUTLOOK_RESPONSE, ns: str = ad.OUTLOOK_REQUEST
) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{ns}"><Request>'
        f"<EMailAddress>{email}</EMailAddress><AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def on_namespace() -> ServerSettings:
    """MB1 after the namespace procedure: every URL on the namespace, Outlook Anywhere published."""
    settings = ServerSettings.installed("MB1", FQDN)
    for vdir in settings.virtual_directories:
        if vdir.internal_url:
            url = vdir.internal_url.replace(FQDN, NAMESPACE)
            change = {
                "Kind": "VirtualDirectory",
                "Type": vdir.type,
                "Set": {"InternalUrl": url, "ExternalUrl": url},
            }
            settings, _ = settings.apply(change)
    oa = {"InternalHostname": NAMESPACE, "ExternalHostname": NAMESPACE, "ExternalClientsRequireSsl": True}
    settings, _ = settings.apply({"Kind": "OutlookAnywhere", "Set": oa})
    return settings


def parse(answer: bytes) -> ElementTree.Element:
    assert answer.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ElementTree.fromstring(answer)
    assert root.tag == f"{BASE}Autodiscover"
    return root


def protocols(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    """The Account's Protocol blocks by Type (child element, or the mapiHttp attribute)."""
    account = root.find(f"{OUT}Response/{OUT}Account")
    assert account is not None
    found = {}
    for protocol in account.findall(f"{OUT}Protocol"):
        kind = protocol.get("Type") or protocol.findtext(f"{OUT}Type")
        assert kind is not None
        found[kind] = protocol
    return found


# --- the request ---------------------------------------------------------------------------------------


def test_a_pox_request_is_read_in_either_request_schema() -> None:
    assert ad.parse_pox_request(request()) == ad.PoxRequest(f"alice@{DOMAIN}", ad.OUTLOOK_RESPONSE)
    mobile = ad.parse_pox_request(request(schema=ad.MOBILESYNC_RESPONSE, ns=ad.MOBILESYNC_REQUEST))
    assert mobile.schema == ad.MOBILESYNC_RESPONSE
    utf16 = request().decode().replace("utf-8", "utf-16").encode("utf-16")
    assert ad.parse_pox_request(utf16).email == f"alice@{DOMAIN}"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Autodiscover><Request><EMailAddress>a@b</EMailAddress></Request></Autodiscover>",  # no namespace
        request().replace(b"<Request>", b"<Requests>").replace(b"</Request>", b"</Requests>"),
        request(email=""),
        request(schema=""),
        # a DTD, entity expansion and external entities are refused before anything is expanded
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        + request().split(b"?>", 1)[1].replace(b"alice@", b"&y;alice@"),
        b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
    ],
)
def test_what_is_not_a_request_is_600(body: bytes) -> None:
    with pytest.raises(ad.PoxError) as caught:
        ad.parse_pox_request(body)
    assert (caught.value.code, str(caught.value)) == (600, "Invalid Request")


def test_client_hints_follow_the_headers_rules() -> None:
    assert ad.ClientHints.from_headers({}) == ad.ClientHints(0, False)
    assert ad.ClientHints.from_headers({"X-MapiHttpCapability": "1"}).mapi_http == 1
    for invalid in ("0", "-1", "yes", ""):  # [MS-OXDSCLI] 3.2.5.1: as if absent
        assert ad.ClientHints.from_headers({"X-MapiHttpCapability": invalid}).mapi_http == 0
    assert ad.ClientHints.from_headers({"X-ClientCanHandle": "ExHttpInfo, negotiate"}).negotiate


# --- the outlook answer --------------------------------------------------------------------------------


def test_outlook_answer_as_installed_tells_the_server_names_and_no_expr() -> None:
    root = parse(ad.outlook_settings(ServerSettings.installed("MB1", FQDN), ALICE, ad.ClientHints()))
    response = root.find(f"{OUT}Response")
    assert response is not None
    assert response.findtext(f"{OUT}User/{OUT}AutoDiscoverSMTPAddress") == f"alice@{DOMAIN}"
    assert response.findtext(f"{OUT}User/{OUT}DisplayName") == "alice"
    assert response.findtext(f"{OUT}Account/{OUT}Action") == "settings"
    found = protocols(root)
    assert list(found) == ["EXCH", "WEB"]  # no ExternalHostname: no EXPR
    exch = found["EXCH"]
    assert exch.findtext(f"{OUT}Server") == f"{ALICE.guid}@{DOMAIN}"
    assert exch.findtext(f"{OUT}ServerVersion") == "73C28608"  # 15.2.1544
    assert exch.findtext(f"{OUT}EwsUrl") == f"https://{FQDN}/EWS/Exchange.asmx"
    assert exch.findtext(f"{OUT}ASUrl") == f"https://{FQDN}/EWS/Exchange.asmx"
    assert exch.findtext(f"{OUT}EcpUrl") == f"https://{FQDN}/ecp/"
    oab = exch.findtext(f"{OUT}OABUrl")
    assert oab is not None
    assert oab.startswith(f"https://{FQDN}/OAB/")
    assert oab.endswith("/")
    web = found["WEB"]
    owa = web.find(f"{OUT}Internal/{OUT}OWAUrl")
    assert owa is not None
    assert (owa.text, owa.get("AuthenticationMethod")) == (f"https://{FQDN}/owa", "Basic, Fba")
    assert web.findtext(f"{OUT}Internal/{OUT}Protocol/{OUT}ASUrl") == f"https://{FQDN}/EWS/Exchange.asmx"
    assert web.find(f"{OUT}External") is None  # no ExternalUrl yet


def test_outlook_answer_on_the_namespace_has_expr_with_outlook_anywhere() -> None:
    settings = on_namespace()
    found = protocols(parse(ad.outlook_settings(settings, ALICE, ad.ClientHints())))
    assert list(found) == ["EXCH", "EXPR", "WEB"]
    expr = found["EXPR"]
    assert (expr.findtext(f"{OUT}Server"), expr.findtext(f"{OUT}SSL")) == (NAMESPACE, "On")
    assert expr.findtext(f"{OUT}AuthPackage") == "Ntlm"  # Negotiate is told only to a client that handles it
    assert expr.findtext(f"{OUT}EwsUrl") == f"https://{NAMESPACE}/EWS/Exchange.asmx"
    every_url = [e.text for p in found.values() for e in p.iter() if e.text and e.text.startswith("http")]
    assert every_url
    assert all(url.startswith(f"https://{NAMESPACE}/") for url in every_url)
    found = protocols(parse(ad.outlook_settings(settings, ALICE, ad.ClientHints(negotiate=True))))
    assert found["EXPR"].findtext(f"{OUT}AuthPackage") == "Negotiate"


def test_mapi_http_replaces_exch_and_expr() -> None:
    settings = on_namespace()
    found = protocols(parse(ad.outlook_settings(settings, ALICE, ad.ClientHints(mapi_http=2))))
    assert list(found) == ["mapiHttp", "WEB"]  # [MS-OXDSCLI] 3.2.5.1: no EXCH, no EXPR
    mapi = found["mapiHttp"]
    assert mapi.get("Version") == "1"
    mailbox_id = f"{ALICE.guid}@{DOMAIN}"
    assert (
        mapi.findtext(f"{OUT}MailStore/{OUT}InternalUrl")
        == f"https://{NAMESPACE}/mapi/emsmdb/?MailboxId={mailbox_id}"
    )
    assert (
        mapi.findtext(f"{OUT}MailStore/{OUT}ExternalUrl")
        == f"https://{NAMESPACE}/mapi/emsmdb/?MailboxId={mailbox_id}"
    )
    assert (
        mapi.findtext(f"{OUT}AddressBook/{OUT}ExternalUrl")
        == f"https://{NAMESPACE}/mapi/nspi/?MailboxId={mailbox_id}"
    )
    # as installed: only the internal URL, on the server's name
    found = protocols(
        parse(ad.outlook_settings(ServerSettings.installed("MB1", FQDN), ALICE, ad.ClientHints(1)))
    )
    assert found["mapiHttp"].find(f"{OUT}MailStore/{OUT}ExternalUrl") is None
    assert (
        found["mapiHttp"]
        .findtext(f"{OUT}MailStore/{OUT}InternalUrl", "")
        .startswith(f"https://{FQDN}/mapi/emsmdb/")
    )


def test_one_vdir_on_a_server_name_shows_in_the_answer_at_once() -> None:
    settings, _ = on_namespace().apply(
        {
            "Kind": "VirtualDirectory",
            "Type": "WebServices",
            "Set": {"ExternalUrl": f"https://{FQDN}/EWS/Exchange.asmx"},
        }
    )
    found = protocols(parse(ad.outlook_settings(settings, ALICE, ad.ClientHints())))
    assert found["EXPR"].findtext(f"{OUT}EwsUrl") == f"https://{FQDN}/EWS/Exchange.asmx"
    assert found["EXCH"].findtext(f"{OUT}EwsUrl") == f"https://{NAMESPACE}/EWS/Exchange.asmx"


def test_every_user_gets_the_same_mailbox_guid_from_every_server() -> None:
    again = Credentials([("ALWAYSHOTCAFE", "alice", "other")], DOMAIN).mailbox(f"ALICE@{DOMAIN.upper()}")
    assert again == ALICE
    assert ALICE.guid == uuid.uuid5(uuid.UUID("6f1c4d52-35a5-4c1b-9a52-8c0f3e6b2a10"), f"alice@{DOMAIN}")
    mb1 = protocols(
        parse(ad.outlook_settings(ServerSettings.installed("MB1", FQDN), ALICE, ad.ClientHints()))
    )
    mb2 = protocols(
        parse(ad.outlook_settings(ServerSettings.installed("MB2", f"mb2.{DOMAIN}"), ALICE, ad.ClientHints()))
    )
    assert mb1["EXCH"].findtext(f"{OUT}Server") == mb2["EXCH"].findtext(f"{OUT}Server")


# --- mobilesync, errors --------------------------------------------------------------------------------


def test_mobilesync_answer_gives_the_activesync_url() -> None:
    for settings, url in (
        (ServerSettings.installed("MB1", FQDN), f"https://{FQDN}/Microsoft-Server-ActiveSync"),
        (on_namespace(), f"https://{NAMESPACE}/Microsoft-Server-ActiveSync"),
    ):
        req = ad.parse_pox_request(request(schema=ad.MOBILESYNC_RESPONSE, ns=ad.MOBILESYNC_REQUEST))
        root = parse(ad.pox_answer(req, settings, ALICE, ad.ClientHints()))
        response = root.find(f"{MOB}Response")
        assert response is not None
        assert response.findtext(f"{MOB}User/{MOB}EMailAddress") == f"alice@{DOMAIN}"
        server = response.find(f"{MOB}Action/{MOB}Settings/{MOB}Server")
        assert server is not None
        assert (
            server.findtext(f"{MOB}Type"),
            server.findtext(f"{MOB}Url"),
            server.findtext(f"{MOB}Name"),
        ) == (
            "MobileSync",
            url,
            url,
        )


@pytest.mark.parametrize(
    ("schema", "mailbox", "code", "message", "namespace"),
    [
        (ad.OUTLOOK_RESPONSE, None, 500, "The email address can't be found.", ad.OUTLOOK_RESPONSE),
        (ad.MOBILESYNC_RESPONSE, None, 500, "The email address can't be found.", ad.MOBILESYNC_RESPONSE),
        ("http://example.com/other/schema", ALICE, 601, "Provider is not available", ad.RESPONSE_SCHEMA),
    ],
)
def test_errors_are_an_error_block(
    schema: str, mailbox: Mailbox | None, code: int, message: str, namespace: str
) -> None:
    req = ad.parse_pox_request(request(schema=schema))
    with pytest.raises(ad.PoxError) as caught:
        ad.pox_answer(req, ServerSettings.installed("MB1", FQDN), mailbox, ad.ClientHints())
    root = parse(ad.pox_error(caught.value, time_of_day="09:08:07.1234560", server=FQDN))
    error = root.find(f"{{{namespace}}}Response/{{{namespace}}}Error")
    assert error is not None
    assert error.get("Time") == "09:08:07.1234560"
    assert error.get("Id", "").isdigit()
    assert error.findtext(f"{{{namespace}}}ErrorCode") == str(code)
    assert error.findtext(f"{{{namespace}}}Message") == message
    assert error.find(f"{{{namespace}}}DebugData") is not None


def test_server_version_encodes_major_minor_build() -> None:
    assert ad.server_version("Version 14.1 (Build 218.15)") == "738180DA"  # Microsoft's own example
    assert ad.server_version("Version 15.2 (Build 1544.4)") == "73C28608"
    assert ad.server_version("Version 15.1 (Build 2507.6)") == "73C189CB"
    assert ad.server_version("unknown") is None


# --- v2 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        (
            f"/autodiscover/autodiscover.json/v1.0/alice@{DOMAIN}",
            {"Protocol": "EWS"},
            (f"alice@{DOMAIN}", "EWS"),
        ),
        (
            f"/AutoDiscover/AutoDiscover.JSON/V1.0/alice@{DOMAIN}",
            {"protocol": "ews"},
            (f"alice@{DOMAIN}", "ews"),
        ),
        (
            "/autodiscover/autodiscover.json",
            {"Email": f"alice@{DOMAIN}", "Protocol": "ActiveSync"},
            (f"alice@{DOMAIN}", "ActiveSync"),
        ),
        ("/autodiscover/autodiscover.json/v1.0/a@b", {}, ("a@b", None)),
        ("/autodiscover/autodiscover.json", {}, (None, None)),
    ],
)
def test_v2_requests_are_read_case_insensitively(
    path: str, query: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    assert ad.parse_v2_request(path, query) == ad.V2Request(*expected)


def test_v2_paths_that_are_not_the_endpoint() -> None:
    for path in (
        "/autodiscover/autodiscover.xml",
        "/autodiscover/autodiscover.json/v2.0/a@b",
        "/autodiscover/autodiscover.json/v1.0/",
    ):
        assert ad.parse_v2_request(path, {"Protocol": "EWS"}) is None


def test_v2_answers_from_the_settings() -> None:
    installed, ns = ServerSettings.installed("MB1", FQDN), on_namespace()
    host = f"autodiscover.{DOMAIN}"
    for settings, protocol, url in (
        (installed, "EWS", f"https://{FQDN}/EWS/Exchange.asmx"),  # no ExternalUrl yet: the internal one
        (ns, "ews", f"https://{NAMESPACE}/EWS/Exchange.asmx"),
        (ns, "ActiveSync", f"https://{NAMESPACE}/Microsoft-Server-ActiveSync"),
        (ns, "autodiscoverv1", f"https://{host}/autodiscover/autodiscover.xml"),
    ):
        answer = ad.v2_answer(ad.V2Request(f"alice@{DOMAIN}", protocol), settings, ALICE, host)
        canonical = next(p for p in ad.V2_PROTOCOLS if p.lower() == protocol.lower())
        assert answer == (200, {"Protocol": canonical, "Url": url})


def test_v2_errors_have_exchanges_shape() -> None:
    settings = ServerSettings.installed("MB1", FQDN)
    status, body = ad.v2_answer(ad.V2Request("a@b", "Imap"), settings, ALICE, FQDN)
    assert (status, body["ErrorCode"]) == (400, "InvalidProtocol")
    assert (
        body["ErrorMessage"]
        == "The given protocol value 'Imap' is invalid. Supported values are 'EWS,ActiveSync,AutodiscoverV1'"
    )
    status, body = ad.v2_answer(ad.V2Request("a@b", None), settings, ALICE, FQDN)
    assert (status, body["ErrorCode"]) == (400, "MandatoryParameterMissing")
    status, body = ad.v2_answer(ad.V2Request(f"bob@{DOMAIN}", "EWS"), settings, None, FQDN)
    assert (status, body) == (
        404,
        {"ErrorCode": "UserNotFound", "ErrorMessage": "The given User is not found"},
    )


# --- users and mailboxes -------------------------------------------------------------------------------


def test_users_sign_in_by_any_of_their_names_and_have_a_mailbox() -> None:
    for name in ("alice", "ALWAYSHOTCAFE\\alice", f"Alice@{DOMAIN}"):
        assert USERS.logon(name, "Passw0rd!") == "ALWAYSHOTCAFE\\alice"
    assert USERS.logon("alice", "wrong") is None
    assert USERS.logon("bob", "Passw0rd!") is None
    assert USERS.mailbox(f"bob@{DOMAIN}") is None
    assert USERS.mailbox("alice@example.com") is None
    assert USERS.mailbox("alice") is None
    assert Mailbox(f"alice@{DOMAIN}", "alice") == ALICE


def test_without_a_users_file_every_address_of_the_domain_is_a_mailbox() -> None:
    open_users = Credentials(domain=DOMAIN)
    assert open_users.mailbox(f"Bob@{DOMAIN}") == Mailbox(f"bob@{DOMAIN}", "bob")
    assert open_users.mailbox("bob@example.com") is None
    assert open_users.logon("anyone", "anything") == "anyone"
