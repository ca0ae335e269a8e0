"""A PowerShell interpreter for the scripts casarray writes, so the lab runs the very artifacts an
administrator runs in the Exchange Management Shell (docs/lab.md, "The seed's three steps, runnable").

    syntax.py       parse with tree-sitter's PowerShell grammar; a script that does not parse never runs
    values.py       PowerShell values, conversions and operators in Python
    interpreter.py  walk the syntax tree: statements, pipelines, functions, scopes, expressions
    commands.py     parameter binding and the PowerShell cmdlets the scripts call
    exchange.py     Exchange's Get-/Set- client-access cmdlets over an organisation's settings documents
    host.py         the console, clock, files and transcript, behind a Protocol (MemoryHost in memory)
    errors.py       ScriptError (what leaves the package) and the interpreter's own signals

Pure: no sockets, no clock, no files. casarray.lab.ems connects it to the lab's simulated servers.
"""

from __future__ import annotations

from casarray.lab.powershell.errors import ScriptError
from casarray.lab.powershell.exchange import ExchangeShell, Organization, SettingsFailed
from casarray.lab.powershell.host import Host, MemoryHost, Stream
from casarray.lab.powershell.interpreter import Interpreter, Outcome
from casarray.lab.powershell.syntax import Script, SyntaxProblem, parse, syntax_problems

__all__ = [
    "ExchangeShell",
    "Host",
    "Interpreter",
    "MemoryHost",
    "Organization",
    "Outcome",
    "Script",
    "ScriptError",
    "SettingsFailed",
    "Stream",
    "SyntaxProblem",
    "parse",
    "syntax_problems",
]
