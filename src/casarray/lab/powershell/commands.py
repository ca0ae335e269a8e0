"""Commands: how a cmdlet declares its parameters, and the PowerShell cmdlets the scripts use.

A cmdlet here is a `Command`: its parameters (named, positional, switch, from the pipeline) and a
function of the bound call. Binding follows about_Parameters: a name may be shortened to any unique
prefix, `-Name:value` gives a switch its value, the remaining arguments go to the positional
parameters in order, and an unknown name is an error, as PowerShell's ParameterBindingException is.
The common parameters (-ErrorAction, and -WhatIf/-Confirm where a cmdlet supports them) are
bound here too.

The cmdlets themselves are the ones the collector, apply and rollback scripts call, and a few of their
plain relatives; Exchange's cmdlets are in casarray.lab.powershell.exchange.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from casarray.lab.powershell.errors import CmdletError, RuntimeFault, Unsupported
from casarray.lab.powershell.host import Host, Stream, resolve
from casarray.lab.powershell.values import (
    Date,
    Encoding,
    Hashtable,
    PsList,
    PsObject,
    PsProperty,
    ScriptBlock,
    Uri,
    to_bool,
    to_int,
    to_string,
)

ERROR_ACTIONS = ("Stop", "Continue", "SilentlyContinue", "Ignore", "Inquire")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    switch: bool = False
    position: int | None = None
    from_pipeline: bool = False  # takes each pipeline object (ValueFromPipeline)
    remaining: bool = False  # takes every positional argument left (ValueFromRemainingArguments)
    aliases: tuple[str, ...] = ()


class Session(Protocol):
    """What a cmdlet may ask of the running interpreter."""

    host: Host

    def command_exists(self, name: str) -> bool: ...

    def run_block(self, block: ScriptBlock, item: Any) -> list[Any]:
        """Run `block` in the caller's scope with $_ = item; its output."""


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation: the bound parameters (by their declared names), the pipeline input, the session."""

    name: str
    args: Mapping[str, Any]
    input: Sequence[Any] | None
    session: Session

    def has(self, name: str) -> bool:
        return name in self.args

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)


Run = Callable[[Call], list[Any]]


@dataclass(frozen=True, slots=True)
class Command:
    """A cmdlet: name, parameters and what it does."""

    name: str
    params: tuple[Param, ...]
    run: Run
    should_process: bool = False  # takes -WhatIf and -Confirm (SupportsShouldProcess)
    # Exchange cmdlets reach the shell through implicit remoting, which ignores $ErrorActionPreference:
    # only their own -ErrorAction makes their errors stop a script (the generated scripts say so).
    remote: bool = False
    params_by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {}
        for param in self.params:
            for alias in (param.name, *param.aliases):
                names[alias.lower()] = param
        object.__setattr__(self, "params_by_name", names)

    @property
    def common(self) -> tuple[Param, ...]:
        common = [Param("ErrorAction", aliases=("ea",))]
        if self.should_process:
            common += [
                Param("WhatIf", switch=True, aliases=("wi",)),
                Param("Confirm", switch=True, aliases=("cf",)),
            ]
        return tuple(common)

    def find(self, name: str) -> Param:
        """The parameter `-name` means: an exact name or alias, else the one it is a unique prefix of."""
        key = name.lower()
        every = {**{p.name.lower(): p for p in self.common}, **self.params_by_name}
        if key in every:
            return every[key]
        found = {p.name: p for alias, p in every.items() if alias.startswith(key)}
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise CmdletError(
                f"Parameter cannot be processed because the parameter name '{name}' is ambiguous. "
                f"Possible matches include: {' '.join('-' + n for n in sorted(found))}.",
                category="InvalidArgument",
            )
        raise CmdletError(
            f"A parameter cannot be found that matches parameter name '{name}'.", category="InvalidArgument"
        )


# ---------------------------------------------------------------------------------------------------
# The PowerShell cmdlets.


def _write_host(call: Call) -> list[Any]:
    separator = to_string(call.get("Separator", " "))
    values = call.get("Object")
    items = values if isinstance(values, list) else ([] if values is None else [values])
    call.session.host.write(Stream.HOST, separator.join(to_string(v) for v in items))
    return []


def _write_warning(call: Call) -> list[Any]:
    call.session.host.write(Stream.WARNING, f"WARNING: {to_string(call.get('Message'))}")
    return []


def _write_output(call: Call) -> list[Any]:
    value = call.get("InputObject")
    return list(value) if isinstance(value, list) else [value]


def _write_error(call: Call) -> list[Any]:
    raise CmdletError(to_string(call.get("Message")), category="NotSpecified")


def _where_object(call: Call) -> list[Any]:
    block = call.get("FilterScript")
    if not isinstance(block, ScriptBlock):
        raise Unsupported("Where-Object without a script block (the simplified -Property syntax)")
    return [item for item in call.input or () if to_bool(_collapse(call.session.run_block(block, item)))]


def _foreach_object(call: Call) -> list[Any]:
    block = call.get("Process")
    if not isinstance(block, ScriptBlock):
        raise Unsupported("ForEach-Object without a script block (the member-name syntax)")
    out: list[Any] = []
    for item in call.input or ():
        out += call.session.run_block(block, item)
    return out


def _collapse(items: list[Any]) -> Any:
    if not items:
        return None
    return items[0] if len(items) == 1 else items


def _get_command(call: Call) -> list[Any]:
    names = call.get("Name")
    out: list[Any] = []
    for name in names if isinstance(names, list) else [names]:
        text = to_string(name)
        if not call.session.command_exists(text):
            raise CmdletError(
                f"The term '{text}' is not recognized as the name of a cmdlet, function, script file, "
                "or operable program.",
                category="ObjectNotFound",
            )
        out.append(PsObject("System.Management.Automation.CmdletInfo", Hashtable([("Name", text)]), text))
    return out


def _start_transcript(call: Call) -> list[Any]:
    path = call.get("Path")
    if path is None:
        raise Unsupported("Start-Transcript without -Path (the default path is in the user's Documents)")
    full = call.session.host.start_transcript(to_string(path))
    return [f"Transcript started, output file is {full}"]


def _stop_transcript(call: Call) -> list[Any]:
    path = call.session.host.stop_transcript()
    if path is None:
        raise CmdletError(
            "An error occurred stopping transcription: The host is not currently transcribing.",
            category="InvalidOperation",
        )
    return [f"Transcript stopped, output file is {path}"]


def _get_date(call: Call) -> list[Any]:
    return [Date(call.session.host.now())]


def _get_location(call: Call) -> list[Any]:
    path = call.session.host.location
    return [PsObject("System.Management.Automation.PathInfo", Hashtable([("Path", path)]), path)]


def _join_path(call: Call) -> list[Any]:
    parent, child = to_string(call.get("Path")), to_string(call.get("ChildPath"))
    return [posixpath.join(parent, child) if parent else child]


def _new_object(call: Call) -> list[Any]:
    name = to_string(call.get("TypeName")).replace(" ", "")
    arguments = call.get("ArgumentList")
    arguments = arguments if isinstance(arguments, list) else [] if arguments is None else [arguments]
    if name.lower() in ("system.collections.generic.list[object]", "collections.generic.list[object]"):
        return [PsList()]
    if name.lower() in ("system.text.utf8encoding", "text.utf8encoding"):
        return [Encoding(bom=to_bool(arguments[0]) if arguments else False)]
    raise Unsupported(f"New-Object {name}")


def _convert_to_json(call: Call) -> list[Any]:
    value = call.get("InputObject")
    if call.input is not None:
        items = list(call.input)
        value = items[0] if len(items) == 1 else items
    depth = to_int(call.get("Depth", 2))
    compress = to_bool(call.get("Compress", False))
    data = to_json_data(value, depth)
    return [
        json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if compress
        else json.dumps(data, indent=2, ensure_ascii=False)
    ]


def to_json_data(value: Any, depth: int, level: int = 0) -> Any:
    """ConvertTo-Json's view of a value: past -Depth, objects become their text (as PowerShell does)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (Uri, Date)):
        return str(value)
    if level >= depth and isinstance(value, (list, Hashtable, PsObject)):
        return to_string(value)
    if isinstance(value, list):
        return [to_json_data(item, depth, level + 1) for item in value]
    if isinstance(value, Hashtable):
        return {to_string(k): to_json_data(v, depth, level + 1) for k, v in value.items()}
    if isinstance(value, PsObject):
        return {to_string(k): to_json_data(v, depth, level + 1) for k, v in value.properties.items()}
    if isinstance(value, PsProperty):
        return {"Name": value.name, "Value": to_json_data(value.value, depth, level + 1)}
    raise Unsupported(f"ConvertTo-Json of a {type(value).__name__}")


