"""PowerShell values in Python: the objects a script handles and how PowerShell converts and compares them.

    $null, $true, 42, 'text'          None, bool, int (float), str
    @(1, 2), 1, 2                     list (object[])
    List[object] (New-Object)         PsList, a list with Add/ToArray
    @{...}, [ordered]@{...}           Hashtable: keys compared case-insensitively, insertion order kept
    an Exchange cmdlet's object       PsObject: named properties, its own ToString (the Identity)
    [Uri]'https://…'                  Uri (System.Uri: Host, Scheme, Port, AbsoluteUri, …)
    Get-Date                          Date (System.DateTime)
    { … }                             ScriptBlock
    [ref]$x                           Ref

The rules follow PowerShell's language specification (about_Comparison_Operators, about_Operators,
about_Type_Conversion): comparisons of strings ignore case unless the operator starts with -c, the
right operand is converted to the left one's type, a list on the left filters, and $null, 0, '' and an
empty list are false. What is not written here is refused (Unsupported), never guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from tree_sitter import Node

from casarray.lab.powershell.errors import RuntimeFault, Unsupported
from casarray.lab.powershell.syntax import text_of

_DEFAULT_PORTS = {"https": 443, "http": 80, "ftp": 21}


class Hashtable:
    """@{} and [ordered]@{}: string keys compared case-insensitively (as PowerShell creates them)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[Any, Any]] = ()) -> None:
        self._items: dict[Any, tuple[Any, Any]] = {}
        for key, value in items:
            self.set(key, value)

    @staticmethod
    def _norm(key: Any) -> Any:
        return key.lower() if isinstance(key, str) else key

    def get(self, key: Any) -> Any:
        found = self._items.get(self._norm(key))
        return None if found is None else found[1]

    def set(self, key: Any, value: Any) -> None:
        norm = self._norm(key)
        existing = self._items.get(norm)
        self._items[norm] = (existing[0] if existing else key, value)

    def add(self, key: Any, value: Any) -> None:
        if self.contains(key):
            raise RuntimeFault(f"Item has already been added. Key in dictionary: '{key}'")
        self.set(key, value)

    def remove(self, key: Any) -> None:
        self._items.pop(self._norm(key), None)

    def contains(self, key: Any) -> bool:
        return self._norm(key) in self._items

    def keys(self) -> list[Any]:
        return [key for key, _ in self._items.values()]

    def values(self) -> list[Any]:
        return [value for _, value in self._items.values()]

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Hashtable({self.items()!r})"


class PsList(list[Any]):
    """System.Collections.Generic.List[object]."""


