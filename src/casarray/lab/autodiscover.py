"""Autodiscover answered as an Exchange 2016/2019 server answers it, from that server's settings.

Pure: a request's bytes, a server's `ServerSettings` and a `Mailbox` in; the answer's bytes (or JSON
data) out. The simulated server (sim.py) authenticates the client and calls these. Every URL a client is
told comes from the settings at the moment it asks, so a settings change shows at once.

POX Autodiscover ([MS-OXDSCLI]; Microsoft, "POX Autodiscover request/response for Exchange"):
- the request is `<Autodiscover xmlns=".../outlook/requestschema/2006"><Request><EMailAddress>` and
  `<AcceptableResponseSchema>`; phones send the same with `.../mobilesync/requestschema/2006`
  ([MS-ASCMD] 2.2.1.1). It is parsed with defusedxml: no DTD, no entity expansion;
- the outlook answer (`.../outlook/responseschema/2006a`) has the User block and an Account with, in
  this order: EXCH (internal URLs: ASUrl/EwsUrl/EmwsUrl/OOFUrl from the WebServices InternalUrl, EcpUrl,
  OABUrl; Server is `<mailbox GUID>@<domain>` as from Exchange 2013 on), EXPR (Outlook Anywhere's
  ExternalHostname with SSL and AuthPackage, and the external URLs; only when an ExternalHostname is
  set) and WEB (OWA and EWS, Internal and External). When the client sends `X-MapiHttpCapability: N`
  (N ≥ 1), [MS-OXDSCLI] 3.2.5.1 replaces EXCH and EXPR by `<Protocol Type="mapiHttp" Version="1">` with
  MailStore and AddressBook Internal/ExternalUrl (`<mapi URL>/emsmdb/?MailboxId=…`, `/nspi/…`, the
  4.4 example); WEB stays. `X-ClientCanHandle: Negotiate` lets AuthPackage say Negotiate (Microsoft,
  "POX Autodiscover request", Table 2); without it a Negotiate setting is told as Ntlm;
- the mobilesync answer ([MS-ASCMD] 4.2.1) is Action/Settings/Server of Type MobileSync with the
  ActiveSync ExternalUrl (else its InternalUrl) as Url and Name;
- errors are an Error block with Time and Id ([MS-ASCMD] 2.2.3.63) and an ErrorCode ([MS-OXDSCLI]
  2.2.4.1.1.3.1): 500 for an address that is not a mailbox, 600 for a request that is not one (bad XML,
  no EMailAddress, a GET), 601 for a response schema no provider serves.

Autodiscover v2 (the JSON endpoint, Exchange 2016 CU3 and later):
`GET /autodiscover/autodiscover.json/v1.0/<smtp>?Protocol=EWS|ActiveSync|AutodiscoverV1` (or
`/autodiscover/autodiscover.json?Email=<smtp>&Protocol=…`) → `{"Protocol": "EWS", "Url": "…"}`: EWS and
ActiveSync give the vdir's ExternalUrl (else its InternalUrl), AutodiscoverV1 the POX URL on the host
the client asked. An unknown protocol is 400 `{"ErrorCode": "InvalidProtocol", "ErrorMessage": …}`, a
missing one 400 `MandatoryParameterMissing`, an unknown address 404 `UserNotFound` (the shapes Exchange
answers; MSXFAQ, "Autodiscover V2").
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

import defusedxml.ElementTree
from defusedxml import DefusedXmlException

from casarray.lab.settings import ServerSettings
from casarray.lab.users import Mailbox

POX_PATH: Final = "/autodiscover/autodiscover.xml"  # compared lower-cased, as IIS compares paths
V2_PATH: Final = "/autodiscover/autodiscover.json"

RESPONSE_SCHEMA: Final = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_REQUEST: Final = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE: Final = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILESYNC_REQUEST: Final = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
REQUEST_SCHEMAS: Final = (OUTLOOK_REQUEST, MOBILESYNC_REQUEST)
RESPONSE_SCHEMAS: Final = (OUTLOOK_RESPONSE, MOBILESYNC_RESPONSE)

# [MS-OXDSCLI] 2.2.4.1.1.3.1 ErrorCode.
NOT_FOUND: Final = 500
INVALID_REQUEST: Final = 600
NO_PROVIDER: Final = 601
_MESSAGES: Final = {
    NOT_FOUND: "The email address can't be found.",
    INVALID_REQUEST: "Invalid Request",
    NO_PROVIDER: "Provider is not available",
}

# Names Exchange setup gives the organisation's objects (the default organisation name, the one
# administrative group of Exchange 2007 and later).
ORGANISATION: Final = "First Organization"
ADMIN_GROUP: Final = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
_IDS: Final = uuid.UUID("0c3e8f5e-2f8b-4a61-9d8e-6a1f7f4d2b31")  # makes the org's fixed GUIDs

V2_PROTOCOLS: Final = ("EWS", "ActiveSync", "AutodiscoverV1")
_VERSION = re.compile(r"(\d+)\.(\d+)\s*\(Build\s+(\d+)")


class PoxError(Exception):
    """A POX request Exchange answers with an Error block."""

    def __init__(self, code: int, schema: str | None = None) -> None:
        super().__init__(_MESSAGES[code])
        self.code = code
        self.schema = schema  # the response schema to answer in, when the request named a known one


@dataclass(frozen=True, slots=True)
class PoxRequest:
    """What a POX request asks: settings for `email` in `schema` (AcceptableResponseSchema)."""

    email: str
    schema: str


@dataclass(frozen=True, slots=True)
class ClientHints:
    """What the client says it handles, in request headers."""

    mapi_http: int = 0  # X-MapiHttpCapability: the highest mapiHttp version it takes (0: none)
    negotiate: bool = False  # X-ClientCanHandle: Negotiate

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ClientHints:
        """[MS-OXDSCLI] 3.2.5.1: a header value that is not an integer above 0 counts as absent."""
        text = headers.get("X-MapiHttpCapability", "").strip()
        mapi = int(text) if text.isdigit() and int(text) > 0 else 0
        handles = {v.strip().lower() for v in headers.get("X-ClientCanHandle", "").split(",")}
        return cls(mapi_http=mapi, negotiate="negotiate" in handles)


def parse_pox_request(body: bytes) -> PoxRequest:
    """The request's address and schema; PoxError(600) when the body is not a POX request."""
    try:
        root = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException):
        raise PoxError(INVALID_REQUEST) from None
    namespace = next((ns for ns in REQUEST_SCHEMAS if root.tag == f"{{{ns}}}Autodiscover"), None)
    if namespace is None:
        raise PoxError(INVALID_REQUEST)
    request = root.find(f"{{{namespace}}}Request")
    if request is None:
        raise PoxError(INVALID_REQUEST)
    email = (request.findtext(f"{{{namespace}}}EMailAddress") or "").strip()
    schema = (request.findtext(f"{{{namespace}}}AcceptableResponseSchema") or "").strip()
    if not email or not schema:
        raise PoxError(INVALID_REQUEST, schema if schema in RESPONSE_SCHEMAS else None)
    return PoxRequest(email, schema)


