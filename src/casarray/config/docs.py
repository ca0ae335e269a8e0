"""Render docs/config.md from the models' field descriptions, so the reference never drifts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from casarray.config.load import _model_in
from casarray.config.model import Config
from casarray.config.units import format_duration

HEADER = """# Configuration reference

Generated from the config models (`python -m casarray.config.docs > docs/config.md`); a test keeps it
in step. Durations are written `250ms`, `5s`, `1h` (or a number of seconds); unknown keys are errors,
reported with file, line, key, what was found and what is expected (`casarray check -c FILE`).

The file is plain YAML of at most 1 MiB, in UTF-8 (UTF-16 or UTF-32 when it starts with a byte-order
mark): no tags (`!!python/…`, `!vault`), no control characters, no duplicate keys, nesting no deeper than
64 levels, at most 50 000 values and 1 000 aliases (`*name`), numbers below 2^63, durations finite. A
date-like value (`2024-01-01`) is read as text. At most 50 problems are listed, then how many more there
are.

| key | default | description |
|---|---|---|
"""

_DURATION_FIELDS = {
    "interval",
    "timeout",
    "connect",
    "upstream_handshake",
    "client_idle",
    "server_idle",
    "queue",
    "grace",
    "hard_stop_after",
}


def _default(name: str, field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if value is None:
        return "—"
    if isinstance(value, float) and name in _DURATION_FIELDS:
        return f"`{format_duration(value)}`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _model_in(field.annotation)
        is_list = "list[" in str(field.annotation)
        rows.append(f"| `{key}` | {_default(name, field)} | {field.description or ''} |")
        if inner is not None:
            rows += _rows(inner, f"{key}[]." if is_list else f"{key}.")
    return rows


def render() -> str:
    return HEADER + "\n".join(_rows(Config, "")) + "\n"


if __name__ == "__main__":
    print(render(), end="")