@dataclass(frozen=True, slots=True)
class PsObject:
    """An object a cmdlet wrote: its .NET type name, its properties and what ToString() gives."""

    type_name: str
    properties: Hashtable
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class PsProperty:
    """One entry of $object.PSObject.Properties."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class PsObjectView:
    """$object.PSObject: the object's properties as PowerShell's adapter sees them."""

    target: Any


@dataclass(frozen=True, slots=True)
class ScriptBlock:
    node: Node

    def __str__(self) -> str:
        text = text_of(self.node)
        return text[1:-1] if text.startswith("{") and text.endswith("}") else text


@dataclass(frozen=True, slots=True)
class Ref:
    """[ref]$variable: reads and writes the variable it was made from."""

    read: Callable[[], Any]
    write: Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class Encoding:
    """New-Object System.Text.UTF8Encoding($false): UTF-8, with or without a byte-order mark."""

    bom: bool


class Uri:
    """System.Uri. An absolute URI has a scheme and a host; the host and scheme read in lower case and
    a missing port is the scheme's default (RFC 3986 §3.1, §3.2.2, §6.2.3; .NET System.Uri)."""

    __slots__ = ("_parts", "original")

    def __init__(self, text: str) -> None:
        self.original = text
        self._parts: SplitResult | None = None
        try:
            parts = urlsplit(text.strip())
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return
        if parts.scheme and parts.hostname:
            self._parts = parts

    @classmethod
    def absolute(cls, text: str) -> Uri | None:
        uri = cls(text)
        return uri if uri.is_absolute else None

    @property
    def is_absolute(self) -> bool:
        return self._parts is not None

    def _need(self, member: str) -> SplitResult:
        if self._parts is None:
            raise RuntimeFault(f"This operation is not supported for a relative URI ({member}).")
        return self._parts

    def member(self, name: str) -> Any:
        key = name.lower()
        if key == "originalstring":
            return self.original
        if key == "isabsoluteuri":
            return self.is_absolute
        parts = self._need(name)
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme.lower(), -1)
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        values: dict[str, Any] = {
            "scheme": parts.scheme.lower(),
            "host": parts.hostname or "",
            "dnssafehost": parts.hostname or "",
            "port": port,
            "isdefaultport": parts.port is None or parts.port == _DEFAULT_PORTS.get(parts.scheme.lower()),
            "absolutepath": path,
            "localpath": path,
            "pathandquery": path + query,
            "query": query,
            "fragment": f"#{parts.fragment}" if parts.fragment else "",
            "userinfo": parts.netloc.rpartition("@")[0] if "@" in parts.netloc else "",
            "authority": self._authority(parts),
            "absoluteuri": self._canonical(parts),
        }
        if key not in values:
            raise Unsupported(f"System.Uri has no property {name!r} here")
        return values[key]

    @staticmethod
    def _authority(parts: SplitResult) -> str:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        return host if parts.port is None or parts.port == default else f"{host}:{parts.port}"

    def _canonical(self, parts: SplitResult) -> str:
        user = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
        query = f"?{parts.query}" if parts.query else ""
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        return f"{parts.scheme.lower()}://{user}{self._authority(parts)}{parts.path or '/'}{query}{fragment}"

    def __str__(self) -> str:
        return self._canonical(self._parts) if self._parts is not None else self.original

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Uri) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Uri({self.original!r})"


@dataclass(frozen=True, slots=True)
class Date:
    """System.DateTime (always with its time zone here)."""

    value: datetime

    def to_universal(self) -> Date:
        return Date(self.value.astimezone(UTC))

    def format(self, pattern: str) -> str:
        """A .NET standard ('o', 's') or custom (yyyy MM dd HH mm ss f…) date and time format."""
        v = self.value
        if pattern in ("o", "O"):
            offset = "Z" if v.utcoffset() == UTC.utcoffset(None) else v.strftime("%z")
            if len(offset) == 5:
                offset = f"{offset[:3]}:{offset[3:]}"
            return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond:06d}0" + offset
        if pattern == "s":
            return v.strftime("%Y-%m-%dT%H:%M:%S")
        out: list[str] = []
        for token in re.findall(r"yyyy|yy|MM|dd|HH|mm|ss|f{1,7}|'[^']*'|\\.|[A-Za-z]|[^A-Za-z'\\]+", pattern):
            if token.startswith("'"):
                out.append(token[1:-1])
            elif token.startswith("\\"):
                out.append(token[1:])
            elif token.startswith("f"):
                out.append(f"{v.microsecond:06d}0"[: len(token)])
            elif token in _DATE_PARTS:
                out.append(_DATE_PARTS[token](v))
            elif token.isalpha():
                raise Unsupported(f"the date format {pattern!r} (specifier {token!r})")
            else:
                out.append(token)
        return "".join(out)

    def __str__(self) -> str:
        # PowerShell converts a DateTime to text in the invariant culture.
        return self.format("MM/dd/yyyy HH:mm:ss")


_DATE_PARTS: dict[str, Callable[[datetime], str]] = {
    "yyyy": lambda v: f"{v.year:04d}",
    "yy": lambda v: f"{v.year % 100:02d}",
    "MM": lambda v: f"{v.month:02d}",
    "dd": lambda v: f"{v.day:02d}",
    "HH": lambda v: f"{v.hour:02d}",
    "mm": lambda v: f"{v.minute:02d}",
    "ss": lambda v: f"{v.second:02d}",
}