def pox_answer(
    request: PoxRequest, settings: ServerSettings, mailbox: Mailbox | None, hints: ClientHints
) -> bytes:
    """The settings document for `request`; PoxError(601/500) for an unknown schema or address."""
    if request.schema not in RESPONSE_SCHEMAS:
        raise PoxError(NO_PROVIDER)
    if mailbox is None:
        raise PoxError(NOT_FOUND, request.schema)
    if request.schema == MOBILESYNC_RESPONSE:
        return mobilesync_settings(settings, mailbox)
    return outlook_settings(settings, mailbox, hints)


def outlook_settings(settings: ServerSettings, mailbox: Mailbox, hints: ClientHints) -> bytes:
    """The outlook (2006a) answer: User, then Account with EXCH/EXPR or mapiHttp, and WEB."""
    root, response = _document(OUTLOOK_RESPONSE)
    user = _add(response, "User")
    _add(user, "DisplayName", mailbox.display_name)
    _add(
        user,
        "LegacyDN",
        f"/o={ORGANISATION}/ou={ADMIN_GROUP}/cn=Recipients/cn={mailbox.guid.hex}-{mailbox.display_name}",
    )
    _add(user, "AutoDiscoverSMTPAddress", mailbox.address)
    _add(user, "DeploymentId", str(uuid.uuid5(_IDS, f"deployment:{mailbox.domain}")))
    account = _add(response, "Account")
    _add(account, "AccountType", "email")
    _add(account, "Action", "settings")
    _add(account, "MicrosoftOnline", "False")
    server = f"{mailbox.guid}@{mailbox.domain}"
    mapi = settings.vdir("Mapi")
    if hints.mapi_http >= 1 and (mapi.internal_url or mapi.external_url):
        protocol = _add(account, "Protocol", Type="mapiHttp", Version="1")
        for element, endpoint in (("MailStore", "emsmdb"), ("AddressBook", "nspi")):
            block = _add(protocol, element)
            for side, url in (("InternalUrl", mapi.internal_url), ("ExternalUrl", mapi.external_url)):
                if url:
                    _add(block, side, f"{url.rstrip('/')}/{endpoint}/?MailboxId={server}")
    else:
        _exch(account, settings, server, mailbox)
        _expr(account, settings, mailbox, hints)
    _web(account, settings)
    return _serialise(root)


