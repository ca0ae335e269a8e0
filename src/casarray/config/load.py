"""Load a YAML config file into `Config`, with errors that name file, line, key, found and expected."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode
from ruamel.yaml.reader import ReaderError

from casarray.config.model import Config, semantic_errors
from casarray.config.secretfile import SecretFileError, read_secrets
from casarray.errors import ConfigError
from casarray.textfile import NotText, decode_text
from casarray.textfile import line_column as _line_column

Loc = tuple[str | int, ...]

# Real configs are a few KiB; the cap keeps a runaway file (a log written to the wrong path, a
# generator gone wrong) from costing seconds of parsing — it is refused before a byte is parsed.
MAX_CONFIG_BYTES = 1 << 20
# The deepest a valid config goes is 5 (mail.imap.ports[0]); ruamel composes recursively, so a deep
# document would otherwise end in RecursionError after seconds of work.
MAX_DEPTH = 64
# ruamel's pure-Python parser takes ~7 µs a byte: a MiB of tiny values costs seconds, and merge keys
# (`<<: *a`) copy what they merge, so a chain of them is quadratic (20 000 links: minutes). A config of
# 1 000 servers has ~6 000 values and a handful of aliases; these caps bound the work to about a second.
MAX_NODES = 50_000
MAX_ALIASES = 1_000
# No setting needs a number beyond 2^63; Python refuses to convert decimal strings of over 4 300 digits
# (CVE-2020-10735), so a huge literal is refused by its length before any conversion is tried.
MAX_INT = 2**63
_MAX_INT_CHARS = 80  # 0b + 63 binary digits + underscores; anything longer is out of range anyway
# An admin reads the first problems and fixes them; thousands of lines help nobody.
MAX_PROBLEMS = 50
# The last-resort message: a failure of the loader itself, still one line and never a traceback.
# The fuzz tests fail if they ever see it.
UNEXPECTED = "could not be read (an unforeseen failure in the loader)"
_EXPECTED_TOP = "expected a mapping of settings (namespace:, servers:, …)"

# YAML 1.2 §5.1: the printable characters (tab, line breaks, and no other C0/C1 control, no DEL, no
# surrogate). Checked before parsing so a NUL or a stray control byte is named with its line and column.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# YAML 1.2 §5.2: a stream is UTF-8, UTF-16 or UTF-32, told by its byte-order mark. UTF-32 first: its
# little-endian mark begins with UTF-16's.


class ConfigErrors(ConfigError):
    """Every problem found in one config file; str() gives one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self) -> tuple[type[ConfigErrors], tuple[list[str]]]:
        # Rebuilt from the list, not from the joined text, when it crosses a process boundary.
        return (ConfigErrors, (self.problems,))


