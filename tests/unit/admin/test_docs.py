"""The operations docs stay true: the sample config loads, the unit runs what exists, every endpoint and
metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

from casarray.admin.metrics import families
from casarray.admin.openapi import openapi_document
from casarray.config.load import load_config
from casarray.config.units import parse_duration
from tests.unit.admin.conftest import FakeControl

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_production_sample_is_a_valid_config() -> None:
    config = load_config(DOCS / "casarray.production.yaml")
    assert config.mode == "l7"
    assert config.admin is not None
    assert config.admin.token_file == "/etc/casarray/admin.token"


def test_systemd_unit_runs_the_real_commands_and_outlasts_the_grace() -> None:
    unit = (DOCS / "casarray.service").read_text()
    assert "ExecStart=/opt/casarray/bin/casarray run -c /etc/casarray/casarray.yaml" in unit
    assert "ExecStartPre=/opt/casarray/bin/casarray check -c /etc/casarray/casarray.yaml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    match = re.search(r"^TimeoutStopSec=(\S+)$", unit, re.MULTILINE)
    assert match is not None
    grace = load_config(DOCS / "casarray.production.yaml").timeouts.grace
    assert parse_duration(match.group(1)) > grace


def test_every_endpoint_and_metric_is_documented() -> None:
    text = (DOCS / "operations.md").read_text()
    for path, item in openapi_document()["paths"].items():
        for method in item:
            assert f"`{method.upper()} {path}" in text, (method, path)
    for family in families(FakeControl().snapshot()):
        name = family.name + ("_total" if family.type == "counter" else "")
        documented = f"`{name}`" in text or (
            name.endswith("_out_total") and "`casarray_server_bytes_in_total` / `_out_total`" in text
        )
        assert documented, name
