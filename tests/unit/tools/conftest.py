"""Shared by the export tests: the lab PKI, the configuration they export, and readers of the text."""

from __future__ import annotations

import pytest

from casarray.config import parse_config
from casarray.config.model import Config
from casarray.lab.pki import CertFiles, make_lab_pki
from tests.support import NAMESPACE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_lab_pki(tmp_path_factory.mktemp("pki"))


def yaml(pki: CertFiles | None = None, *, mode: str = "l4", vip: str = "10.0.1.250", extra: str = "") -> str:
    """A two-server configuration on `vip`; l7 takes its certificate from `pki`."""
    tls = ""
    if mode == "l7":
        assert pki is not None, "an l7 configuration needs the lab PKI"
        tls = f"tls: {{certificate: {pki.certificate}, key: {pki.key}}}\n"
    return (
        f"namespace: {NAMESPACE}\nmode: {mode}\nlisten: {{address: '{vip}', https_port: 443}}\n{tls}"
        "servers:\n  - {name: MB1, address: 10.0.1.11}\n  - {name: MB2, address: 10.0.1.12}\n" + extra
    )


def cfg(pki: CertFiles | None = None, **kwargs: str) -> Config:
    return parse_config(yaml(pki, **kwargs))


def lines(text: str) -> list[str]:
    """Statement lines without comments."""
    out = [line.split("  #", 1)[0].strip() for line in text.splitlines()]
    return [line for line in out if line and not line.startswith("#")]


def block(text: str, header: str) -> list[str]:
    """The statements of the top-level block opened by `header {`."""
    body = lines(text)
    start = body.index(header + " {") + 1
    depth, out = 1, []
    for line in body[start:]:
        depth += line.count("{") - line.count("}")
        if depth == 0:
            return out
        out.append(line)
    raise AssertionError(f"{header} is not closed")