def read_config(path: str | Path) -> bytes:
    """The bytes of a config file, at most MAX_CONFIG_BYTES of them. Raises ConfigErrors."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigErrors([f"{file}: {_too_big(f'the file is {size} bytes')}"])
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded: a pipe or device has no size to check
    except OSError as exc:
        raise ConfigErrors([f"{file}: cannot read the config file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigErrors([f"{file}: {_too_big(f'the file is more than {MAX_CONFIG_BYTES} bytes')}"])
    return raw


def load_config(path: str | Path, *, check_files: bool = False) -> Config:
    """Read and validate a config file. Raises ConfigErrors listing every problem with its line.

    check_files: also report, with their lines, the files the config names (certificates, keys, the
    CA, the admin token) that do not exist — what `casarray check` wants; a client such as `ctl`,
    which only reads the admin section, does not."""
    return parse_config(read_config(path), str(path), check_files=check_files)


def parse_config(document: str | bytes, filename: str = "<config>", *, check_files: bool = False) -> Config:
    """Validate a config given as text or as the file's bytes. Raises ConfigErrors, and nothing else:
    whatever the input, an admin gets lines of `file:line: key: found …; expected …`, every problem
    of the file at once (a misspelt key does not hide a missing certificate)."""
    try:
        return _parse(_text(document, filename), filename, check_files)
    except ConfigErrors:
        raise
    except Exception as exc:  # the one boundary: a bug here still gives one line, not a traceback
        raise _last_resort(filename, exc) from None


def read_section(path: str | Path, name: str) -> Any:
    """One top-level section of a config file that may be invalid as a whole (mid-edit), as plain YAML
    data, or None. Read through the same guards as load_config; raises ConfigErrors when the file
    cannot be read as YAML at all."""
    filename = str(path)
    try:
        data = _load_yaml(_text(read_config(path), filename), filename)
    except ConfigErrors:
        raise
    except Exception as exc:
        raise _last_resort(filename, exc) from None
    return data.get(name) if isinstance(data, dict) else None


def _last_resort(filename: str, exc: Exception) -> ConfigErrors:
    return ConfigErrors([f"{filename}: the config {UNEXPECTED}: {type(exc).__name__}: {_clip(exc)}"])


def _too_big(found: str) -> str:
    return f"{found}; expected a config file of at most 1 MiB ({MAX_CONFIG_BYTES} bytes; a real one is a few KiB)"


def _clip(value: object, limit: int = 200) -> str:
    """Text from the file or a library, made one printable line of bounded length: a key or value may
    hold line breaks (\\n, U+2028, U+0085) that would split one problem over several lines."""
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(document: str | bytes, filename: str) -> str:
    """The document as text: size capped, decoded as its byte-order mark says, printable only."""
    if len(document) > MAX_CONFIG_BYTES:
        unit = "bytes" if isinstance(document, bytes) else "characters"
        raise ConfigErrors([f"{filename}: {_too_big(f'the file is {len(document)} {unit}')}"])
    if isinstance(document, str):
        text, utf16_hint = document.removeprefix("\ufeff"), False
    else:
        text = _decode(document, filename)
        # NULs in a quarter of the bytes or more: UTF-16 (or 32) saved without a byte-order mark, which
        # YAML 1.2 §5.2 could only guess from the first character; the admin needs to know what to do.
        utf16_hint = document.count(0) * 4 >= len(document) > 0
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, column = _line_column(text, bad.start())
        char = bad.group()
        found = "a NUL byte (U+0000)" if char == "\0" else f"the control character U+{ord(char):04X}"
        expected = "printable text (YAML 1.2 §5.1)"
        if char == "\0" and utf16_hint:
            expected += "; the file looks like UTF-16 without a byte-order mark: save it as UTF-8"
        raise ConfigErrors([f"{filename}:{line}: found {found} at column {column}; expected {expected}"])
    return text


def _decode(raw: bytes, filename: str) -> str:
    try:
        return decode_text(raw)
    except NotText as exc:
        hint = "the byte-order mark says so; save it as UTF-8" if exc.by_bom else "save the file as UTF-8"
        raise ConfigErrors(
            [
                f"{filename}:{exc.line}: not valid {exc.encoding}: found {exc.found} at column {exc.column}; "
                f"expected {exc.encoding} text ({hint})"
            ]
        ) from None


class _ValueProblem(ConstructorError):
    """Valid YAML holding a value no setting can take (a 5 000-digit integer, a tag): said as such."""


class _Composer(Composer):
    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        # An anchor defined twice is valid YAML (the later one counts); ruamel's warning would reach
        # stderr as library text, not as a config problem.
        self.warn_double_anchors = False
        self.nodes = 0
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _ValueProblem(
                problem=f"found more than {MAX_NODES} values; expected a config (a few thousand at most)",
                problem_mark=self.parser.peek_event().start_mark,
            )
        if self.parser.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _ValueProblem(
                    problem=f"found more than {MAX_ALIASES} aliases (*name); expected a config "
                    "(a few at most)",
                    problem_mark=self.parser.peek_event().start_mark,
                )
        return super().compose_node(parent, index)


class _Constructor(RoundTripConstructor):
    """Round-trip (line numbers kept), with every scalar that fails to convert reported at its line."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        pending = len(self.state_generators)
        try:
            data = super().construct_non_recursive_object(node, tag)
        except _CONVERSION as exc:
            raise _ValueProblem(problem=_unreadable(node, exc), problem_mark=node.start_mark) from None
        # A mapping or list is filled later, by a generator the document loop resumes: its failures
        # (an !!omap keyed by a list: unhashable) are named at its line too.
        for i in range(pending, len(self.state_generators)):
            self.state_generators[i] = _marked(self.state_generators[i], node)
        return data

    def construct_yaml_int(self, node: Any) -> Any:
        _scalar_only(node)
        digits = sum(c.isalnum() for c in str(node.value)) - (2 if "0x" in node.value.lower() else 0)
        if len(node.value) > _MAX_INT_CHARS:
            raise _ValueProblem(problem=_int_problem(digits), problem_mark=node.start_mark)
        value = super().construct_yaml_int(node)
        if not -MAX_INT < value < MAX_INT:
            raise _ValueProblem(problem=_int_problem(digits), problem_mark=node.start_mark)
        return value

    def construct_yaml_float(self, node: Any) -> Any:
        _scalar_only(node)
        text = str(node.value).replace("_", "").lower()
        mantissa = text.partition("e")[0]
        if "e" in text and "." not in mantissa and ":" not in text:
            # YAML 1.1 wants a dot in the mantissa and ruamel warns without one; the value is clear.
            return float(text)
        return super().construct_yaml_float(node)

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        _scalar_only(node)
        # No setting is a date: `interval: 2024-01-01` or `namespace: 2001-01-01` are text the model
        # then judges, never a datetime (or a ValueError for 2001-13-45) from the YAML layer.
        return str(node.value)

    def construct_tagged(self, node: Any) -> Any:
        # Casarray reads plain YAML: a tag it does not know (!!python/object…, !vault) is refused at
        # its line, never turned into an object or a tagged value the model cannot name.
        raise _ValueProblem(
            problem=f"found the tag {_shown_tag(node.tag)}; expected a plain value (a casarray config uses no YAML tags)",
            problem_mark=node.start_mark,
        )


