"""The Autodiscover answers a client reads (doctor/autodiscover.py), from fixtures in the shape Exchange
2016/2019 answer (tests/fixtures/autodiscover), and the requests it sends."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from casarray.doctor.autodiscover import (
    REQUEST_NAMESPACE,
    RESPONSE_SCHEMA,
    AutodiscoverParseError,
    ErrorAnswer,
    RedirectAddr,
    RedirectUrl,
    Settings,
    parse_pox,
    parse_v2,
    pox_request,
    v2_path,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "autodiscover"
MAILBOX = "0b6f4c2e-95d1-4a7e-8c3f-1d2e3f4a5b6c@alwayshotcafe.com"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def settings(name: str) -> Settings:
    answer = parse_pox(fixture(name))
    assert isinstance(answer, Settings)
    return answer


def test_outlook_settings_as_installed_name_every_url_with_its_setting() -> None:
    answer = settings("outlook-settings-installed.xml")
    assert answer.display_name == "Alice Martin"
    told = [(u.label, u.url) for u in answer.urls]
    assert told == [
        ("mapiHttp MailStore InternalUrl", f"https://mb1.alwayshotcafe.com/mapi/emsmdb/?MailboxId={MAILBOX}"),
        ("mapiHttp AddressBook InternalUrl", f"https://mb1.alwayshotcafe.com/mapi/nspi/?MailboxId={MAILBOX}"),
        ("EXCH ASUrl", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"),
        ("EXCH EwsUrl", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"),
        ("EXCH EmwsUrl", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"),
        ("EXCH EcpUrl", "https://mb1.alwayshotcafe.com/ecp/"),
        ("EXCH OOFUrl", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"),
        ("EXCH UMUrl", "https://mb1.alwayshotcafe.com/EWS/UM2007Legacy.asmx"),
        ("EXCH OABUrl", "https://mb1.alwayshotcafe.com/OAB/2f6d3a10-7b4c-4e8d-a9f1-6c5b4a392817/"),
        ("WEB Internal OWAUrl", "https://mb1.alwayshotcafe.com/owa/"),
        ("WEB Internal EXCH ASUrl", "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"),
    ]
    # EXCH's Server is the mailbox GUID, not a host; EcpUrl-* are paths relative to EcpUrl, not URLs.
    assert not any(u.setting == "Server" for u in answer.urls)
    assert not any("rfr=olk" in u.url for u in answer.urls)
    # The sections keep every setting in document order, for showing them as Outlook does.
    assert [b.type for b in answer.blocks] == ["mapiHttp", "EXCH", "WEB"]
    exch = dict(answer.blocks[1].entries)
    assert exch["Server"] == MAILBOX
    assert exch["EcpUrl-um"].startswith("?rfr=olk&p=customize/voicemail.aspx")  # entities decoded


def test_outlook_settings_on_the_namespace_include_outlook_anywhere_and_external_urls() -> None:
    answer = settings("outlook-settings-namespace.xml")
    labels = [u.label for u in answer.urls]
    assert "EXPR Server" in labels
    assert "mapiHttp MailStore ExternalUrl" in labels
    assert "WEB External OWAUrl" in labels
    assert "WEB External EXPR ASUrl" in labels
    expr = next(u for u in answer.urls if u.label == "EXPR Server")
    # Outlook Anywhere names a host; the client reaches RPC over HTTP at /rpc/rpcproxy.dll on it.
    assert expr.url == "https://outlook.alwayshotcafe.com/rpc/rpcproxy.dll"
    assert {u.url.split("/")[2] for u in answer.urls} == {"outlook.alwayshotcafe.com"}


def test_outlook_anywhere_without_ssl_is_told_as_http() -> None:
    body = fixture("outlook-settings-namespace.xml").replace(b"<SSL>On</SSL>", b"<SSL>Off</SSL>")
    answer = parse_pox(body)
    assert isinstance(answer, Settings)
    expr = next(u for u in answer.urls if u.label == "EXPR Server")
    assert expr.url == "http://outlook.alwayshotcafe.com/rpc/rpcproxy.dll"


def test_redirect_and_error_answers() -> None:
    assert parse_pox(fixture("outlook-redirect-addr.xml")) == RedirectAddr(
        "alice.martin@corp.alwayshotcafe.com"
    )
    assert parse_pox(fixture("outlook-redirect-url.xml")) == RedirectUrl(
        "https://autodiscover.alwayshotcafe.com/Autodiscover/Autodiscover.xml"
    )
    error = parse_pox(fixture("outlook-error-500.xml"))
    assert error == ErrorAnswer("500", "The email address can't be found.", None)
    assert error.describe() == "error 500 The email address can't be found."
    assert parse_pox(fixture("error-600.xml")) == ErrorAnswer("600", "Invalid Request", None)


def test_mobilesync_answers() -> None:
    answer = settings("mobilesync-settings.xml")
    assert [(u.label, u.url) for u in answer.urls] == [
        ("MobileSync Url", "https://outlook.alwayshotcafe.com/Microsoft-Server-ActiveSync")
    ]
    assert answer.display_name == "Alice Martin"
    assert parse_pox(fixture("mobilesync-redirect.xml")) == RedirectAddr(
        "alice.martin@corp.alwayshotcafe.com"
    )
    assert parse_pox(fixture("mobilesync-error.xml")) == ErrorAnswer(
        "1", "The mailbox could not be found", "MailUser"
    )


def test_the_https_namespace_of_microsofts_samples_is_read_too() -> None:
    body = fixture("outlook-redirect-url.xml").replace(b"http://schemas", b"https://schemas")
    assert isinstance(parse_pox(body), RedirectUrl)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><body>It works!</body></html>", "not an Autodiscover answer"),
        (b"200 OK<br/>MB1.alwayshotcafe.com", "not well-formed XML"),
        (b"", "not well-formed XML"),
        (
            b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"/>',
            "no Response element",
        ),
        (
            b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
            b"<Response><Account><Action>teleport</Action></Account></Response></Autodiscover>",
            "unknown Action 'teleport'",
        ),
        (
            b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
            b"<Response><Account><Action>redirectAddr</Action></Account></Response></Autodiscover>",
            "without a RedirectAddr",
        ),
        (
            b'<Autodiscover xmlns="http://example.com/other"><Response/></Autodiscover>',
            "not an Autodiscover answer",
        ),
    ],
)
def test_what_is_not_an_answer_says_why(body: bytes, message: str) -> None:
    with pytest.raises(AutodiscoverParseError, match=message):
        parse_pox(body)


def test_a_document_type_or_entity_is_refused() -> None:
    """An answer comes from the network: entity expansion (billion laughs) and external entities are
    refused before anything is expanded."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
        b"<Response>&lol2;</Response></Autodiscover>"
    )
    with pytest.raises(AutodiscoverParseError, match="refused XML construct"):
        parse_pox(bomb)
    external = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
        b"<Response>&x;</Response></Autodiscover>"
    )
    with pytest.raises(AutodiscoverParseError, match="refused XML construct"):
        parse_pox(external)


