from pathlib import Path

from pydantic import BaseModel

from casarray.config.docs import is_duration, render
from casarray.config.load import _model_in
from casarray.config.model import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_generated_from_the_models() -> None:
    assert DOC.read_text() == render(), "run: python -m casarray.config.docs > docs/config.md"


def test_every_key_is_documented() -> None:
    text = render()
    for key in ("`namespace`", "`servers[].weight`", "`timeouts.client_idle` | `1h`", "`l4_require`"):
        assert key in text
    assert "|  |" not in text  # no key without a description


def _duration_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        if inner is not None:
            keys += _duration_keys(inner, f"{prefix}{name}.")
        elif is_duration(field):
            keys.append(prefix + name)
    return keys


def test_durations_are_shown_as_written() -> None:
    """Every Duration field is found from its type (none listed by hand) and its default is written
    with a unit, as an admin writes it: `10s`, `2m`, not `10.0`."""
    keys = _duration_keys(Config)
    assert {"health.interval", "timeouts.request_header", "timeouts.keepalive", "tls.hsts"} <= set(keys)
    assert "health.jitter" not in keys  # a float that is not a duration
    text = render()
    for key in ("timeouts.request_header` | `10s`", "timeouts.keepalive` | `2m`", "timeouts.server` | `65m`"):
        assert key in text
    for line in text.splitlines():
        if any(line.startswith(f"| `{key}` |") for key in keys):
            default = line.split(" | ")[1]
            assert default == "—" or default.rstrip("`")[-1] in "smhd", line
