"""Render docs/config.md from the models' field descriptions, so the reference never drifts."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from casarray.config.load import _model_in
from casarray.config.model import Config
from casarray.config.units import format_duration, parse_duration

HEADER = """# Configuration reference

Generated from the config models (`python -m casarray.config.docs > docs/config.md`); a test keeps it
in step. Durations are written `250ms`, `5s`, `1h` (or a number of seconds); unknown keys are errors,
reported with file, line, key, what was found and what is expected — every problem of the file in one
run, missing certificate, key, CA and token files and an unusable affinity secret file included
(`casarray check -c FILE`). Choices (`mode`, `balance`, `affinity.mode`, service names, `log.level`) are
read in any case: `mode: L7` is `l7`.

The file is plain YAML of at most 1 MiB, in UTF-8 (UTF-16 or UTF-32 when it starts with a byte-order
mark): no tags (`!!python/…`, `!vault`), no control characters, no duplicate keys, nesting no deeper than
64 levels, at most 50 000 values and 1 000 aliases (`*name`), numbers below 2^63, durations finite. A
date-like value (`2024-01-01`) is read as text. At most 50 problems are listed, then how many more there
are.

| key | default | description |
|---|---|---|
"""


def is_duration(field: FieldInfo) -> bool:
    """A field typed `Duration` (model.py): its number is seconds, shown as written (`10s`, `1h`).
    Told from the type, so a new duration field needs no list kept here."""
    return _parses_durations(field.metadata) or _parses_durations(field.annotation)


def _parses_durations(item: Any) -> bool:
    if isinstance(item, BeforeValidator):
        return item.func is parse_duration
    if isinstance(item, list | tuple):
        return any(_parses_durations(part) for part in item)
    return any(_parses_durations(part) for part in get_args(item)) or any(
        _parses_durations(part) for part in getattr(item, "__metadata__", ())
    )


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if value is None:
        return "—"
    if isinstance(value, int | float) and not isinstance(value, bool) and is_duration(field):
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
        rows.append(f"| `{key}` | {_default(field)} | {field.description or ''} |")
        if inner is not None:
            rows += _rows(inner, f"{key}[]." if is_list else f"{key}.")
    return rows


def render() -> str:
    return HEADER + "\n".join(_rows(Config, "")) + "\n"


if __name__ == "__main__":
    print(render(), end="")
