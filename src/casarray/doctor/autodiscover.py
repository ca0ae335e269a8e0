"""Autodiscover as a client speaks it, without I/O: the requests Outlook and a phone send, and what the
answers say.

POX Autodiscover (Microsoft, "POX Autodiscover response for Exchange"; [MS-OXDSCLI] for Outlook,
[MS-ASCMD] 2.2.2.1 for ActiveSync phones): the client POSTs `<Autodiscover><Request><EMailAddress/>
<AcceptableResponseSchema/></Request></Autodiscover>` to `https://<host>/Autodiscover/Autodiscover.xml`
and the server answers with one of

- settings — outlook schema: `Response/Account` with `Action` `settings` and `Protocol` blocks (EXCH,
  EXPR, EXHTTP, WEB, mapiHttp) whose `*Url` elements (EwsUrl, OABUrl, ASUrl, OWAUrl, InternalUrl, …) and,
  for Outlook Anywhere (EXPR, EXHTTP), the `Server` host name are what the client will connect to;
  mobilesync schema: `Response/Action/Settings/Server` with `Type` MobileSync and its `Url`;
- a redirect to another address — outlook: `Action` `redirectAddr` and `RedirectAddr` ([MS-OXDSCLI]
  3.2.5); mobilesync: `Action/Redirect` ("the client uses the domain part of the address to send a new
  Autodiscover command request", [MS-ASCMD] 2.2.3.147);
- a redirect to another Autodiscover URL — outlook: `Action` `redirectUrl` and `RedirectUrl`;
- an error — `Error` with `ErrorCode`, `Message`, `DebugData` ([MS-OXDSCLI] 2.2.4.1.1.3; 600 is an
  invalid request, 601 no provider for the schema asked for, [MS-ASCMD] 2.2.3.64); mobilesync puts
  `Action/Error` with a `Status` instead.

Namespaces are matched by local name under any `schemas.microsoft.com/exchange/autodiscover` namespace:
Exchange sends `http://schemas…`, Microsoft's published samples show `https://schemas…`.

Autodiscover v2 (Exchange 2016/2019, what Outlook mobile and current Outlook ask first):
`GET /autodiscover/autodiscover.json/v1.0/<smtp>?Protocol=EWS|ActiveSync|AutodiscoverV1` answers
`{"Protocol": …, "Url": …}`, or `{"ErrorCode": …, "ErrorMessage": …}`.

An answer comes from the network: XML is read with defusedxml (no DTD, no entity expansion), never by
hand.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

Schema = Literal["outlook", "mobilesync"]

_BASE: Final = "http://schemas.microsoft.com/exchange/autodiscover"
REQUEST_NAMESPACE: Final[dict[Schema, str]] = {
    "outlook": f"{_BASE}/outlook/requestschema/2006",
    "mobilesync": f"{_BASE}/mobilesync/requestschema/2006",
}
RESPONSE_SCHEMA: Final[dict[Schema, str]] = {
    "outlook": f"{_BASE}/outlook/responseschema/2006a",
    "mobilesync": f"{_BASE}/mobilesync/responseschema/2006",
}
_NAMESPACE_MARK: Final = "schemas.microsoft.com/exchange/autodiscover"

POX_PATH: Final = "/Autodiscover/Autodiscover.xml"
V2_PROTOCOLS: Final = ("EWS", "ActiveSync", "AutodiscoverV1")

# Outlook Anywhere blocks name a host, not a URL: the client reaches RPC over HTTP at this path on it.
_RPC_PATH: Final = "/rpc/rpcproxy.dll"
_OUTLOOK_ANYWHERE_TYPES: Final = frozenset({"EXPR", "EXHTTP"})


class AutodiscoverParseError(ValueError):
    """The body is not an Autodiscover answer; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ToldUrl:
    """One URL an answer tells the client: the protocol block, the setting in it, the URL."""

    protocol: str  # EXCH, EXPR, EXHTTP, WEB, mapiHttp, MobileSync, "v2 EWS", …
    setting: str  # EwsUrl, "Internal OWAUrl", "MailStore InternalUrl", Server, Url, …
    url: str
    from_host: bool = False  # built from a host name (Outlook Anywhere): the client uses the default port

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.setting}"