for _tag in ("int", "float", "timestamp"):
    _Constructor.add_default_constructor(_tag)
# YAML 1.1 types no setting takes (!!binary is bytes, !!set/!!omap/!!pairs have their own key rules):
# refused like any other tag rather than built into values the model can only call "invalid".
for _tag in ("binary", "set", "omap", "pairs"):
    _Constructor.add_default_constructor(_tag, method="construct_tagged")
_Constructor.add_constructor(None, _Constructor.construct_tagged)

# What converting a scalar may raise (int("12z"), "" for !!int, float overflow, unhashable keys).
_CONVERSION = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError)


def _marked(generator: Iterator[Any], node: Any) -> Iterator[Any]:
    try:
        yield from generator
    except _CONVERSION as exc:
        raise _ValueProblem(problem=_unreadable(node, exc), problem_mark=node.start_mark) from None


def _scalar_only(node: Any) -> None:
    """`services: !!int [owa]`: a scalar's tag on a list or mapping."""
    if not isinstance(node, ScalarNode):
        shape = "mapping" if isinstance(node, MappingNode) else "list"
        raise _ValueProblem(
            problem=f"found a {shape} tagged {_shown_tag(node.tag)}; expected a plain value",
            problem_mark=node.start_mark,
        )


def _shown_tag(tag: Any) -> str:
    text = str(tag)
    return "!!" + text.removeprefix("tag:yaml.org,2002:") if text.startswith("tag:yaml.org,2002:") else text


def _unreadable(node: Any, exc: BaseException) -> str:
    if isinstance(node, ScalarNode):
        return f"found {_short(node.value)}, which is not {_kind(node.tag)} ({_clip(exc, 80)})"
    shape = "mapping" if isinstance(node, MappingNode) else "list"
    return f"found a {shape} that cannot be read ({_clip(exc, 80)}); expected plain keys and values"


