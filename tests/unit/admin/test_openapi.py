"""The OpenAPI document is valid 3.1, describes every route the server has, and matches real answers."""

from __future__ import annotations

import re
import time
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from openapi_spec_validator import validate

from casarray.admin.api import AdminApi
from casarray.admin.auth import Policy
from casarray.admin.openapi import openapi_document
from casarray.admin.views import event_json, snapshot_json
from tests.unit.admin.conftest import FakeControl


def test_document_is_valid_openapi_31() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_nothing_else() -> None:
    app = AdminApi(FakeControl(), Policy(True, None)).application()
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = re.sub(r"\{(\w+)\}", r"{\1}", route.resource.canonical if route.resource else "")
        served.add((path, route.method.lower()))
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    assert served == documented


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs point into the document's components.
    document = openapi_document()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )


def check(name: str, instance: Any) -> None:
    errors = list(schema_validator(name).iter_errors(instance))
    assert not errors, [e.message for e in errors]


def test_real_answers_match_the_schemas() -> None:
    control = FakeControl()
    control.health[("MB1", "ews")] = "down"
    control.member_operator[("MB2", "owa")] = "maint"
    from casarray.engine.control import OperatorState

    control.set_operator("MB1", None, OperatorState.DRAIN)
    check("Snapshot", snapshot_json(control.snapshot(), time.time()))
    check("Events", {"events": [event_json(e) for e in control.events()], "time": time.time()})


def test_schemas_reject_what_the_api_never_sends() -> None:
    snapshot = snapshot_json(FakeControl().snapshot(), time.time())
    snapshot["servers"][0]["members"]["owa"]["state"] = "sideways"
    assert list(schema_validator("Snapshot").iter_errors(snapshot))