@dataclass(frozen=True, slots=True)
class ProtocolBlock:
    """A protocol section as an answer lists it, for showing it as Outlook would: (setting, value)
    pairs in document order."""

    type: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Settings:
    """An answer with settings: every URL it tells, and its protocol sections."""

    display_name: str | None
    urls: tuple[ToldUrl, ...]
    blocks: tuple[ProtocolBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class RedirectAddr:
    address: str


@dataclass(frozen=True, slots=True)
class RedirectUrl:
    url: str


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An Autodiscover error: ErrorCode (POX), Status (mobilesync) or ErrorCode (v2, a word)."""

    code: str | None
    message: str | None
    debug: str | None = None

    def describe(self) -> str:
        parts = [f"error {self.code}" if self.code else "error"]
        if self.message:
            parts.append(self.message)
        if self.debug:
            parts.append(f"({self.debug})")
        return " ".join(parts)


Answer = Settings | RedirectAddr | RedirectUrl | ErrorAnswer


# -- requests ----------------------------------------------------------------------------------------


def pox_request(email: str, schema: Schema) -> bytes:
    """The POST body of a POX Autodiscover request for `email` asking for `schema`'s answer."""
    namespace = REQUEST_NAMESPACE[schema]
    root = ET.Element("Autodiscover", xmlns=namespace)
    request = ET.SubElement(root, "Request")
    ET.SubElement(request, "EMailAddress").text = email
    ET.SubElement(request, "AcceptableResponseSchema").text = RESPONSE_SCHEMA[schema]
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def v2_path(email: str, protocol: str) -> str:
    """The path of an Autodiscover v2 request (the address is one path segment)."""
    return f"/autodiscover/autodiscover.json/v1.0/{quote(email, safe='@')}?Protocol={quote(protocol)}"


# -- POX answers -------------------------------------------------------------------------------------


def parse_pox(body: bytes) -> Answer:
    """What a POX Autodiscover answer (either schema) says; AutodiscoverParseError when it is not one."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise AutodiscoverParseError(f"refused XML construct: {exc}") from None
    except ET.ParseError as exc:
        raise AutodiscoverParseError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "Autodiscover" or _NAMESPACE_MARK not in _namespace(root.tag):
        raise AutodiscoverParseError(f"the root element is {root.tag}, not an Autodiscover answer")
    response = _child(root, "Response")
    if response is None:
        raise AutodiscoverParseError("no Response element")
    error = _child(response, "Error")
    if error is not None:
        return _error(error)
    account = _child(response, "Account")
    if account is not None:
        return _outlook(response, account)
    action = _child(response, "Action")
    if action is not None:
        return _mobilesync(response, action)
    raise AutodiscoverParseError("the Response has neither Account (outlook) nor Action (mobilesync)")


def _outlook(response: ET.Element, account: ET.Element) -> Answer:
    error = _child(account, "Error")
    if error is not None:
        return _error(error)
    action = (_text(_child(account, "Action")) or "").strip()
    if action == "redirectAddr":
        address = _text(_child(account, "RedirectAddr"))
        if not address:
            raise AutodiscoverParseError("Action redirectAddr without a RedirectAddr")
        return RedirectAddr(address.strip())
    if action == "redirectUrl":
        url = _text(_child(account, "RedirectUrl"))
        if not url:
            raise AutodiscoverParseError("Action redirectUrl without a RedirectUrl")
        return RedirectUrl(url.strip())
    if action != "settings":
        raise AutodiscoverParseError(
            f"unknown Action {action!r} (expected settings, redirectAddr, redirectUrl)"
        )
    user = _child(response, "User")
    urls: list[ToldUrl] = []
    blocks: list[ProtocolBlock] = []
    for protocol in _children(account, "Protocol"):
        kind = _protocol_type(protocol)
        entries: list[tuple[str, str]] = []
        _walk(protocol, kind, (), urls, entries)
        blocks.append(ProtocolBlock(kind, tuple(entries)))
    return Settings(_text(_child(user, "DisplayName")), tuple(urls), tuple(blocks))


def _walk(
    element: ET.Element,
    kind: str,
    path: tuple[str, ...],
    urls: list[ToldUrl],
    entries: list[tuple[str, str]],
) -> None:
    """Collect the URLs (elements named *Url; the Server of Outlook Anywhere) under one protocol block.
    A nested Protocol (WEB's Internal/External hold one each) keeps its own type in the setting's name."""
    for child in element:
        name = _local(child.tag)
        if name == "Type":
            continue
        if name == "Protocol":
            _walk(child, kind, (*path, _protocol_type(child)), urls, entries)
            continue
        if len(child):
            _walk(child, kind, (*path, name), urls, entries)
            continue
        value = (child.text or "").strip()
        setting = " ".join((*path, name))
        if value:
            entries.append((setting, value))
        # EcpUrl-* elements hold paths relative to EcpUrl (EcpUrl-um, EcpUrl-photo, …): not URLs.
        if name.endswith("Url") and value:
            urls.append(ToldUrl(kind, setting, value))
        elif name == "Server" and kind in _OUTLOOK_ANYWHERE_TYPES and not path and value:
            # EXPR/EXHTTP: the Outlook Anywhere host; SSL Off would mean plain http (MS-OXDSCLI 2.2.4.1.1.2.4).
            ssl = (_text(_child(element, "SSL")) or "On").strip().lower()
            scheme = "http" if ssl == "off" else "https"
            urls.append(ToldUrl(kind, setting, f"{scheme}://{value}{_RPC_PATH}", from_host=True))


def _protocol_type(protocol: ET.Element) -> str:
    """A Protocol's type: the Type child (EXCH, EXPR, WEB, …) or attribute (mapiHttp, EXHTTP)."""
    return (_text(_child(protocol, "Type")) or protocol.get("Type") or "?").strip()


def _mobilesync(response: ET.Element, action: ET.Element) -> Answer:
    error = _child(action, "Error")
    if error is not None:
        return _error(error)
    redirect = _text(_child(action, "Redirect"))
    if redirect:
        return RedirectAddr(redirect.strip())
    settings = _child(action, "Settings")
    if settings is None:
        raise AutodiscoverParseError("the mobilesync Action has neither Settings, Redirect nor Error")
    urls: list[ToldUrl] = []
    blocks: list[ProtocolBlock] = []
    for server in _children(settings, "Server"):
        kind = (_text(_child(server, "Type")) or "?").strip()
        url = (_text(_child(server, "Url")) or "").strip()
        entries = [(_local(c.tag), (c.text or "").strip()) for c in server if _local(c.tag) != "Type"]
        blocks.append(ProtocolBlock(kind, tuple((k, v) for k, v in entries if v)))
        if url:
            urls.append(ToldUrl(kind, "Url", url))
    user = _child(response, "User")
    return Settings(_text(_child(user, "DisplayName")), tuple(urls), tuple(blocks))


def _error(error: ET.Element) -> ErrorAnswer:
    code = _text(_child(error, "ErrorCode")) or _text(_child(error, "Status"))
    return ErrorAnswer(
        code.strip() if code else None,
        (_text(_child(error, "Message")) or "").strip() or None,
        (_text(_child(error, "DebugData")) or "").strip() or None,
    )


# -- v2 answers --------------------------------------------------------------------------------------


def parse_v2(body: bytes, protocol: str) -> Answer:
    """What an Autodiscover v2 (JSON) answer says about `protocol`."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutodiscoverParseError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AutodiscoverParseError(f"expected a JSON object, got {type(document).__name__}")
    if "ErrorCode" in document:
        return ErrorAnswer(str(document["ErrorCode"]), _optional_text(document.get("ErrorMessage")))
    url = document.get("Url")
    if not isinstance(url, str) or not url:
        raise AutodiscoverParseError('no "Url" in the answer')
    answered = document.get("Protocol")
    if isinstance(answered, str) and answered.lower() != protocol.lower():
        raise AutodiscoverParseError(f'asked for Protocol {protocol}, the answer is about "{answered}"')
    return Settings(
        None, (ToldUrl(f"v2 {protocol}", "Url", url),), (ProtocolBlock(f"v2 {protocol}", (("Url", url),)),)
    )


# -- element helpers ---------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else element.text


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