# ---------------------------------------------------------------------------------------------------
# Types: [Uri], [string], … as the interpreter knows them.


@dataclass(frozen=True, slots=True)
class PsType:
    """A .NET type a script names. `element` is set for an array type such as [string[]]."""

    name: str  # canonical, e.g. System.Uri
    element: PsType | None = None

    def __str__(self) -> str:
        return self.name


_TYPE_NAMES = {
    "System.Object": ("object", "system.object", "psobject", "system.management.automation.psobject"),
    "System.String": ("string", "system.string"),
    "System.Boolean": ("bool", "boolean", "system.boolean"),
    "System.Int32": ("int", "int32", "system.int32"),
    "System.Int64": ("long", "int64", "system.int64"),
    "System.Double": ("double", "system.double"),
    "System.Uri": ("uri", "system.uri"),
    "System.UriKind": ("urikind", "system.urikind"),
    "System.DateTime": ("datetime", "system.datetime"),
    "System.Collections.Hashtable": ("hashtable", "system.collections.hashtable"),
    "System.Collections.IDictionary": ("system.collections.idictionary", "collections.idictionary"),
    "System.Collections.IEnumerable": ("system.collections.ienumerable", "collections.ienumerable"),
    "System.Collections.Specialized.OrderedDictionary": ("ordered",),
    "System.Array": ("array", "system.array"),
    "System.Management.Automation.SwitchParameter": ("switch", "switchparameter"),
    "System.Management.Automation.PSReference": ("ref",),
    "System.IO.File": ("system.io.file", "io.file"),
}
_TYPES = {alias: canonical for canonical, aliases in _TYPE_NAMES.items() for alias in aliases}


def resolve_type(name: str) -> PsType | None:
    """The type `name` spells ([string[]] included), or None when the interpreter does not know it."""
    text = name.strip()
    if text.endswith("[]"):
        element = resolve_type(text[:-2])
        return None if element is None else PsType(f"{element.name}[]", element)
    canonical = _TYPES.get(text.lower())
    return None if canonical is None else PsType(canonical)


def is_instance(value: Any, kind: PsType) -> bool:
    """`value -is [kind]`."""
    if value is None:
        return False
    if kind.element is not None:
        return isinstance(value, list) and not isinstance(value, PsList)
    checks: dict[str, Callable[[Any], bool]] = {
        "System.Object": lambda v: True,
        "System.String": lambda v: isinstance(v, str),
        "System.Boolean": lambda v: isinstance(v, bool),
        "System.Int32": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "System.Int64": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "System.Double": lambda v: isinstance(v, float),
        "System.Uri": lambda v: isinstance(v, Uri),
        "System.DateTime": lambda v: isinstance(v, Date),
        "System.Collections.Hashtable": lambda v: isinstance(v, Hashtable),
        "System.Collections.IDictionary": lambda v: isinstance(v, Hashtable),
        "System.Collections.Specialized.OrderedDictionary": lambda v: isinstance(v, Hashtable),
        # A string is IEnumerable in .NET (of its characters); so are lists and dictionaries.
        "System.Collections.IEnumerable": lambda v: isinstance(v, (str, list, Hashtable)),
        "System.Array": lambda v: isinstance(v, list) and not isinstance(v, PsList),
    }
    check = checks.get(kind.name)
    if check is None:
        raise Unsupported(f"-is [{kind.name}]")
    return check(value)


