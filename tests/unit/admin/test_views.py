"""JSON views of the Control's data: field for field, plus the derived display state."""

from __future__ import annotations

import json

import pytest

from casarray.admin.views import effective_operator, snapshot_json
from tests.unit.admin.conftest import FakeControl


@pytest.mark.parametrize(
    ("server", "member", "expected"),
    [
        ("ready", "ready", "ready"),
        ("ready", "drain", "drain"),
        ("drain", "ready", "drain"),
        ("drain", "maint", "maint"),
        ("maint", "drain", "maint"),
    ],
)
def test_the_stronger_operator_state_applies(server: str, member: str, expected: str) -> None:
    assert effective_operator(server, member) == expected


def test_snapshot_json_keeps_every_field_and_adds_state_and_time() -> None:
    control = FakeControl()
    control.health[("MB1", "ews")] = "down"
    control.member_operator[("MB2", "owa")] = "drain"
    control.operator["MB2"] = "maint"
    data = json.loads(json.dumps(snapshot_json(control.snapshot(), 1700000123.5)))
    assert data["time"] == 1700000123.5
    assert data["services"] == ["owa", "ews"]
    mb1, mb2 = data["servers"]
    assert mb1["members"]["ews"]["state"] == "down"
    assert mb1["members"]["owa"]["state"] == "up"
    assert mb2["members"]["owa"]["state"] == "maint"  # the server's maint is stronger than the drain
    assert mb2["members"]["owa"]["operator"] == "drain"  # the member's own state is kept as set
    assert set(mb1) >= {"name", "address", "port", "operator", "active", "peak", "total", "bytes_in"}
    assert data["requests"] == {"ews": {"2xx": 7, "5xx": 1}}
