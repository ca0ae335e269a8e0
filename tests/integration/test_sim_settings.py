"""The simulated server's client-access settings over real sockets: GET/POST /_sim/settings, direct only,
read by the namespace verbs as an inventory; `casarray sim-cas --settings`."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from casarray.exchange.namespace.inventory import parse_inventory
from casarray.exchange.namespace.plan import Targets
from casarray.exchange.namespace.verify import verify
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas
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
    status, document = call(
        mb1.host,
        mb1.port,
        pki.ca,
        "POST",
        "/_sim/settings",
        {"Kind": "VirtualDirectory", "Type": "WebServices", "Set": {"InternalUrl": url, "ExternalUrl": url}},
        host_header="mb1.alwayshotcafe.com",  # the server's own name is allowed, like an IP address
    )
    assert status == 200
    ews = next(v for v in document["VirtualDirectories"] if v["Type"] == "WebServices")
    assert (ews["InternalUrl"], ews["ExternalUrl"]) == (url, url)
    assert settings_of(mb1, pki.ca) == document
    assert mb1.settings.vdir("WebServices").external_url == url
    assert settings_of(sims[1], pki.ca)["VirtualDirectories"] != document["VirtualDirectories"]

    status, document = call(
        mb1.host,
        mb1.port,
        pki.ca,
        "POST",
        "/_sim/settings",
        {
            "Kind": "OutlookAnywhere",
            "Set": {"ExternalHostname": NAMESPACE, "ExternalClientsRequireSsl": True},
        },
    )
    assert status == 200
    assert document["OutlookAnywhere"][0]["ExternalHostname"] == NAMESPACE
    assert document["OutlookAnywhere"][0]["ExternalClientsRequireSsl"] is True
    status, document = call(
        mb1.host,
        mb1.port,
        pki.ca,
        "POST",
        "/_sim/settings",
        {"Kind": "ClientAccessService", "Set": {"AutoDiscoverServiceInternalUri": None}},
    )
    assert (status, document["ClientAccessServices"][0]["AutoDiscoverServiceInternalUri"]) == (200, None)


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
        assert call("127.0.0.3", port, pki.ca, "POST", "/_sim/settings", change)[0] == 200
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