def _out_null(call: Call) -> list[Any]:
    return []


def builtin_commands() -> dict[str, Command]:
    """The PowerShell cmdlets, by lower-cased name."""
    commands = [
        Command(
            "Write-Host",
            (
                Param("Object", position=0, from_pipeline=True, remaining=True),
                Param("Separator"),
                Param("ForegroundColor"),
                Param("BackgroundColor"),
            ),
            _write_host,
        ),
        Command("Write-Warning", (Param("Message", position=0, from_pipeline=True),), _write_warning),
        Command("Write-Output", (Param("InputObject", position=0, from_pipeline=True),), _write_output),
        Command("Write-Error", (Param("Message", position=0),), _write_error),
        Command(
            "Where-Object",
            (Param("FilterScript", position=0), Param("InputObject", from_pipeline=True)),
            _where_object,
        ),
        Command(
            "ForEach-Object",
            (Param("Process", position=0), Param("InputObject", from_pipeline=True)),
            _foreach_object,
        ),
        Command("Get-Command", (Param("Name", position=0),), _get_command),
        Command("Start-Transcript", (Param("Path", position=0),), _start_transcript),
        Command("Stop-Transcript", (), _stop_transcript),
        Command("Get-Date", (), _get_date),
        Command("Get-Location", (), _get_location),
        Command("Join-Path", (Param("Path", position=0), Param("ChildPath", position=1)), _join_path),
        Command(
            "New-Object", (Param("TypeName", position=0), Param("ArgumentList", position=1)), _new_object
        ),
        Command(
            "ConvertTo-Json",
            (
                Param("InputObject", position=0, from_pipeline=True),
                Param("Depth"),
                Param("Compress", switch=True),
            ),
            _convert_to_json,
        ),
        Command("Out-Null", (Param("InputObject", from_pipeline=True),), _out_null),
    ]
    return {c.name.lower(): c for c in commands}


def write_all_text(host: Host, arguments: Sequence[Any]) -> None:
    """[System.IO.File]::WriteAllText(path, text[, encoding])."""
    if len(arguments) not in (2, 3):
        raise RuntimeFault(
            f'Cannot find an overload for "WriteAllText" and the argument count: "{len(arguments)}".'
        )
    path, text = to_string(arguments[0]), to_string(arguments[1])
    encoding = arguments[2] if len(arguments) == 3 else Encoding(bom=False)
    if not isinstance(encoding, Encoding):
        raise Unsupported(f"WriteAllText with the encoding {to_string(encoding)!r}")
    data = text.encode("utf-8")
    host.write_file(resolve(host, path), (b"\xef\xbb\xbf" if encoding.bom else b"") + data)