def convert(value: Any, kind: PsType) -> Any:
    """[kind]$value: PowerShell's conversion, or RuntimeFault when it cannot be made."""
    if kind.element is not None:
        return [convert(item, kind.element) for item in enumerate_value(value)]
    name = kind.name
    if name in ("System.Object", "System.Collections.IEnumerable"):
        return value
    if name == "System.String":
        return None if value is None else to_string(value)
    if name in ("System.Boolean", "System.Management.Automation.SwitchParameter"):
        return to_bool(value)
    if name in ("System.Int32", "System.Int64"):
        return to_int(value)
    if name == "System.Double":
        return float(to_number(value))
    if name == "System.Uri":
        if value is None or isinstance(value, Uri):
            return value
        if isinstance(value, str):
            return Uri(value)
        raise RuntimeFault(f'Cannot convert value "{to_string(value)}" to type "System.Uri".')
    if name in ("System.Collections.Hashtable", "System.Collections.IDictionary"):
        if isinstance(value, Hashtable) or value is None:
            return value
        raise RuntimeFault(f'Cannot convert "{to_string(value)}" to "{name}".')
    if name == "System.Array":
        return [] if value is None else list(enumerate_value(value))
    raise Unsupported(f"a conversion to [{name}]")


# ---------------------------------------------------------------------------------------------------
# Conversions.


def enumerate_value(value: Any) -> Iterator[Any]:
    """What a pipeline takes from a value: a list's items; anything else (a hashtable too) as one."""
    if isinstance(value, list):
        yield from value
    elif value is not None:
        yield value


def to_bool(value: Any) -> bool:
    """PowerShell's truth: $null, $false, 0, '' and an empty list are false; a one-item list is its item."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value != ""
    if isinstance(value, list):
        if len(value) == 0:
            return False
        return to_bool(value[0]) if len(value) == 1 else True
    return True


def to_string(value: Any) -> str:
    """[string]$value ($OFS, a space, joins a list)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return " ".join(to_string(item) for item in value)
    if isinstance(value, Hashtable):
        return "System.Collections.Hashtable"
    if isinstance(value, PsProperty):
        return f"{_type_word(value.value)} {value.name}={to_string(value.value)}"
    return str(value)


def _type_word(value: Any) -> str:
    return {bool: "bool", int: "int", str: "string"}.get(type(value), "System.Object")


def to_number(value: Any) -> int | float:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 0) if text.lower().startswith("0x") else int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise RuntimeFault(f'Cannot convert value "{to_string(value)}" to type "System.Int32".')


def to_int(value: Any) -> int:
    number = to_number(value)
    if isinstance(number, float):
        # .NET rounds half to even when it converts a double to an integer.
        return round(number)
    return number


def collapse(items: list[Any]) -> Any:
    """A pipeline's output as one value: nothing is $null, one item is that item, more are a list."""
    if not items:
        return None
    return items[0] if len(items) == 1 else list(items)


# ---------------------------------------------------------------------------------------------------
# Operators.


def equals(left: Any, right: Any, *, case_sensitive: bool = False) -> bool:
    """Scalar -eq: the right operand is converted to the left one's type."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool):
        return left == to_bool(right)
    if isinstance(left, (int, float)):
        try:
            return left == to_number(right)
        except RuntimeFault:
            return False
    if isinstance(left, str):
        other = to_string(right)
        return left == other if case_sensitive else left.casefold() == other.casefold()
    if isinstance(left, Uri):
        return str(left) == str(convert(right, PsType("System.Uri")))
    return left is right or left == right


def compare(left: Any, right: Any, *, case_sensitive: bool = False) -> int:
    """-lt/-gt ordering of two scalars (-1, 0, 1)."""
    if isinstance(left, str) or (left is None and isinstance(right, str)):
        a, b = to_string(left), to_string(right)
        if not case_sensitive:
            a, b = a.casefold(), b.casefold()
    elif left is None or isinstance(left, (int, float, bool)):
        a, b = to_number(left), to_number(right)  # type: ignore[assignment]
    else:
        raise RuntimeFault(f'Cannot compare "{to_string(left)}": it is not a number or a string.')
    return (a > b) - (a < b)


def wildcard(pattern: str) -> re.Pattern[str]:
    """A -like pattern (* ? [a-z]) as a regular expression, case-insensitive (about_Wildcards)."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end
        elif char == "`" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def dotnet_regex(pattern: str, *, case_sensitive: bool = False) -> re.Pattern[str]:
    """A .NET regular expression; PowerShell's -match and -replace ignore case unless -c…"""
    try:
        return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise RuntimeFault(f"The regular expression pattern {pattern} is not valid: {exc}") from None


