"""Load a YAML config file into `Config`, with errors that name file, line, key, found and expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from casarray.config.model import Config, semantic_errors
from casarray.errors import ConfigError

Loc = tuple[str | int, ...]


class ConfigErrors(ConfigError):
    """Every problem found in one config file; str() gives one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigErrors listing every problem with its line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigErrors([f"{file}: cannot read the config file: {exc.strerror or exc}"]) from None
    return parse_config(text, str(file))


def parse_config(text: str, filename: str = "<config>") -> Config:
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigErrors([f"{filename}{line}: invalid YAML: {exc.problem or exc.context}"]) from None
    if not isinstance(data, dict):
        raise ConfigErrors(
            [
                f"{filename}:1: expected a mapping of settings (namespace:, servers:, …), "
                f"found {type(data).__name__}"
            ]
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigErrors([_describe(filename, data, err) for err in exc.errors()]) from None
    problems = [
        f"{filename}:{_line(data, loc)}: {_dotted(loc)}: {msg}" for loc, msg in semantic_errors(config)
    ]
    if problems:
        raise ConfigErrors(problems)
    return config


def _describe(filename: str, data: Any, err: Any) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(loc[:-1]))
        msg = f"unknown key {loc[-1]!r}; expected one of: {allowed}"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        text = str(err["msg"]).removeprefix("Value error, ")
        msg = f"{text}; found {_short(err.get('input'))}"
    return f"{filename}:{_line(data, loc)}: {_dotted(loc)}: {msg}"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value if not isinstance(value, CommentedMap | CommentedSeq) else type(value).__name__)
    return text if len(text) <= 60 else text[:57] + "..."


def _line(data: Any, loc: Loc) -> int:
    """1-based line of the deepest part of `loc` present in the YAML document."""
    line = 1
    node = data
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            if isinstance(node, CommentedMap | CommentedSeq) and node.lc.line is not None and part == loc[0]:
                line = node.lc.line + 1
            break
    return line


def _fields_at(loc: Loc) -> list[str]:
    """Names of the keys allowed at `loc`, found by walking the model types."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
