from typing import get_args

from casarray.config.model import ServiceName
from casarray.exchange import catalog


def test_every_vdir_has_a_healthcheck_path() -> None:
    paths = {s.name: s.health_path for s in catalog.iter_services()}
    assert paths["owa"] == "/owa/healthcheck.htm"
    assert paths["eas"] == "/Microsoft-Server-ActiveSync/healthcheck.htm"
    assert paths["rpc"] == "/Rpc/healthcheck.htm"
    assert len(paths) == 9


def test_routing_is_case_insensitive_like_iis() -> None:
    svc = catalog.for_path("/microsoft-server-activesync?Cmd=Ping")
    assert svc is not None
    assert svc.name == "eas"
    ews = catalog.for_path("/ews/Exchange.asmx")
    assert ews is not None
    assert ews.name == "ews"
    assert catalog.for_path("/") is None
    assert catalog.for_path("/owaX/") is None


def test_exchange_limits_and_timeouts() -> None:
    assert catalog.get("ews").max_body >= 64 * 1024 * 1024
    assert catalog.get("eas").long_lived
    assert not catalog.get("owa").long_lived
    assert catalog.get("powershell").scheme == "http"
    assert not catalog.get("autodiscover").has_internal_url


def test_the_config_names_exactly_the_catalog_services() -> None:
    assert set(get_args(ServiceName)) == set(catalog.SERVICE_NAMES)