@pytest.mark.parametrize("schema", ["outlook", "mobilesync"])
def test_the_request_names_the_address_and_the_schema_it_accepts(schema: str) -> None:
    body = pox_request("o'brien&co@alwayshotcafe.com", schema)  # type: ignore[arg-type]
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.fromstring(body)
    ns = REQUEST_NAMESPACE[schema]  # type: ignore[index]
    assert root.tag == f"{{{ns}}}Autodiscover"
    assert root.findtext(f"{{{ns}}}Request/{{{ns}}}EMailAddress") == "o'brien&co@alwayshotcafe.com"
    accepted = root.findtext(f"{{{ns}}}Request/{{{ns}}}AcceptableResponseSchema")
    assert accepted == RESPONSE_SCHEMA[schema]  # type: ignore[index]


def test_v2_answers() -> None:
    assert v2_path("alice@alwayshotcafe.com", "EWS") == (
        "/autodiscover/autodiscover.json/v1.0/alice@alwayshotcafe.com?Protocol=EWS"
    )
    assert v2_path("a b/c@x.com", "ActiveSync").startswith(
        "/autodiscover/autodiscover.json/v1.0/a%20b%2Fc@x.com"
    )
    url = "https://outlook.alwayshotcafe.com/EWS/Exchange.asmx"
    answer = parse_v2(json.dumps({"Protocol": "EWS", "Url": url}).encode(), "EWS")
    assert isinstance(answer, Settings)
    assert [(u.label, u.url) for u in answer.urls] == [("v2 EWS Url", url)]
    error = parse_v2(
        b'{"ErrorCode":"InvalidProtocol","ErrorMessage":"The given protocol value \'Nope\' is invalid."}',
        "Nope",
    )
    assert error == ErrorAnswer("InvalidProtocol", "The given protocol value 'Nope' is invalid.")
    with pytest.raises(AutodiscoverParseError, match="not JSON"):
        parse_v2(b"<html/>", "EWS")
    with pytest.raises(AutodiscoverParseError, match='no "Url"'):
        parse_v2(b'{"Protocol": "EWS"}', "EWS")
    with pytest.raises(AutodiscoverParseError, match="asked for Protocol ActiveSync"):
        parse_v2(json.dumps({"Protocol": "EWS", "Url": url}).encode(), "ActiveSync")