def _kind(tag: Any) -> str:
    name = str(tag).removeprefix("tag:yaml.org,2002:")
    return {"int": "an integer", "float": "a number", "bool": "true or false", "binary": "base64 data"}.get(
        name, f"a valid !!{name}"
    )


def _int_problem(digits: int) -> str:
    return f"found an integer of {digits} digits; expected a number below 2^63 (at most 19 digits)"


def _load_yaml(text: str, filename: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Composer = _Composer
    yaml.Constructor = _Constructor
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.load(text)
    except MaxDepthExceededError as exc:
        where = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigErrors(
            [
                f"{filename}{where}: found lists or mappings nested more than {MAX_DEPTH} levels deep; "
                f"expected a config (at most 5 levels)"
            ]
        ) from None
    except _ValueProblem as exc:
        raise ConfigErrors([f"{filename}:{exc.problem_mark.line + 1}: {exc.problem}"]) from None
    except DuplicateKeyError as exc:
        # ruamel's text quotes both values as Python shows them ("None", "[{'name': …}]"): the key is
        # what the admin needs.
        key = re.match(r'found duplicate key "(.*?)" with value', str(exc.problem))
        shown = _clip(repr(key.group(1)), 80) if key else "a key"
        where = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigErrors(
            [
                f"{filename}{where}: invalid YAML: duplicate key {shown} in one mapping; "
                "expected each key once (delete or merge one of them)"
            ]
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        detail = exc.problem or exc.context
        if exc.context and exc.problem and str(exc.context).startswith("expected"):
            detail = f"{exc.context}, {exc.problem}"  # e.g. a single document, but found another
        raise ConfigErrors([f"{filename}{where}: invalid YAML: {_clip(detail)}"]) from None
    except ReaderError as exc:  # not expected after _text's check; kept exact if it ever happens
        row, column = _line_column(text, exc.position)
        raise ConfigErrors(
            [f"{filename}:{row}: invalid YAML: {_clip(exc.reason)} at column {column}"]
        ) from None
    except YAMLError as exc:
        raise ConfigErrors([f"{filename}: invalid YAML: {_clip(exc)}"]) from None


def _parse(text: str, filename: str, check_files: bool) -> Config:
    data = _load_yaml(text, filename)
    if data is None:
        raise ConfigErrors([f"{filename}: the file is empty; {_EXPECTED_TOP}"])
    if not isinstance(data, dict):
        line = data.lc.line + 1 if isinstance(data, CommentedSeq) and data.lc.line is not None else 1
        found = "a list" if isinstance(data, list) else _short(data)
        raise ConfigErrors([f"{filename}:{line}: found {found}; {_EXPECTED_TOP}"])
    # Every phase runs whatever the one before found, so one run lists every problem of the file:
    # values, then the rules across settings (judged on what is valid), then the files named.
    # Each problem is (line, how to say it): only the first MAX_PROBLEMS, in file order, are worded.
    problems: list[tuple[int, Callable[[], str]]] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data)
        invalid: frozenset[str] = frozenset()
    except ValidationError as exc:
        errors = exc.errors()
        problems += [_describe(filename, data, err) for err in errors]
        invalid = frozenset(str(err["loc"][0]) for err in errors if err["loc"])
        partial = _valid_part(data, invalid)
    else:
        partial = config
    if partial is not None:
        for loc, msg in semantic_errors(partial, invalid):
            line = _line(data, loc)
            problems.append((line, functools.partial(str, f"{filename}:{line}: {_dotted(loc)}: {msg}")))
    if check_files:
        problems += _missing_files(filename, data)
    if problems:
        problems.sort(key=lambda problem: problem[0])  # stable: in file order, as the admin reads it
        lines = [say() for _, say in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"{filename}: … and {_count(len(problems) - MAX_PROBLEMS, 'more problem')}")
        raise ConfigErrors(lines)
    assert config is not None  # no problem means the whole file validated
    return config


# Placeholders for required settings that were invalid, so the rest of the file can still be judged;
# semantic_errors skips every rule that reads an invalid setting, so no placeholder is ever reported.
_PLACEHOLDERS: dict[str, Any] = {
    "namespace": "placeholder.invalid",
    "servers": [{"name": "placeholder", "address": "placeholder.invalid"}],
}


def _valid_part(data: Any, invalid: frozenset[str]) -> Config | None:
    """The config with each invalid top-level setting replaced by its default (or a placeholder)."""
    kept = {key: value for key, value in data.items() if isinstance(key, str) and key not in invalid}
    for key, value in _PLACEHOLDERS.items():
        kept.setdefault(key, value)
    try:
        return Config.model_validate(kept)
    except ValidationError:
        return None


# Files the balancer opens at start (tls, upstream_tls.ca, the admin and peers tokens, the affinity
# secrets): `check` says which are missing, at their lines, with the other problems. Paths are taken
# from the YAML as written, so a file is checked even when a sibling setting is invalid.
_FILE_SETTINGS: tuple[Loc, ...] = (
    ("tls", "certificate"),
    ("tls", "key"),
    ("upstream_tls", "ca"),
    ("admin", "token_file"),
    ("affinity", "secret_file"),
    ("peers", "token_file"),
)


def _secret_problem(path: str) -> str | None:
    try:
        read_secrets(path)
    except SecretFileError as exc:
        return str(exc)
    return None


# Files whose content `check` reads too, once they exist: what is wrong with it, or None.
_CONTENT_CHECKS: dict[Loc, Callable[[str], str | None]] = {("affinity", "secret_file"): _secret_problem}


def _missing_files(filename: str, data: Any) -> list[tuple[int, Callable[[], str]]]:
    locations = list(_FILE_SETTINGS)
    tls = data.get("tls")
    extra = tls.get("extra") if isinstance(tls, dict) else None
    if isinstance(extra, list):
        for i in range(len(extra)):
            locations += [("tls", "extra", i, "certificate"), ("tls", "extra", i, "key")]
    problems: list[tuple[int, Callable[[], str]]] = []
    for loc in locations:
        value = _value_at(data, loc)
        if not isinstance(value, str) or not value:
            continue  # absent, or not a path: the value's own problem says so
        why = _unusable(Path(value))
        if why is not None:
            line = _line(data, loc)
            text = f"{filename}:{line}: {_dotted(loc)}: found {_clip(repr(value))}, {why}"
            problems.append((line, functools.partial(str, text)))
        elif loc in _CONTENT_CHECKS and (wrong := _CONTENT_CHECKS[loc](value)) is not None:
            line = _line(data, loc)
            problems.append((line, functools.partial(str, f"{filename}:{line}: {_dotted(loc)}: {wrong}")))
    return problems


def _unusable(path: Path) -> str | None:
    try:
        if path.is_file():
            return None
        if path.is_dir():
            return "which is a directory; expected a file"
        if path.exists():
            return "which is not a regular file; expected a file"
    except OSError as exc:
        return f"which cannot be checked ({exc.strerror or exc}); expected a readable file"
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return f"which does not exist{where}; expected an existing file"


def _value_at(data: Any, loc: Loc) -> Any:
    node = data
    for part in loc:
        if isinstance(part, int):
            if not isinstance(node, list) or not 0 <= part < len(node):
                return None
        elif not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _describe(filename: str, data: Any, err: Any) -> tuple[int, Callable[[], str]]:
    loc: Loc = tuple(err["loc"])
    if err["type"] == "invalid_key":  # `? [a, b]`, `~:` or `1:` where a setting's name belongs
        parent, key, line = _key_at(data, loc)
        allowed = ", ".join(_fields_at(parent)) or "a name"
        text = f"{filename}:{line}: {_dotted(parent)}: found {key} as a key; expected a key name: {allowed}"
        return line, functools.partial(str, text)
    line = _line(data, loc)
    return line, lambda: f"{filename}:{line}: {_dotted(loc)}: {_explain(err, loc)}"


# pydantic's error types, said as `found …; expected …` in an admin's words (its own messages name
# Python types: "a valid dictionary or instance of Listen", "a valid string").
_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list ([a, b] or one `- item` a line)",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping of settings (key: value lines)",
    "model_attributes_type": "a mapping of settings (key: value lines)",
}
_BOUNDS = {
    "less_than_equal": ("le", "at most"),
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than": ("lt", "less than"),
}