def _exch(account: ElementTree.Element, settings: ServerSettings, server: str, mailbox: Mailbox) -> None:
    protocol = _add(account, "Protocol")
    _add(protocol, "Type", "EXCH")
    _add(protocol, "Server", server)
    server_dn = f"/o={ORGANISATION}/ou={ADMIN_GROUP}/cn=Configuration/cn=Servers/cn={server}"
    _add(protocol, "ServerDN", server_dn)
    version = server_version(settings.version)
    if version is not None:
        _add(protocol, "ServerVersion", version)
    _add(protocol, "MdbDN", f"{server_dn}/cn=Microsoft Private MDB")
    _urls(protocol, settings, mailbox, internal=True)
    _add(protocol, "ServerExclusiveConnect", "off")


def _expr(
    account: ElementTree.Element, settings: ServerSettings, mailbox: Mailbox, hints: ClientHints
) -> None:
    oa = settings.outlook_anywhere
    if not oa.external_hostname:
        return  # Outlook Anywhere is not published outside: no EXPR block
    protocol = _add(account, "Protocol")
    _add(protocol, "Type", "EXPR")
    _add(protocol, "Server", oa.external_hostname)
    _add(protocol, "SSL", "On" if oa.external_clients_require_ssl else "Off")
    method = oa.external_client_authentication_method
    _add(protocol, "AuthPackage", "Ntlm" if method == "Negotiate" and not hints.negotiate else method)
    _add(protocol, "ServerExclusiveConnect", "on")
    _add(protocol, "CertPrincipalName", "none")
    _urls(protocol, settings, mailbox, internal=False)


def _urls(
    protocol: ElementTree.Element, settings: ServerSettings, mailbox: Mailbox, *, internal: bool
) -> None:
    """The web-service URLs of one side; a URL that is not set is left out, as Exchange leaves it."""

    def side(type_: str) -> str | None:
        vdir = settings.vdir(type_)
        return vdir.internal_url if internal else vdir.external_url

    ews, ecp, oab = side("WebServices"), side("Ecp"), side("Oab")
    if ews:
        _add(protocol, "ASUrl", ews)
        _add(protocol, "EwsUrl", ews)
        _add(protocol, "EmwsUrl", ews)
    if ecp:
        _add(protocol, "EcpUrl", ecp if ecp.endswith("/") else f"{ecp}/")
    if ews:
        _add(protocol, "OOFUrl", ews)
    if oab:
        oab_id = uuid.uuid5(_IDS, f"oab:{mailbox.domain}")
        _add(protocol, "OABUrl", f"{oab.rstrip('/')}/{oab_id}/")


def _web(account: ElementTree.Element, settings: ServerSettings) -> None:
    owa, ews = settings.vdir("Owa"), settings.vdir("WebServices")
    protocol = _add(account, "Protocol")
    _add(protocol, "Type", "WEB")
    for element, inner, owa_url, methods, ews_url in (
        ("Internal", "EXCH", owa.internal_url, owa.internal_authentication, ews.internal_url),
        ("External", "EXPR", owa.external_url, owa.external_authentication, ews.external_url),
    ):
        if not (owa_url or ews_url):
            continue
        block = _add(protocol, element)
        if owa_url:
            _add(block, "OWAUrl", owa_url, AuthenticationMethod=", ".join(methods))
        if ews_url:
            service = _add(block, "Protocol")
            _add(service, "Type", inner)
            _add(service, "ASUrl", ews_url)


def mobilesync_settings(settings: ServerSettings, mailbox: Mailbox) -> bytes:
    """The mobilesync answer ([MS-ASCMD] 4.2.1): the ActiveSync URL a phone is to use."""
    root, response = _document(MOBILESYNC_RESPONSE)
    _add(response, "Culture", "en:us")
    user = _add(response, "User")
    _add(user, "DisplayName", mailbox.display_name)
    _add(user, "EMailAddress", mailbox.address)
    action = _add(response, "Action")
    found = _add(action, "Settings")
    eas = settings.vdir("ActiveSync")
    url = eas.external_url or eas.internal_url
    if url:
        server = _add(found, "Server")
        _add(server, "Type", "MobileSync")
        _add(server, "Url", url)
        _add(server, "Name", url)
    return _serialise(root)