def dotnet_replacement(replacement: str) -> Callable[[re.Match[str]], str]:
    """A .NET substitution ($1, ${name}, $&, $$) as a function of the match."""
    parts = re.split(r"(\$\$|\$&|\$\d+|\$\{[^}]+\})", replacement)

    def expand(match: re.Match[str]) -> str:
        out = []
        for part in parts:
            if part == "$$":
                out.append("$")
            elif part == "$&":
                out.append(match.group(0))
            elif part.startswith("${"):
                out.append(match.group(part[2:-1]) or "")
            elif part.startswith("$") and part[1:].isdigit():
                index = int(part[1:])
                out.append((match.group(index) or "") if index <= (match.re.groups or 0) else part)
            else:
                out.append(part)
        return "".join(out)

    return expand


def add(left: Any, right: Any) -> Any:
    """`left + right`: numbers add, text concatenates, lists append, hashtables merge."""
    if left is None:
        return right
    if isinstance(left, str):
        return left + to_string(right)
    if isinstance(left, list):
        return [*left, *(right if isinstance(right, list) else [right])]
    if isinstance(left, Hashtable):
        if not isinstance(right, Hashtable):
            raise RuntimeFault("A hash table can only be added to another hash table.")
        merged = Hashtable(left.items())
        for key, value in right.items():
            merged.add(key, value)
        return merged
    if isinstance(left, (int, float, bool)):
        return _number(to_number(left) + to_number(right))
    raise RuntimeFault(
        f"Method invocation failed: [{type(left).__name__}] does not contain a method named 'op_Addition'."
    )


def arithmetic(operator: str, left: Any, right: Any) -> Any:
    if operator == "*" and isinstance(left, str):
        return left * to_int(right)
    if operator == "*" and isinstance(left, list):
        return left * to_int(right)
    a, b = to_number(left), to_number(right)
    if operator == "-":
        return _number(a - b)
    if operator == "*":
        return _number(a * b)
    if b == 0:
        raise RuntimeFault("Attempted to divide by zero.")
    if operator == "/":
        return _number(a / b)
    if operator == "%":
        return _number(math.fmod(a, b))
    raise Unsupported(f"the operator {operator}")


def _number(value: int | float) -> int | float:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**31:
        return int(value)
    return value


# .NET composite formatting: {index[,alignment][:formatString]}, {{ and }} for braces.
_FORMAT_ITEM = re.compile(r"\{\{|\}\}|\{(\d+)(?:,(-?\d+))?(?::([^}]*))?\}")


def format_operator(pattern: str, arguments: list[Any]) -> str:
    """`pattern -f arguments` (String.Format)."""

    def item(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        index = int(match.group(1))
        if index >= len(arguments):
            raise RuntimeFault(
                f"Error formatting a string: Index (zero based) must be greater than or equal to zero and "
                f"less than the size of the argument list: {pattern!r}."
            )
        text = _format_one(arguments[index], match.group(3))
        width = int(match.group(2)) if match.group(2) else 0
        return text.rjust(width) if width >= 0 else text.ljust(-width)

    leftover = _FORMAT_ITEM.sub("", pattern)
    if "{" in leftover or "}" in leftover:
        raise RuntimeFault(
            f"Error formatting a string: Input string was not in a correct format: {pattern!r}."
        )
    return _FORMAT_ITEM.sub(item, pattern)


def _format_one(value: Any, spec: str | None) -> str:
    if not spec:
        return to_string(value)
    if isinstance(value, Date):
        return value.format(spec)
    if isinstance(value, int) and not isinstance(value, bool):
        match = re.fullmatch(r"[Dd](\d*)", spec)
        if match:
            return str(value).zfill(int(match.group(1) or 0))
    raise Unsupported(f"the format {spec!r} for {to_string(value)!r}")
