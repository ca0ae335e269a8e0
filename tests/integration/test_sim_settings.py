"""The simulated server's client-access settings over real sockets: GET/POST /_sim/settings, direct only,
read by the namespace verbs as an inventory; `casarray sim-cas --settings`; Autodiscover (POX and v2)
answered from them behind NTLM and Basic, checked with real clients (requests, requests-ntlm)."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import requests
from requests.auth import HTTPBasicAuth
from requests_ntlm import HttpNtlmAuth

from casarray.exchange.namespace.inventory import parse_inventory
from casarray.exchange.namespace.plan import Targets
from casarray.exchange.namespace.verify import verify
from casarray.lab import autodiscover as ad
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas
from tests.integration.conftest import post_sim_settings
from tests.support import DOMAIN, NAMESPACE, LoopThread, Proc, casarray, free_port, wait_until


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def sims(loop: LoopThread, pki: CertFiles) -> Iterator[list[SimCas]]:
    started = []
    try:
        for name, host in (("MB1", "127.0.0.2"), ("MB2", "127.0.0.3")):
            sim = SimCas(name, certificate=pki.certificate, key=pki.key, host=host, domain=DOMAIN)
            loop.run(sim.start())
            started.append(sim)
        yield started
    finally:
        for sim in started:
            loop.run(sim.stop())


def call(
    host: str, port: int, ca: Path, method: str, path: str, body: Any = None, host_header: str | None = None
) -> tuple[int, Any]:
    """One request on a new connection; the JSON answer decoded."""
    conn = http.client.HTTPSConnection(
        host, port, context=ssl.create_default_context(cafile=str(ca)), timeout=10
    )
    try:
        headers = {"Content-Type": "application/json"}
        if host_header is not None:
            headers["Host"] = host_header
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        assert resp.headers["X-FEServer"] == resp.headers["X-FEServer"].upper()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def settings_of(sim: SimCas, ca: Path) -> dict[str, Any]:
    status, document = call(sim.host, sim.port, ca, "GET", "/_sim/settings")
    assert status == 200
    return document


def test_get_settings_is_this_servers_inventory_and_the_org_is_their_concatenation(
    sims: list[SimCas], pki: CertFiles
) -> None:
    documents = [settings_of(sim, pki.ca) for sim in sims]
    assert documents[0]["Servers"] == [
        {"Name": "MB1", "Fqdn": "mb1.alwayshotcafe.com", "AdminDisplayVersion": "Version 15.2 (Build 1544.4)"}
    ]
    owa = next(v for v in documents[1]["VirtualDirectories"] if v["Type"] == "Owa")
    assert (owa["Server"], owa["InternalUrl"], owa["ExternalUrl"]) == (
        "MB2",
        "https://mb2.alwayshotcafe.com/owa",
        None,
    )
    org = {key: [entry for d in documents for entry in d[key]] for key in documents[0]}
    inventory = parse_inventory(json.dumps(org), where="sims")
    assert inventory.server_names() == ("MB1", "MB2")
    check = verify(inventory, Targets.build(NAMESPACE))
    assert not check.ok
    assert {f.server for f in check.failures} == {"MB1", "MB2"}


def test_post_changes_one_object_and_answers_the_new_document(sims: list[SimCas], pki: CertFiles) -> None:
    mb1 = sims[0]
    url = f"https://{NAMESPACE}/EWS/Exchange.asmx"
    document = post_sim_settings(
        mb1.host,
        mb1.port,
        pki.ca,
        {"Kind": "VirtualDirectory", "Type": "WebServices", "Set": {"InternalUrl": url, "ExternalUrl": url}},
        host="mb1.alwayshotcafe.com",  # the server's own name is allowed, like an IP address
    )
    ews = next(v for v in document["VirtualDirectories"] if v["Type"] == "WebServices")
    assert (ews["InternalUrl"], ews["ExternalUrl"]) == (url, url)
    assert settings_of(mb1, pki.ca) == document
    assert mb1.settings.vdir("WebServices").external_url == url
    assert settings_of(sims[1], pki.ca)["VirtualDirectories"] != document["VirtualDirectories"]

    change = {
        "Kind": "OutlookAnywhere",
        "Set": {"ExternalHostname": NAMESPACE, "ExternalClientsRequireSsl": True},
    }
    document = post_sim_settings(mb1.host, mb1.port, pki.ca, change)
    assert document["OutlookAnywhere"][0]["ExternalHostname"] == NAMESPACE
    assert document["OutlookAnywhere"][0]["ExternalClientsRequireSsl"] is True
    change = {"Kind": "ClientAccessService", "Set": {"AutoDiscoverServiceInternalUri": None}}
    document = post_sim_settings(mb1.host, mb1.port, pki.ca, change)
    assert document["ClientAccessServices"][0]["AutoDiscoverServiceInternalUri"] is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the request body is not JSON: line 1, column 2"),
        (b"\xff\xfe", "not UTF-8"),
        ({"Kind": "Mailbox", "Set": {"X": 1}}, "Kind: expected one of VirtualDirectory"),
        ({"Kind": "VirtualDirectory", "Type": "Nope", "Set": {"InternalUrl": None}}, "Type: expected one of"),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"Color": "red"}},
            "no settable property 'Color'",
        ),
        (
            {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "owa"}},
            "not an absolute http(s) URL",
        ),
        (
            {"Kind": "OutlookAnywhere", "Set": {"SSLOffloading": "no"}},
            "SSLOffloading: expected true or false",
        ),
        (
            {
                "Kind": "VirtualDirectory",
                "Type": "Owa",
                "Set": {"ExternalUrl": "https://a.b/owa", "InternalUrl": 1},
            },
            "InternalUrl: expected a URL string or null",
        ),
    ],
)
def test_a_bad_post_is_400_naming_the_problem_and_changes_nothing(
    sims: list[SimCas], pki: CertFiles, body: Any, error: str
) -> None:
    mb1 = sims[0]
    before = settings_of(mb1, pki.ca)
    status, answer = call(mb1.host, mb1.port, pki.ca, "POST", "/_sim/settings", body)
    assert status == 400
    assert error in answer["error"]
    assert settings_of(mb1, pki.ca) == before


def test_settings_are_refused_through_the_namespace(sims: list[SimCas], pki: CertFiles) -> None:
    mb1 = sims[0]
    before = settings_of(mb1, pki.ca)
    change = {"Kind": "VirtualDirectory", "Type": "Owa", "Set": {"InternalUrl": "https://evil.example/owa"}}
    for host in (NAMESPACE, f"autodiscover.{DOMAIN}", f"mb2.{DOMAIN}"):
        for method, body in (("GET", None), ("POST", change)):
            status, answer = call(
                mb1.host, mb1.port, pki.ca, method, "/_sim/settings", body, host_header=host
            )
            assert status == 403, (host, method)
            assert "controls answer only on mb1.alwayshotcafe.com" in answer["error"]
    assert settings_of(mb1, pki.ca) == before
    status, answer = call(mb1.host, mb1.port, pki.ca, "PUT", "/_sim/settings", change)
    assert status == 405


def test_sim_cas_starts_from_a_settings_file_and_logs_each_change(tmp_path: Path, pki: CertFiles) -> None:
    namespace_url = f"https://{NAMESPACE}/owa"
    settings = {
        "Servers": [
            {
                "Name": "MB2",
                "Fqdn": "mb2.alwayshotcafe.com",
                "AdminDisplayVersion": "Version 15.1 (Build 2507.6)",
            }
        ],
        "VirtualDirectories": [
            {"Type": "Owa", "Server": "MB2", "Name": "owa (Default Web Site)", "InternalUrl": namespace_url}
        ],
    }
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    port = free_port("127.0.0.3")
    args = ["--name", "MB2", "--listen", f"127.0.0.3:{port}", "--domain", DOMAIN]
    args += ["--cert", str(pki.certificate), "--key", str(pki.key)]
    proc = Proc(
        casarray("sim-cas", *args, "--settings", str(tmp_path / "settings.json")), tmp_path / "sim.log"
    )
    try:
        proc.wait_log(f"sim-cas MB2 listening on https://127.0.0.3:{port}")
        status, document = call("127.0.0.3", port, pki.ca, "GET", "/_sim/settings")
        assert status == 200
        assert document["Servers"][0]["AdminDisplayVersion"] == "Version 15.1 (Build 2507.6)"
        urls = {v["Type"]: v["InternalUrl"] for v in document["VirtualDirectories"]}
        assert urls["Owa"] == namespace_url
        assert urls["Ecp"] == "https://mb2.alwayshotcafe.com/ecp"  # not in the file: as installed
        change = {
            "Kind": "VirtualDirectory",
            "Type": "Ecp",
            "Set": {"InternalUrl": f"https://{NAMESPACE}/ecp"},
        }
        post_sim_settings("127.0.0.3", port, pki.ca, change)
        proc.wait_log(
            "MB2: Set-EcpVirtualDirectory MB2\\ecp (Default Web Site): InternalUrl "
            f"'https://mb2.alwayshotcafe.com/ecp' -> 'https://{NAMESPACE}/ecp'"
        )
        call("127.0.0.3", port, pki.ca, "POST", "/_sim/settings", {"Kind": "Nope"})
        proc.wait_log("MB2: settings change refused: Kind: expected one of")
        call("127.0.0.3", port, pki.ca, "GET", "/_sim/settings", host_header=NAMESPACE)
        proc.wait_log(f"MB2: refused GET /_sim/settings: Host '{NAMESPACE}' is neither mb2.alwayshotcafe.com")
        wait_until(lambda: proc.log.count("casarray.sim") == 3)
    finally:
        assert proc.stop() == 0
    # a file without this server: one clear error line, exit 1
    missing = subprocess.run(
        casarray("sim-cas", *args, "--name", "MB3", "--settings", str(tmp_path / "settings.json")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"error: --settings {tmp_path / 'settings.json'}: no server 'MB3' in the settings file (it has MB2)"
    ]


# --- Autodiscover over real sockets: POX and v2, behind the sim's authentication ----------------------------

NETBIOS, USER, PASSWORD = "ALWAYSHOTCAFE", "alice", "Passw0rd!"
OUTLOOK = f"{{{ad.OUTLOOK_RESPONSE}}}"


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    path.write_text(f"{NETBIOS}:{USER}:{PASSWORD}\n")
    return path


@pytest.fixture
def ntlm_sim(loop: LoopThread, pki: CertFiles, users: Path) -> Iterator[SimCas]:
    sim = SimCas(
        "MB1", certificate=pki.certificate, key=pki.key, host="127.0.0.4", domain=DOMAIN, ntlm_users=users
    )
    loop.run(sim.start())
    try:
        yield sim
    finally:
        loop.run(sim.stop())


def pox_body(
    email: str, schema: str = ad.OUTLOOK_RESPONSE, request_schema: str = ad.OUTLOOK_REQUEST
) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{request_schema}"><Request>'
        f"<EMailAddress>{email}</EMailAddress><AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def session(ca: Path, auth: Any = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override s.verify
    s.verify = str(ca)
    s.auth = auth
    return s


def urls_told(answer: bytes) -> dict[str, list[str]]:
    """Every URL of an outlook answer by the Type of its top-level Protocol block and its element name."""
    account = ElementTree.fromstring(answer).find(f"{OUTLOOK}Response/{OUTLOOK}Account")
    assert account is not None
    found: dict[str, list[str]] = {}
    for protocol in account.findall(f"{OUTLOOK}Protocol"):
        kind = protocol.get("Type") or protocol.findtext(f"{OUTLOOK}Type") or "?"
        for element in protocol.iter():
            if element.text and element.text.startswith("http"):
                found.setdefault(f"{kind}/{element.tag.split('}')[1]}", []).append(element.text)
    return found


def test_pox_with_ntlm_tells_the_settings_and_follows_a_change_at_once(
    ntlm_sim: SimCas, pki: CertFiles
) -> None:
    url = f"{ntlm_sim.url}/Autodiscover/Autodiscover.xml"
    with session(pki.ca) as anonymous:
        resp = anonymous.post(url, data=pox_body(f"{USER}@{DOMAIN}"))
        assert resp.status_code == 401
        assert resp.raw.headers.getlist("WWW-Authenticate") == [
            "NTLM",
            "Negotiate",
            'Basic realm="127.0.0.4"',
        ]
    with session(pki.ca, HttpNtlmAuth(f"{NETBIOS}\\{USER}", PASSWORD)) as s:
        resp = s.post(url, data=pox_body(f"{USER}@{DOMAIN}"), headers={"Content-Type": "text/xml"})
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert resp.headers["X-FEServer"] == "MB1"
        told = urls_told(resp.content)
        assert told["EXCH/EwsUrl"] == ["https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"]
        assert told["WEB/OWAUrl"] == ["https://mb1.alwayshotcafe.com/owa"]
        assert not any(key.startswith("EXPR/") for key in told)  # no ExternalHostname as installed

        for change in (
            {
                "Kind": "VirtualDirectory",
                "Type": "WebServices",
                "Set": {"ExternalUrl": f"https://{NAMESPACE}/EWS/Exchange.asmx"},
            },
            {
                "Kind": "OutlookAnywhere",
                "Set": {"ExternalHostname": NAMESPACE, "ExternalClientsRequireSsl": True},
            },
        ):
            post_sim_settings(ntlm_sim.host, ntlm_sim.port, pki.ca, change)
        resp = s.post(url, data=pox_body(f"{USER}@{DOMAIN}"))  # same connection, still alice
        told = urls_told(resp.content)
        assert told["EXPR/EwsUrl"] == [f"https://{NAMESPACE}/EWS/Exchange.asmx"]
        root = ElementTree.fromstring(resp.content)
        expr = next(p for p in root.iter(f"{OUTLOOK}Protocol") if p.findtext(f"{OUTLOOK}Type") == "EXPR")
        assert (expr.findtext(f"{OUTLOOK}Server"), expr.findtext(f"{OUTLOOK}SSL")) == (NAMESPACE, "On")

        resp = s.post(url, data=pox_body(f"{USER}@{DOMAIN}"), headers={"X-MapiHttpCapability": "1"})
        told = urls_told(resp.content)
        assert [url.split("?")[0] for url in told["mapiHttp/InternalUrl"]] == [
            "https://mb1.alwayshotcafe.com/mapi/emsmdb/",
            "https://mb1.alwayshotcafe.com/mapi/nspi/",
        ]
        assert not any(key.startswith(("EXCH/", "EXPR/")) for key in told)
    records = [r for r in ntlm_sim.state.select(kind="vdir", service="autodiscover") if r.status == 200]
    assert [r.user for r in records] == [f"{NETBIOS}\\{USER}"] * 3


def test_pox_with_basic_and_mobilesync(ntlm_sim: SimCas, pki: CertFiles) -> None:
    url = f"{ntlm_sim.url}/autodiscover/autodiscover.xml"  # any case, as IIS
    body = pox_body(f"{USER}@{DOMAIN}", ad.MOBILESYNC_RESPONSE, ad.MOBILESYNC_REQUEST)
    with session(pki.ca, HTTPBasicAuth(f"{USER}@{DOMAIN}", PASSWORD)) as s:
        resp = s.post(url, data=body)
        assert resp.status_code == 200
        server = ElementTree.fromstring(resp.content).find(
            f"{{{ad.MOBILESYNC_RESPONSE}}}Response/{{{ad.MOBILESYNC_RESPONSE}}}Action/"
            f"{{{ad.MOBILESYNC_RESPONSE}}}Settings/{{{ad.MOBILESYNC_RESPONSE}}}Server"
        )
        assert server is not None
        assert (
            server.findtext(f"{{{ad.MOBILESYNC_RESPONSE}}}Url")
            == "https://mb1.alwayshotcafe.com/Microsoft-Server-ActiveSync"
        )
        # Basic authenticates each request, not the connection: without the header it is 401 again
        s.auth = None
        assert s.post(url, data=body).status_code == 401
    # ActiveSync takes Basic too, EWS does not (Exchange's defaults)
    with session(pki.ca, HTTPBasicAuth(f"{NETBIOS}\\{USER}", PASSWORD)) as s:
        assert s.options(f"{ntlm_sim.url}/Microsoft-Server-ActiveSync").status_code == 200
        resp = s.get(f"{ntlm_sim.url}/EWS/Exchange.asmx")
        assert resp.status_code == 401
        assert resp.raw.headers.getlist("WWW-Authenticate") == ["NTLM", "Negotiate"]
    records = ntlm_sim.state.select(kind="vdir")
    assert [(r.service, r.status, r.user) for r in records] == [
        ("autodiscover", 200, f"{NETBIOS}\\{USER}"),
        ("autodiscover", 401, None),
        ("eas", 200, f"{NETBIOS}\\{USER}"),
        ("ews", 401, None),
    ]


def test_wrong_password_is_401_with_ntlm_and_with_basic(ntlm_sim: SimCas, pki: CertFiles) -> None:
    url = f"{ntlm_sim.url}/Autodiscover/Autodiscover.xml"
    for auth in (
        HttpNtlmAuth(f"{NETBIOS}\\{USER}", "wrong"),
        HTTPBasicAuth(USER, "wrong"),
        HTTPBasicAuth("bob", PASSWORD),
    ):
        with session(pki.ca, auth) as s:
            resp = s.post(url, data=pox_body(f"{USER}@{DOMAIN}"))
            assert resp.status_code == 401, auth
            assert 'Basic realm="127.0.0.4"' in resp.raw.headers.getlist("WWW-Authenticate")
            assert b"<Autodiscover" not in resp.content


def test_pox_errors_come_as_exchange_sends_them(ntlm_sim: SimCas, pki: CertFiles) -> None:
    url = f"{ntlm_sim.url}/Autodiscover/Autodiscover.xml"

    def error(resp: requests.Response, namespace: str) -> tuple[int, str | None, str | None]:
        block = ElementTree.fromstring(resp.content).find(f"{{{namespace}}}Response/{{{namespace}}}Error")
        assert block is not None
        return (
            resp.status_code,
            block.findtext(f"{{{namespace}}}ErrorCode"),
            block.findtext(f"{{{namespace}}}Message"),
        )

    with session(pki.ca, HTTPBasicAuth(USER, PASSWORD)) as s:
        assert error(s.post(url, data=pox_body(f"bob@{DOMAIN}")), ad.OUTLOOK_RESPONSE) == (
            200,
            "500",
            "The email address can't be found.",
        )
        assert error(s.post(url, data=b"<Autodiscover"), ad.RESPONSE_SCHEMA) == (
            200,
            "600",
            "Invalid Request",
        )
        assert error(s.get(url), ad.RESPONSE_SCHEMA) == (200, "600", "Invalid Request")
        other = pox_body(f"{USER}@{DOMAIN}", "http://example.com/responseschema")
        assert error(s.post(url, data=other), ad.RESPONSE_SCHEMA) == (200, "601", "Provider is not available")


def test_v2_answers_anonymously_from_the_settings(ntlm_sim: SimCas, pki: CertFiles) -> None:
    base = f"{ntlm_sim.url}/autodiscover/autodiscover.json/v1.0/{USER}@{DOMAIN}"
    with session(pki.ca) as s:  # no credentials: Exchange answers v2 anonymously
        resp = s.get(base, params={"Protocol": "EWS"})
        assert (resp.status_code, resp.json()) == (
            200,
            {"Protocol": "EWS", "Url": "https://mb1.alwayshotcafe.com/EWS/Exchange.asmx"},
        )
        assert resp.headers["X-FEServer"] == "MB1"
        change = {
            "Kind": "VirtualDirectory",
            "Type": "ActiveSync",
            "Set": {"ExternalUrl": f"https://{NAMESPACE}/Microsoft-Server-ActiveSync"},
        }
        assert call(ntlm_sim.host, ntlm_sim.port, pki.ca, "POST", "/_sim/settings", change)[0] == 200
        resp = s.get(
            base.replace("autodiscover.json", "AutoDiscover.JSON"), params={"protocol": "activesync"}
        )
        assert resp.json() == {
            "Protocol": "ActiveSync",
            "Url": f"https://{NAMESPACE}/Microsoft-Server-ActiveSync",
        }
        resp = s.get(base, params={"Protocol": "AutodiscoverV1"}, headers={"Host": f"autodiscover.{DOMAIN}"})
        assert resp.json() == {
            "Protocol": "AutodiscoverV1",
            "Url": f"https://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml",
        }
        resp = s.get(
            f"{ntlm_sim.url}/autodiscover/autodiscover.json",
            params={"Email": f"{USER}@{DOMAIN}", "Protocol": "Ews"},
        )
        assert resp.json()["Protocol"] == "EWS"
        resp = s.get(base, params={"Protocol": "Imap"})
        assert (resp.status_code, resp.json()["ErrorCode"]) == (400, "InvalidProtocol")
        resp = s.get(base.replace(USER, "bob"), params={"Protocol": "EWS"})
        assert (resp.status_code, resp.json()["ErrorCode"]) == (404, "UserNotFound")


def test_a_sim_without_users_answers_autodiscover_for_any_address_of_its_domain(
    sims: list[SimCas], pki: CertFiles
) -> None:
    mb2 = sims[1]
    with session(pki.ca) as s:
        resp = s.post(f"{mb2.url}/Autodiscover/Autodiscover.xml", data=pox_body(f"carol@{DOMAIN}"))
        assert resp.status_code == 200
        assert urls_told(resp.content)["EXCH/EwsUrl"] == ["https://mb2.alwayshotcafe.com/EWS/Exchange.asmx"]
        resp = s.post(f"{mb2.url}/Autodiscover/Autodiscover.xml", data=pox_body("carol@example.com"))
        assert b"<ErrorCode>500</ErrorCode>" in resp.content