def _explain(err: Any, loc: Loc) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    found = _short(value)
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        return f"unknown key {_short(loc[-1])}{_did_you_mean(loc[-1], allowed)}; expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"found {found}; expected {ctx.get('expected')}{_did_you_mean(value, choices)}"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        expected = f"{words} {ctx.get(name)}"
    elif kind == "too_short":
        expected = f"at least {_count(int(ctx.get('min_length', 1)), 'entry').replace('entrys', 'entries')}"
    elif kind == "too_long":
        expected = f"at most {_count(int(ctx.get('max_length', 0)), 'entry').replace('entrys', 'entries')}"
    elif kind == "string_too_short":
        found = "empty text" if value == "" else found
        expected = f"at least {_count(int(ctx.get('min_length', 1)), 'character')}"
    elif kind == "string_too_long":
        expected = f"at most {_count(int(ctx.get('max_length', 0)), 'character')}"
    else:
        # Our validators say "expected …" (units, names, addresses); anything else keeps pydantic's text.
        text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
        text = re.sub(r", got .*$", "", text)
        if text.startswith("expected "):
            return f"found {found}; {text}"
        return f"{text}; found {found}"
    if loc and loc[-1] == "[key]":
        return f"found the key {found}; expected {expected} as the key"
    return f"found {found}; expected {expected}"