def pox_error(error: PoxError, *, time_of_day: str, server: str) -> bytes:
    """The Error answer: `<Response>` in the schema the request asked for when it named a known one,
    else in the base namespace (what Exchange sends for a GET or a body that is not a request)."""
    root = ElementTree.Element("Autodiscover", xmlns=RESPONSE_SCHEMA)
    attrs = {"xmlns": error.schema} if error.schema else {}
    response = _add(root, "Response", **attrs)
    # Id: "an unsigned integer that uniquely identifies the server" ([MS-ASCMD] 2.2.3.63).
    block = _add(response, "Error", Time=time_of_day, Id=str(zlib.crc32(server.lower().encode())))
    _add(block, "ErrorCode", str(error.code))
    _add(block, "Message", str(error))
    _add(block, "DebugData")
    return _serialise(root)


def server_version(version: str) -> str | None:
    """AdminDisplayVersion "Version 15.2 (Build 1544.4)" as the POX ServerVersion: 8 hex digits holding
    0b0111, the major (6 bits) and minor (6 bits) version, a 1 and the build (15 bits) (Microsoft,
    "ServerVersion (POX)": 738180DA is 14.1.218)."""
    match = _VERSION.search(version)
    if match is None:
        return None
    major, minor, build = (int(g) for g in match.groups())
    value = 0b0111 << 28 | (major & 0x3F) << 22 | (minor & 0x3F) << 16 | 1 << 15 | (build & 0x7FFF)
    return f"{value:08X}"


# ---------------------------------------------------------------------------------------------------
# Autodiscover v2.


@dataclass(frozen=True, slots=True)
class V2Request:
    """What a v2 request asks: the URL of `protocol` for `email` (either may be missing)."""

    email: str | None
    protocol: str | None


def parse_v2_request(path: str, query: Mapping[str, str]) -> V2Request | None:
    """The address and protocol of a v2 request, or None when `path` is not a v2 endpoint. Paths and
    query names match case-insensitively (IIS, ASP.NET)."""
    lower = path.lower()
    params = {key.lower(): value for key, value in query.items()}
    if lower in (V2_PATH, f"{V2_PATH}/"):
        return V2Request(params.get("email") or None, params.get("protocol") or None)
    prefix = f"{V2_PATH}/v1.0/"
    if lower.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix) :]:
        return V2Request(path[len(prefix) :], params.get("protocol") or None)
    return None


def v2_answer(
    request: V2Request, settings: ServerSettings, mailbox: Mailbox | None, host: str
) -> tuple[int, dict[str, str]]:
    """(HTTP status, JSON body) for a v2 request; `host` is the name (and port) the client asked."""
    if request.protocol is None:
        return 400, {
            "ErrorCode": "MandatoryParameterMissing",
            "ErrorMessage": "A valid value must be provided for the query parameter 'Protocol'.",
        }
    protocol = next((p for p in V2_PROTOCOLS if p.lower() == request.protocol.lower()), None)
    if protocol is None:
        return 400, {
            "ErrorCode": "InvalidProtocol",
            "ErrorMessage": f"The given protocol value '{request.protocol}' is invalid. "
            f"Supported values are '{','.join(V2_PROTOCOLS)}'",
        }
    if mailbox is None:
        return 404, {"ErrorCode": "UserNotFound", "ErrorMessage": "The given User is not found"}
    if protocol == "AutodiscoverV1":
        url: str | None = f"https://{host}{POX_PATH}"
    else:
        vdir = settings.vdir("WebServices" if protocol == "EWS" else "ActiveSync")
        url = vdir.external_url or vdir.internal_url
    if url is None:
        return 404, {"ErrorCode": "NotFound", "ErrorMessage": f"No URL is configured for protocol {protocol}"}
    return 200, {"Protocol": protocol, "Url": url}


# ---------------------------------------------------------------------------------------------------
# XML writing: ElementTree builds, the namespace declarations are written as Exchange writes them
# (a default xmlns on Autodiscover and on Response, no prefixes).


def _document(schema: str) -> tuple[ElementTree.Element, ElementTree.Element]:
    root = ElementTree.Element("Autodiscover", xmlns=RESPONSE_SCHEMA)
    return root, _add(root, "Response", xmlns=schema)


def _add(parent: ElementTree.Element, tag: str, text: str | None = None, **attrs: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _serialise(root: ElementTree.Element) -> bytes:
    ElementTree.indent(root, space="  ")
    body = ElementTree.tostring(root, encoding="unicode", short_empty_elements=True)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body).encode("utf-8")
