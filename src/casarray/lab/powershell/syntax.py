"""PowerShell source to a syntax tree, with tree-sitter and the tree-sitter-powershell grammar.

A script that does not parse is refused as a whole, before anything runs: the first error names its
line and column and quotes the line, as PowerShell's own parser reports a ParseException.
"""

from __future__ import annotations

from dataclasses import dataclass

import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

from casarray.lab.powershell.errors import ScriptError

_LANGUAGE = Language(tree_sitter_powershell.language())

# Statements are the children of a statement_list (a script's, a block's, a function's body).
_STATEMENT_PARENTS = frozenset({"statement_list", "program"})


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """One place the grammar could not read: 1-based line and column, and the line's text."""

    line: int
    column: int
    text: str
    missing: str | None = None  # the token the parser expected there, when it knows one

    def __str__(self) -> str:
        what = f"missing {self.missing!r}" if self.missing else "unexpected text"
        return f"line {self.line}, column {self.column}: {what}: {self.text.strip()}"


@dataclass(frozen=True, slots=True)
class Script:
    """A parsed script: its name (for messages), its text and its syntax tree."""

    name: str
    source: bytes  # UTF-8: the tree's offsets are byte offsets
    root: Node

    def slice(self, start: int, end: int) -> str:
        return self.source[start:end].decode("utf-8")


def _parser() -> Parser:
    return Parser(_LANGUAGE)


def syntax_problems(text: str) -> list[SyntaxProblem]:
    """Every place in `text` the PowerShell grammar cannot read; empty when the script parses."""
    source = text.encode("utf-8")
    tree = _parser().parse(source)
    lines = source.decode("utf-8").splitlines() or [""]
    problems: list[SyntaxProblem] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if not node.has_error:
            continue
        if node.is_error or node.is_missing:
            row, column = node.start_point
            line = lines[row] if row < len(lines) else ""
            problems.append(SyntaxProblem(row + 1, column + 1, line, node.type if node.is_missing else None))
            continue
        stack.extend(reversed(node.children))
    return sorted(problems, key=lambda p: (p.line, p.column))


def parse(text: str, name: str) -> Script:
    """`text` parsed; ScriptError at the first syntax problem."""
    problems = syntax_problems(text)
    if problems:
        first = problems[0]
        raise ScriptError(
            f"does not parse: {first}",
            where=f"{name}:{first.line}",
            hint=f"{len(problems)} syntax problem{'s' if len(problems) != 1 else ''}; nothing was run",
        )
    source = text.encode("utf-8")
    return Script(name, source, _parser().parse(source).root_node)


def text_of(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def line_of(node: Node) -> int:
    """The 1-based line `node` starts on."""
    return node.start_point[0] + 1


def statement_of(node: Node) -> Node:
    """The statement `node` belongs to: the outermost ancestor that is an item of a statement list."""
    current = node
    while current.parent is not None and current.parent.type not in _STATEMENT_PARENTS:
        current = current.parent
    return current


def first_line(node: Node, limit: int = 100) -> str:
    """A node's text as one short line, for messages."""
    text = text_of(node).strip().splitlines()
    line = text[0].strip() if text else ""
    if len(text) > 1 or len(line) > limit:
        line = line[:limit].rstrip() + " …"
    return line