def _did_you_mean(value: object, choices: list[str]) -> str:
    """` (did you mean 'balance'?)` for a near miss: a typo, or a case the choices do not take."""
    if not isinstance(value, str) or not choices:
        return ""
    folded = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(value.lower(), list(folded), n=1, cutoff=0.75)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


def _key_at(data: Any, loc: Loc) -> tuple[Loc, str, int]:
    """The mapping holding a key that is not a name, that key as written, and its line. pydantic
    gives the key as text (str(key)) at the end of `loc`."""
    parent = loc[:-1]
    node = data
    for part in parent:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return parent, str(loc[-1]), _line(data, parent)
    if isinstance(node, CommentedMap):
        for key in node:
            if key == loc[-1] or str(key) == str(loc[-1]):
                shown = "null (~)" if key is None else _short(tuple(key) if isinstance(key, tuple) else key)
                return parent, shown, _key_line(node, key)
    return parent, str(loc[-1]), _line(data, parent)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark for a mapping's key: the key itself is the part before
            continue
        name = _clip(part, 60)
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out or "(top level)"


def _short(value: Any) -> str:
    """A value as the admin wrote it in YAML, never as Python names it (None, True, CommentedSeq)."""
    if isinstance(value, dict):
        return "an empty mapping" if not value else "a mapping"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else "a list"
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        return "a value of another kind"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _line(data: Any, loc: Loc) -> int:
    """1-based line of the deepest part of `loc` present in the YAML document."""
    line = 1
    node = data
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = _key_line(node, part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            if isinstance(node, CommentedMap | CommentedSeq) and node.lc.line is not None and part == loc[0]:
                line = node.lc.line + 1
            break
    return line


def _key_line(node: CommentedMap, key: Any) -> int:
    """The line of a key; a key brought in by a merge (`<<: *base`) has none: the mapping's line."""
    position = node.lc.key(key)
    if position is not None:
        return int(position[0]) + 1
    return int(node.lc.line or 0) + 1


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
