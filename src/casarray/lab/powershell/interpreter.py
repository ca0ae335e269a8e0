"""The interpreter: runs a parsed script by walking its syntax tree.

It carries out the part of PowerShell the generated scripts are written in — statements (if/elseif/
else, foreach, try/catch/finally, function, return, throw, break, continue), pipelines of commands and
expressions, variables with their scopes ($script:, dynamic scoping of function calls), splatting,
hashtables, casts, the comparison, arithmetic, logical and format operators, and the members of the
objects those scripts touch — following the PowerShell language specification and about_* topics.

Whatever else it meets is refused with Unsupported, naming the line and the statement: it never skips a
statement it does not understand. Runtime errors behave as PowerShell's do: a `throw`, or a cmdlet error
under -ErrorAction Stop, ends the run (after the `finally` blocks) unless a `catch` takes it; a cmdlet
error under Continue is written to the error stream and the script goes on.

Pure: the console, clock and files are reached through a Host, the Exchange organisation through the
commands given to it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from tree_sitter import Node

from casarray.lab.powershell.commands import (
    ERROR_ACTIONS,
    Call,
    Command,
    Param,
    builtin_commands,
    write_all_text,
)
from casarray.lab.powershell.errors import CmdletError, RuntimeFault, ScriptError, Unsupported
from casarray.lab.powershell.host import Host, Stream, resolve
from casarray.lab.powershell.syntax import Script, first_line, line_of, statement_of, text_of
from casarray.lab.powershell.values import (
    Date,
    Hashtable,
    PsList,
    PsObject,
    PsObjectView,
    PsProperty,
    PsType,
    Ref,
    ScriptBlock,
    Uri,
    add,
    arithmetic,
    collapse,
    compare,
    convert,
    dotnet_regex,
    dotnet_replacement,
    enumerate_value,
    equals,
    format_operator,
    is_instance,
    resolve_type,
    to_bool,
    to_string,
    wildcard,
)

Resolver = Callable[[str], Command | None]

# Expression levels of the grammar that are a single operand unless an operator joins two.
_BINARY = frozenset(
    {
        "logical_expression",
        "bitwise_expression",
        "comparison_expression",
        "additive_expression",
        "multiplicative_expression",
        "format_expression",
        "range_expression",
    }
)
# Method-call arguments use the same levels, spelt *_argument_expression (no comma arrays in them).
_ARGUMENT_LEVELS = re.compile(
    r"^(logical|bitwise|comparison|additive|multiplicative|format|range)_argument_expression$"
)
_SCOPES = ("script", "global", "local", "private")
_INCREMENTS = frozenset(
    {
        "post_increment_expression",
        "post_decrement_expression",
        "pre_increment_expression",
        "pre_decrement_expression",
    }
)
# about_Special_Characters: the escapes of a double-quoted string.
_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_QUOTES = "'\u2018\u2019\u201a\u201b"


class _Return(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Console(list[Any]):
    """The script's own output: shown as each top-level statement writes it (Out-Default)."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host

    def append(self, item: Any) -> None:
        self.host.write(Stream.OUTPUT, to_string(item))

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)


class _ExecutionContext:
    """$ExecutionContext, as far as the collector reads it: .SessionState.Path."""

    def __init__(self, part: str = "") -> None:
        self.part = part


@dataclass(slots=True)
class _Scope:
    parent: _Scope | None
    variables: dict[str, Any] = field(default_factory=dict)

    def find(self, name: str) -> _Scope | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.variables:
                return scope
            scope = scope.parent
        return None


@dataclass(frozen=True, slots=True)
class _Parameter:
    """One parameter of a script or function's param() block."""

    name: str
    type: PsType | None
    default: Node | None
    switch: bool
    mandatory: bool
    allow_null: bool
    allow_empty: bool


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    parameters: tuple[_Parameter, ...]
    body: Node | None  # the statement_list
    advanced: bool  # [CmdletBinding()] or [Parameter()]: takes the common parameters


@dataclass(frozen=True, slots=True)
class _Named:
    name: str
    value: Any
    explicit: bool  # -Name:value, or from a splatted hashtable
    node: Node


@dataclass(frozen=True, slots=True)
class _Positional:
    value: Any
    node: Node


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended when it reached its end: the non-terminating errors it wrote, if any."""

    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


class Interpreter:
    """Runs one parsed script against a host and a set of commands."""

    def __init__(self, script: Script, host: Host, commands: Resolver | None = None) -> None:
        self.script = script
        self.host = host
        self._builtins = builtin_commands()
        self._extra = commands
        self._functions: dict[str, _Function] = {}
        self._global = _Scope(None, {"erroractionpreference": "Continue"})
        self._errors: list[str] = []
        self._current = self._global  # the scope of the statement running now (script blocks run in it)

    # -- entry point ------------------------------------------------------------------------------

    def run(self, arguments: Mapping[str, Any] | None = None) -> Outcome:
        """Run the script with `arguments` bound to its param() block (by name, as -Name value)."""
        root = self.script.root
        scope = self._global
        try:
            params = next((c for c in root.named_children if c.type == "param_block"), None)
            if params is not None:
                declared, _ = self._param_block(params)
                tokens: list[_Named | _Positional] = [
                    _Named(name, value, True, params) for name, value in (arguments or {}).items()
                ]
                self._bind(declared, tokens, scope, "the script", params)
            elif arguments:
                raise RuntimeFault(
                    f"the script takes no parameters, but was given {', '.join(arguments)}", root
                )
            out = _Console(self.host)
            for child in root.named_children:
                if child.type == "statement_list":
                    self._statements(child, scope, out)
                elif child.type not in ("param_block", "comment"):
                    self._unsupported(f"the {child.type}", child)
        except RuntimeFault as fault:
            raise self._script_error(fault.message, fault.node) from None
        except Unsupported as unsupported:
            raise self._script_error(
                f"not supported by casarray's PowerShell interpreter: {unsupported.message}", unsupported.node
            ) from None
        except (_Break, _Continue):
            raise self._script_error("break or continue outside a loop", root) from None
        except _Return:
            pass
        return Outcome(tuple(self._errors))

    def _script_error(self, message: str, node: Node | None) -> ScriptError:
        if node is None:
            return ScriptError(message, where=self.script.name)
        statement = first_line(statement_of(node))
        return ScriptError(message, where=f"{self.script.name}:{line_of(node)}: {statement}")

    @staticmethod
    def _unsupported(what: str, node: Node) -> NoReturn:
        raise Unsupported(what, node)

    # -- Session (what cmdlets ask) ----------------------------------------------------------------

    def command_exists(self, name: str) -> bool:
        return name.lower() in self._functions or self._command(name) is not None

    def run_block(self, block: ScriptBlock, item: Any) -> list[Any]:
        scope = self._current
        saved = scope.variables.get("_")
        had = "_" in scope.variables
        scope.variables["_"] = item
        try:
            return self._block_body(block.node, scope)
        finally:
            if had:
                scope.variables["_"] = saved
            else:
                scope.variables.pop("_", None)

    def _command(self, name: str) -> Command | None:
        found = self._builtins.get(name.lower())
        if found is None and self._extra is not None:
            found = self._extra(name)
        return found

    # -- statements ---------------------------------------------------------------------------------

    def _statements(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        for child in node.named_children:
            self._statement(child, scope, out)

    def _statement(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        self._current = scope
        kind = node.type
        try:
            if kind == "comment" or kind == "empty_statement":
                return
            if kind == "pipeline":
                self._pipeline_statement(node, scope, out)
            elif kind == "if_statement":
                self._if(node, scope, out)
            elif kind == "foreach_statement":
                self._foreach(node, scope, out)
            elif kind == "try_statement":
                self._try(node, scope, out)
            elif kind == "function_statement":
                self._define(node)
            elif kind == "flow_control_statement":
                self._flow(node, scope, out)
            elif kind == "statement_block":
                self._block(node, scope, out)
            else:
                self._unsupported(f"the {kind.replace('_', ' ')}", node)
        except RuntimeFault as fault:
            if fault.node is None:
                fault.node = node
            raise
        except Unsupported as unsupported:
            if unsupported.node is None:
                unsupported.node = node
            raise

    def _block(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        """A { } block of an if, foreach, try…: runs in the same scope."""
        for child in node.named_children:
            if child.type == "statement_list":
                self._statements(child, scope, out)
            elif child.type != "comment":
                self._unsupported(f"the {child.type} in a block", child)

    def _pipeline_statement(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        children = [c for c in node.named_children if c.type != "comment"]
        if len(children) == 1 and children[0].type == "assignment_expression":
            self._assign(children[0], scope)
            return
        chain = self._chain_of(node)
        elements = self._elements(chain)
        if len(elements) == 1 and _innermost(elements[0]).type in _INCREMENTS:
            self._eval(elements[0], scope)  # $x++ as a statement writes nothing
            return
        out.extend(self._run_chain(elements, scope))

    def _chain_of(self, node: Node) -> Node:
        chains = [c for c in node.named_children if c.type != "comment"]
        if len(chains) != 1 or chains[0].type != "pipeline_chain":
            self._unsupported("a pipeline chain (&& or ||)", node)
        return chains[0]

    @staticmethod
    def _elements(chain: Node) -> list[Node]:
        return [c for c in chain.named_children if c.type != "comment"]

    def _run_chain(self, elements: list[Node], scope: _Scope) -> list[Any]:
        items: list[Any] | None = None
        for index, element in enumerate(elements):
            if element.type == "command":
                items = self._invoke(element, scope, items if index else None)
            elif index == 0:
                items = list(enumerate_value(self._eval(element, scope)))
            else:
                self._unsupported("an expression after '|'", element)
        return items or []

    def _value_of(self, node: Node, scope: _Scope) -> Any:
        """The value of a pipeline or statement used as an operand (assignment, condition, return):
        an expression's own value, or the collected output of commands and statements."""
        if node.type != "pipeline":
            out: list[Any] = []
            self._statement(node, scope, out)
            return collapse(out)
        children = [c for c in node.named_children if c.type != "comment"]
        if len(children) == 1 and children[0].type == "assignment_expression":
            return self._assign(children[0], scope)
        elements = self._elements(self._chain_of(node))
        if len(elements) == 1 and elements[0].type != "command":
            return self._eval(elements[0], scope)
        return collapse(self._run_chain(elements, scope))

    def _if(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        clauses: list[tuple[Node | None, Node]] = []
        condition: Node | None = None
        for child in node.named_children:
            if child.type == "pipeline":
                condition = child
            elif child.type == "statement_block" and condition is not None:
                clauses.append((condition, child))
            elif child.type == "elseif_clauses":
                for clause in child.named_children:
                    if clause.type == "elseif_clause":
                        parts = {c.type: c for c in clause.named_children}
                        clauses.append((parts["pipeline"], parts["statement_block"]))
            elif child.type == "else_clause":
                block = next(c for c in child.named_children if c.type == "statement_block")
                clauses.append((None, block))
            elif child.type != "comment":
                self._unsupported(f"the {child.type} in an if statement", child)
        for test, block in clauses:
            if test is None or to_bool(self._value_of(test, scope)):
                self._block(block, scope, out)
                return

    def _foreach(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        parts = {c.type: c for c in node.named_children if c.type != "comment"}
        if set(parts) != {"variable", "pipeline", "statement_block"}:
            self._unsupported("this form of foreach", node)
        target = parts["variable"]
        for item in list(enumerate_value(self._value_of(parts["pipeline"], scope))):
            self._set_variable(target, item, scope)
            try:
                self._block(parts["statement_block"], scope, out)
            except _Continue:
                continue
            except _Break:
                break

    def _try(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        body = next(c for c in node.named_children if c.type == "statement_block")
        catches = [
            clause
            for group in node.named_children
            if group.type == "catch_clauses"
            for clause in group.named_children
            if clause.type == "catch_clause"
        ]
        final = next((c for c in node.named_children if c.type == "finally_clause"), None)
        for clause in catches:
            if any(c.type == "catch_type_list" for c in clause.named_children):
                self._unsupported("a catch of a given exception type", clause)
        try:
            try:
                self._block(body, scope, out)
            except RuntimeFault as fault:
                if not catches:
                    raise
                message = fault.message
                exception = PsObject("System.Exception", Hashtable([("Message", message)]), message)
                record = PsObject(
                    "System.Management.Automation.ErrorRecord", Hashtable([("Exception", exception)]), message
                )
                scope.variables["_"] = record
                block = next(c for c in catches[0].named_children if c.type == "statement_block")
                self._block(block, scope, out)
        finally:
            if final is not None:
                block = next(c for c in final.named_children if c.type == "statement_block")
                self._block(block, scope, out)

    def _flow(self, node: Node, scope: _Scope, out: list[Any]) -> None:
        keyword = text_of(node.children[0]).lower()
        operand = next((c for c in node.named_children if c.type == "pipeline"), None)
        if keyword == "return":
            if operand is not None:
                out.extend(enumerate_value(self._value_of(operand, scope)))
            raise _Return()
        if keyword == "throw":
            value = self._value_of(operand, scope) if operand is not None else "ScriptHalted"
            raise RuntimeFault(to_string(value), node, value=value)
        if keyword in ("break", "continue") and operand is None and len(node.named_children) == 0:
            raise _Break() if keyword == "break" else _Continue()
        self._unsupported(f"{keyword} {text_of(node)[len(keyword) :].strip()}".strip(), node)

    # -- functions ------------------------------------------------------------------------------------

    def _define(self, node: Node) -> None:
        name_node = next(c for c in node.named_children if c.type == "function_name")
        if text_of(node.children[0]).lower() != "function":
            self._unsupported(f"a {text_of(node.children[0])} definition", node)
        block = next((c for c in node.named_children if c.type == "script_block"), None)
        parameters: tuple[_Parameter, ...] = ()
        advanced = False
        body = None
        if block is not None:
            for child in block.named_children:
                if child.type == "param_block":
                    parameters, advanced = self._param_block(child)
                elif child.type == "script_block_body":
                    body = self._body_list(child)
                elif child.type != "comment":
                    self._unsupported(f"the {child.type} in a function", child)
        name = text_of(name_node)
        self._functions[name.lower()] = _Function(name, parameters, body, advanced)

    def _body_list(self, body: Node) -> Node | None:
        for child in body.named_children:
            if child.type == "statement_list":
                return child
            if child.type != "comment":
                self._unsupported(f"the {child.type} (begin/process/end blocks)", child)
        return None

    def _param_block(self, node: Node) -> tuple[tuple[_Parameter, ...], bool]:
        advanced = False
        parameters = []
        for child in node.named_children:
            if child.type == "attribute_list":
                for attribute in child.named_children:
                    name = self._attribute_name(attribute)
                    if name != "cmdletbinding":
                        self._unsupported(f"the [{name}] attribute on a param block", attribute)
                    advanced = True
            elif child.type == "parameter_list":
                for parameter in child.named_children:
                    if parameter.type == "script_parameter":
                        declared, is_advanced = self._parameter(parameter)
                        parameters.append(declared)
                        advanced = advanced or is_advanced
            elif child.type != "comment":
                self._unsupported(f"the {child.type} in a param block", child)
        return tuple(parameters), advanced

    def _attribute_name(self, attribute: Node) -> str:
        named = next((c for c in attribute.named_children if c.type == "attribute_name"), None)
        return text_of(named).lower() if named is not None else ""

    def _parameter(self, node: Node) -> tuple[_Parameter, bool]:
        kind: PsType | None = None
        default = None
        name = ""
        mandatory = allow_null = allow_empty = advanced = False
        for child in node.named_children:
            if child.type == "variable":
                name = _variable_parts(text_of(child))[1]
            elif child.type == "script_parameter_default":
                default = next(c for c in child.named_children if c.type != "comment")
            elif child.type == "attribute_list":
                for attribute in child.named_children:
                    literal = next((c for c in attribute.named_children if c.type == "type_literal"), None)
                    if literal is not None:
                        kind = self._type(literal)
                        continue
                    attribute_name = self._attribute_name(attribute)
                    if attribute_name == "parameter":
                        advanced = True
                        for argument in _descendants(attribute, "attribute_argument"):
                            key, value = self._attribute_argument(argument)
                            if key == "mandatory":
                                mandatory = value
                            elif key != "helpmessage":
                                self._unsupported(f"the Parameter attribute's {key}", argument)
                    elif attribute_name == "allownull":
                        allow_null = True
                    elif attribute_name == "allowemptystring":
                        allow_empty = True
                    else:
                        self._unsupported(f"the [{attribute_name}] attribute", attribute)
        switch = kind is not None and kind.name == "System.Management.Automation.SwitchParameter"
        return _Parameter(name, kind, default, switch, mandatory, allow_null, allow_empty), advanced

    def _attribute_argument(self, node: Node) -> tuple[str, bool]:
        parts = node.named_children
        key = text_of(parts[0]).lower()
        value = to_bool(self._eval(parts[1], self._global)) if len(parts) > 1 else True
        return key, value

    def _call_function(
        self, function: _Function, tokens: list[_Named | _Positional], scope: _Scope, node: Node
    ) -> list[Any]:
        # Dynamic scoping: the function's scope is a child of its caller's (about_Scopes).
        local = _Scope(scope)
        declared = function.parameters
        if function.advanced:
            common, tokens = _split_common(tokens)
            if "ErrorAction" in common:
                local.variables["erroractionpreference"] = _error_action(common["ErrorAction"])
        self._bind(declared, tokens, local, function.name, node)
        out: list[Any] = []
        try:
            if function.body is not None:
                self._statements(function.body, local, out)
        except _Return:
            pass
        finally:
            self._current = scope
        return out

    def _bind(
        self,
        declared: tuple[_Parameter, ...],
        tokens: list[_Named | _Positional],
        scope: _Scope,
        owner: str,
        node: Node,
    ) -> None:
        by_name = {p.name.lower(): p for p in declared}
        values, positional = _bind_named(
            tokens, lambda token: _match(by_name, token.name, owner, token.node), RuntimeFault
        )
        open_slots = [p for p in declared if not p.switch and p.name not in values]
        for token in positional:
            if not open_slots:
                raise RuntimeFault(
                    f"A positional parameter cannot be found that accepts argument '{to_string(token.value)}'.",
                    token.node,
                )
            values[open_slots.pop(0).name] = token.value
        for parameter in declared:
            key = parameter.name.lower()
            if parameter.name in values:
                value = values[parameter.name]
                if parameter.mandatory and value is None and not parameter.allow_null:
                    raise RuntimeFault(
                        f"Cannot bind argument to parameter '{parameter.name}' because it is null.", node
                    )
                if parameter.mandatory and value == "" and not parameter.allow_empty:
                    raise RuntimeFault(
                        f"Cannot bind argument to parameter '{parameter.name}' because it is an empty string.",
                        node,
                    )
                scope.variables[key] = convert(value, parameter.type) if parameter.type else value
            elif parameter.mandatory:
                raise RuntimeFault(
                    f"Cannot process command because of one or more missing mandatory parameters: "
                    f"{parameter.name}.",
                    node,
                )
            elif parameter.switch:
                scope.variables[key] = False
            elif parameter.default is not None:
                value = self._eval(parameter.default, scope)
                scope.variables[key] = convert(value, parameter.type) if parameter.type else value
            else:
                scope.variables[key] = _default_of(parameter.type)

    # -- commands ---------------------------------------------------------------------------------------

    def _invoke(self, node: Node, scope: _Scope, items: list[Any] | None) -> list[Any]:
        target: Any = None
        elements: Node | None = None
        for child in node.named_children:
            if child.type == "command_invokation_operator":
                if text_of(child) != "&":
                    self._unsupported("dot-sourcing ('.')", child)
            elif child.type == "command_name":
                target = text_of(child)
            elif child.type == "command_name_expr":
                target = self._command_target(child, scope)
            elif child.type == "command_elements":
                elements = child
            elif child.type != "comment":
                self._unsupported(f"the {child.type} of a command", child)
        tokens = self._tokens(elements, scope) if elements is not None else []
        if isinstance(target, ScriptBlock):
            if tokens or items is not None:
                self._unsupported("arguments or pipeline input to a script block", node)
            return self._block_body(target.node, _Scope(scope))
        if not isinstance(target, str):
            raise RuntimeFault(
                f"The expression after '&' in a pipeline element produced an object that was not valid: "
                f"{to_string(target)!r}.",
                node,
            )
        name = target
        function = self._functions.get(name.lower())
        if function is not None:
            if items is not None:
                self._unsupported(f"pipeline input to the function {function.name}", node)
            return self._call_function(function, tokens, scope, node)
        command = self._command(name)
        if command is None:
            return self._fail(
                CmdletError(
                    f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, "
                    "or operable program.",
                    category="ObjectNotFound",
                ),
                scope,
                None,
                node,
            )
        try:
            args = self._bind_command(command, tokens)
        except CmdletError as error:
            raise RuntimeFault(f"{command.name}: {error.message}", node) from None
        action = args.pop("ErrorAction", None)
        if action is not None:
            action = _error_action(action)
        elif command.remote:
            action = "Continue"
        if items is not None and not items:
            return []  # nothing came down the pipeline: a process block never runs
        if items is not None and not any(p.from_pipeline for p in command.params):
            raise RuntimeFault(
                f"{command.name}: The input object cannot be bound to any parameters for the command.", node
            )
        call = Call(command.name, args, items, self)
        try:
            return command.run(call)
        except CmdletError as error:
            return self._fail(error, scope, action, node, command.name)
        except RuntimeFault as fault:
            fault.node = fault.node or node
            raise
        except Unsupported as unsupported:
            unsupported.node = unsupported.node or node
            raise
        finally:
            self._current = scope

    def _command_target(self, node: Node, scope: _Scope) -> Any:
        """What follows `&`: a variable or expression naming the command (or holding a script block)."""
        inner = node.named_children[0] if len(node.named_children) == 1 else node
        if inner.type == "path_command_name":
            parts = inner.named_children
            if len(parts) != 1:
                self._unsupported(f"running the path {text_of(inner)!r}", inner)
            inner = parts[0]
        return self._eval(inner, scope)

    def _fail(
        self, error: CmdletError, scope: _Scope, action: str | None, node: Node, name: str = ""
    ) -> list[Any]:
        """A cmdlet error, handled as its error action says."""
        if action is None:
            action = _error_action(self._lookup(scope, None, "erroractionpreference") or "Continue")
        message = f"{name}: {error.message}" if name else error.message
        if action == "Stop":
            raise RuntimeFault(message, node)
        if action in ("SilentlyContinue", "Ignore"):
            return []
        self._errors.append(f"{self.script.name}:{line_of(node)}: {message}")
        self.host.write(
            Stream.ERROR,
            f"{message}\n    at {self.script.name}:{line_of(node)}: {first_line(statement_of(node))}",
        )
        return []

    def _bind_command(self, command: Command, tokens: list[_Named | _Positional]) -> dict[str, Any]:
        args, rest = _bind_named(
            tokens, lambda token: command.find(token.name), lambda message, _node: CmdletError(message)
        )
        positional = [token.value for token in rest]
        slots = sorted(
            (p for p in command.params if p.position is not None and p.name not in args), key=_position
        )
        while positional:
            if not slots:
                raise CmdletError(
                    f"A positional parameter cannot be found that accepts argument '{to_string(positional[0])}'."
                )
            slot = slots.pop(0)
            if slot.remaining:
                args[slot.name] = positional[0] if len(positional) == 1 else list(positional)
                break
            args[slot.name] = positional.pop(0)
        return args

    def _tokens(self, elements: Node, scope: _Scope) -> list[_Named | _Positional]:
        tokens: list[_Named | _Positional] = []
        colon = False
        previous: Node | None = None  # the argument just before, with no space after it
        for child in elements.children:
            kind = child.type
            joined, previous = previous, None
            if kind == "command_argument_sep":
                if text_of(child).strip() == ":":
                    colon = True
                continue
            if kind == "argument_list" and joined is not None and _innermost(joined).type == "member_access":
                # `$h.ContainsKey('X')` in argument mode is one method call: the grammar reads it as a
                # member and an argument list with nothing between (a bare word followed by `(` is two
                # arguments, as in PowerShell: New-Object Type($x)).
                tokens[-1] = _Positional(self._method_call(_innermost(joined), child, scope), joined)
                continue
            if kind == "comment":
                continue
            if kind == "command_parameter":
                text = text_of(child)
                colon = text.endswith(":")
                tokens.append(_Named(text[1:].rstrip(":"), None, False, child))
                continue
            if kind in (
                "redirection",
                "stop_parsing",
                "file_redirection_operator",
                "merging_redirection_operator",
            ):
                self._unsupported("redirection", child)
            if colon and tokens and isinstance(tokens[-1], _Named):
                last = tokens[-1]
                tokens[-1] = _Named(last.name, self._argument(child, scope), True, last.node)
                colon = False
                continue
            colon = False
            splat = _splatted(child)
            if splat is not None:
                value = self._read_variable(splat, scope)
                if isinstance(value, Hashtable):
                    tokens += [_Named(to_string(k), v, True, child) for k, v in value.items()]
                elif isinstance(value, list):
                    tokens += [_Positional(v, child) for v in value]
                elif value is not None:
                    tokens.append(_Positional(value, child))
                continue
            tokens.append(_Positional(self._argument(child, scope), child))
            previous = child
        return tokens

    def _argument(self, node: Node, scope: _Scope) -> Any:
        if node.type == "generic_token":
            text = text_of(node)
            if "$" in text or "`" in text:
                self._unsupported(f"the bare word {text!r} (variables in an unquoted argument)", node)
            return text
        if node.type == "argument_list":
            return collapse(self._arguments(node, scope))
        return self._eval(node, scope)

    # -- expressions ------------------------------------------------------------------------------------

    def _eval(self, node: Node, scope: _Scope) -> Any:
        kind = node.type
        if _ARGUMENT_LEVELS.match(kind):
            kind = kind.replace("_argument_expression", "_expression")
        if kind in _BINARY:
            return self._binary(node, kind, scope)
        handler = _HANDLERS.get(kind)
        if handler is None:
            self._unsupported(f"the {kind.replace('_', ' ')} {first_line(node, 40)!r}", node)
        return handler(self, node, scope)

    def _single(self, node: Node, scope: _Scope) -> Any:
        children = [c for c in node.named_children if c.type != "comment"]
        if len(children) != 1:
            self._unsupported(f"the {node.type.replace('_', ' ')} {first_line(node, 40)!r}", node)
        return self._eval(children[0], scope)

    def _binary(self, node: Node, kind: str, scope: _Scope) -> Any:
        children = [c for c in node.children if c.type != "comment"]
        if len(children) == 1:
            return self._eval(children[0], scope)
        if len(children) != 3:
            self._unsupported(f"the expression {first_line(node, 40)!r}", node)
        left_node, operator_node, right_node = children
        operator = text_of(operator_node).lower()
        if kind == "logical_expression":
            left = to_bool(self._eval(left_node, scope))
            if operator == "-and":
                return left and to_bool(self._eval(right_node, scope))
            if operator == "-or":
                return left or to_bool(self._eval(right_node, scope))
            if operator == "-xor":
                return left != to_bool(self._eval(right_node, scope))
        left = self._eval(left_node, scope)
        right = self._eval(right_node, scope)
        if kind == "comparison_expression":
            return self._compare(operator, left, right, node)
        if kind == "additive_expression":
            return add(left, right) if operator == "+" else arithmetic(operator, left, right)
        if kind == "multiplicative_expression":
            return arithmetic(operator, left, right)
        if kind == "format_expression" and operator == "-f":
            return format_operator(to_string(left), right if isinstance(right, list) else [right])
        if kind == "range_expression" and operator == "..":
            start, end = int(left), int(right)
            step = 1 if end >= start else -1
            return list(range(start, end + step, step))
        self._unsupported(f"the operator {operator}", operator_node)

    def _compare(self, operator: str, left: Any, right: Any, node: Node) -> Any:
        prefixed = operator[:2] in ("-c", "-i") and operator[2:] in _COMPARISONS
        sensitive = prefixed and operator.startswith("-c")
        op = "-" + operator[2:] if prefixed else operator
        if op in ("-is", "-isnot"):
            if not isinstance(right, PsType):
                kind = resolve_type(to_string(right))
                if kind is None:
                    raise RuntimeFault(f"Unable to find type [{to_string(right)}].", node)
                right = kind
            return is_instance(left, right) == (op == "-is")
        if op == "-join":
            return to_string(right).join(to_string(item) for item in enumerate_value(left))
        if op == "-replace":
            pattern, replacement = [*right, ""][:2] if isinstance(right, list) else (right, "")
            regex = dotnet_regex(to_string(pattern), case_sensitive=sensitive)
            expand = dotnet_replacement(to_string(replacement))
            if isinstance(left, list):
                return [regex.sub(expand, to_string(item)) for item in left]
            return regex.sub(expand, to_string(left))
        if op in ("-contains", "-notcontains"):
            found = any(equals(item, right, case_sensitive=sensitive) for item in enumerate_value(left))
            return found == (op == "-contains")
        if op in ("-in", "-notin"):
            found = any(equals(item, left, case_sensitive=sensitive) for item in enumerate_value(right))
            return found == (op == "-in")
        test = self._scalar_test(op, right, sensitive, node)
        if isinstance(left, list):
            return [item for item in left if test(item)]
        result = test(left)
        if op in ("-match", "-notmatch"):
            self._set_matches(left, right, sensitive)
        return result

    def _scalar_test(self, op: str, right: Any, sensitive: bool, node: Node) -> Callable[[Any], bool]:
        if op == "-eq":
            return lambda v: equals(v, right, case_sensitive=sensitive)
        if op == "-ne":
            return lambda v: not equals(v, right, case_sensitive=sensitive)
        if op in ("-gt", "-ge", "-lt", "-le"):
            wanted = {"-gt": (1,), "-ge": (0, 1), "-lt": (-1,), "-le": (-1, 0)}[op]
            return lambda v: compare(v, right, case_sensitive=sensitive) in wanted
        if op in ("-like", "-notlike"):
            pattern = wildcard(to_string(right))
            if sensitive:
                pattern = re.compile(pattern.pattern, re.DOTALL)
            return lambda v: bool(pattern.match(to_string(v))) == (op == "-like")
        if op in ("-match", "-notmatch"):
            regex = dotnet_regex(to_string(right), case_sensitive=sensitive)
            return lambda v: bool(regex.search(to_string(v))) == (op == "-match")
        self._unsupported(f"the operator {op}", node)

    def _set_matches(self, left: Any, right: Any, sensitive: bool) -> None:
        match = dotnet_regex(to_string(right), case_sensitive=sensitive).search(to_string(left))
        if match is not None:
            groups = Hashtable([(0, match.group(0))])
            for index, group in enumerate(match.groups(), start=1):
                if group is not None:
                    groups.set(index, group)
            for name, group in match.groupdict().items():
                if group is not None:
                    groups.set(name, group)
            self._current.variables["matches"] = groups

    def _array_literal(self, node: Node, scope: _Scope) -> Any:
        if not any(c.type == "," for c in node.children):
            return self._single(node, scope)
        items: list[Any] = []
        for child in node.named_children:
            if child.type == "array_literal_expression":
                nested = self._array_literal(child, scope)
                items += nested if any(c.type == "," for c in child.children) else [nested]
            elif child.type != "comment":
                items.append(self._eval(child, scope))
        return items

    def _unary(self, node: Node, scope: _Scope) -> Any:
        children = [c for c in node.children if c.type != "comment"]
        if len(children) == 1:
            return self._eval(children[0], scope)
        operator = text_of(children[0]).lower()
        operand = children[1]
        if operator in ("-not", "!"):
            return not to_bool(self._eval(operand, scope))
        if operator == ",":
            return [self._eval(operand, scope)]
        if operator == "-":
            return arithmetic("-", 0, self._eval(operand, scope))
        if operator == "+":
            return arithmetic("-", self._eval(operand, scope), 0)
        if operator in ("++", "--"):
            return self._increment(operand, scope, 1 if operator == "++" else -1, post=False)
        self._unsupported(f"the unary operator {operator}", node)

    def _cast(self, node: Node, scope: _Scope) -> Any:
        literal, operand = [c for c in node.named_children if c.type != "comment"][:2]
        name = _type_text(literal)
        if name.lower() == "ordered":
            if _innermost(operand).type != "hash_literal_expression":
                raise RuntimeFault(
                    "The ordered attribute can be specified only on a hash literal node.", node
                )
            return self._eval(operand, scope)
        if name.lower() == "ref":
            target = _innermost(operand)
            if target.type != "variable":
                self._unsupported("[ref] of anything but a variable", node)
            return Ref(
                lambda: self._read_variable(target, scope), lambda v: self._set_variable(target, v, scope)
            )
        return convert(self._eval(operand, scope), self._type(literal))

    def _type(self, literal: Node) -> PsType:
        name = _type_text(literal)
        kind = resolve_type(name)
        if kind is None:
            self._unsupported(f"the type [{name}]", literal)
        return kind

    def _type_literal(self, node: Node, scope: _Scope) -> Any:
        return self._type(node)

    def _increment(self, target: Node, scope: _Scope, step: int, *, post: bool) -> Any:
        current = self._eval(target, scope)
        updated = add(current if current is not None else 0, step)
        self._store(target, updated, scope)
        return current if post else updated

    def _postfix(self, node: Node, scope: _Scope) -> Any:
        target = node.named_children[0]
        step = 1 if node.type.endswith("increment_expression") else -1
        return self._increment(target, scope, step, post=node.type.startswith("post"))

    def _parenthesized(self, node: Node, scope: _Scope) -> Any:
        inner = [c for c in node.named_children if c.type != "comment"]
        if len(inner) != 1:
            self._unsupported("an empty ( )", node)
        return self._value_of(inner[0], scope)

    def _sub_expression(self, node: Node, scope: _Scope) -> Any:
        out: list[Any] = []
        for child in node.named_children:
            if child.type == "statement_list":
                self._statements(child, scope, out)
        return collapse(out)

    def _array_expression(self, node: Node, scope: _Scope) -> Any:
        out: list[Any] = []
        for child in node.named_children:
            if child.type == "statement_list":
                self._statements(child, scope, out)
        return out

    def _hash_literal(self, node: Node, scope: _Scope) -> Any:
        table = Hashtable()
        for body in node.named_children:
            if body.type != "hash_literal_body":
                continue
            for entry in body.named_children:
                if entry.type != "hash_entry":
                    continue
                key_node, value_node = [c for c in entry.named_children if c.type != "comment"][:2]
                key_inner = key_node.named_children[0] if key_node.named_children else key_node
                key = text_of(key_inner) if key_inner.type == "simple_name" else self._eval(key_inner, scope)
                if table.contains(key):
                    raise RuntimeFault(
                        f"Duplicate keys '{to_string(key)}' are not allowed in hash literals.", entry
                    )
                table.set(key, self._value_of(value_node, scope))
        return table

    def _script_block(self, node: Node, scope: _Scope) -> Any:
        return ScriptBlock(node)

    def _block_body(self, node: Node, scope: _Scope) -> list[Any]:
        """Run a script block's statements in `scope`; its output."""
        block = next((c for c in node.named_children if c.type == "script_block"), node)
        out: list[Any] = []
        for child in block.named_children:
            if child.type == "script_block_body":
                body = self._body_list(child)
                if body is not None:
                    with contextlib.suppress(_Return):
                        self._statements(body, scope, out)
            elif child.type == "param_block":
                self._unsupported("a param block in a script block", child)
            elif child.type == "statement_list":
                self._statements(child, scope, out)
            elif child.type != "comment":
                self._unsupported(f"the {child.type} in a script block", child)
        self._current = scope
        return out

    def _string(self, node: Node, scope: _Scope) -> Any:
        return self._single(node, scope)

    def _verbatim(self, node: Node, scope: _Scope) -> Any:
        text = text_of(node)
        if text.startswith("@'"):
            return text[2:-2].strip("\r\n").replace("\r\n", "\n")  # a here-string: no escapes at all
        body = text[1:-1]
        # about_Quoting_Rules: a quote (any of the four single quotes) is doubled to stand for itself.
        return re.sub(f"([{_QUOTES}])[{_QUOTES}]", r"\1", body)

    def _expandable(self, node: Node, scope: _Scope) -> Any:
        start, end = node.start_byte, node.end_byte
        here = text_of(node).startswith('@"')
        open_length = 2 if here else 1
        position = start + open_length
        pieces: list[str] = []
        for child in node.named_children:
            pieces.append(_unescape(self.script.slice(position, child.start_byte), here))
            if child.type == "variable":
                pieces.append(to_string(self._read_variable(child, scope)))
            elif child.type == "sub_expression":
                pieces.append(to_string(self._sub_expression(child, scope)))
            else:
                self._unsupported(f"the {child.type} in a string", child)
            position = child.end_byte
        pieces.append(_unescape(self.script.slice(position, end - open_length), here))
        text = "".join(pieces)
        return text.strip("\r\n") if here else text

    def _integer(self, node: Node, scope: _Scope) -> Any:
        text = text_of(node).lower()
        multiplier = 1
        for suffix, factor in (("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30)):
            if text.endswith(suffix):
                text, multiplier = text[: -len(suffix)], factor
        try:
            return int(text, 16 if text.startswith("0x") else 10) * multiplier
        except ValueError:
            self._unsupported(f"the number {text_of(node)}", node)

    def _real(self, node: Node, scope: _Scope) -> Any:
        try:
            return float(text_of(node))
        except ValueError:
            self._unsupported(f"the number {text_of(node)}", node)

    def _variable(self, node: Node, scope: _Scope) -> Any:
        if text_of(node).startswith("@"):
            self._unsupported("splatting outside a command's arguments", node)
        return self._read_variable(node, scope)

    # -- members, methods, indexes --------------------------------------------------------------------

    def _member_name(self, node: Node, scope: _Scope) -> str:
        inner = node.named_children[0] if node.type == "member_name" and node.named_children else node
        if inner.type == "simple_name" or inner == node:
            return text_of(inner)
        return to_string(self._eval(inner, scope))

    def _member_access(self, node: Node, scope: _Scope) -> Any:
        target, operator, member = [c for c in node.children if c.type != "comment"][:3]
        name = self._member_name(member, scope)
        if text_of(operator) == "::":
            return self._static_member(self._type(target), name, node)
        return self._get_member(self._eval(target, scope), name, node)

    def _invokation(self, node: Node, scope: _Scope) -> Any:
        target, operator, member, arguments = [c for c in node.children if c.type != "comment"][:4]
        return self._invoke_member(target, operator, member, arguments, node, scope)

    def _method_call(self, access: Node, arguments: Node, scope: _Scope) -> Any:
        target, operator, member = [c for c in access.children if c.type != "comment"][:3]
        return self._invoke_member(target, operator, member, arguments, access, scope)

    def _invoke_member(
        self, target: Node, operator: Node, member: Node, arguments: Node, node: Node, scope: _Scope
    ) -> Any:
        name = self._member_name(member, scope)
        values = self._arguments(arguments, scope)
        if text_of(operator) == "::":
            return self._static_call(self._type(target), name, values, node)
        return self._call_method(self._eval(target, scope), name, values, node)

    def _arguments(self, node: Node, scope: _Scope) -> list[Any]:
        values: list[Any] = []
        for child in node.named_children:
            if child.type == "argument_expression_list":
                values += [self._eval(arg, scope) for arg in child.named_children if arg.type != "comment"]
        return values

    def _element_access(self, node: Node, scope: _Scope) -> Any:
        target, index = [c for c in node.named_children if c.type != "comment"][:2]
        value = self._eval(target, scope)
        key = self._eval(index, scope)
        return _index(value, key, node)

    def _get_member(self, value: Any, name: str, node: Node) -> Any:
        key = name.lower()
        if value is None:
            return None
        if isinstance(value, Hashtable):
            if value.contains(name):
                return value.get(name)
            if key == "keys":
                return value.keys()
            if key == "values":
                return value.values()
            if key == "count":
                return len(value)
            return None
        if isinstance(value, list):
            if key in ("count", "length"):
                return len(value)
            # Member enumeration: the member of every item (about_Member-Access_Enumeration).
            found = [self._get_member(item, name, node) for item in value]
            return collapse([v for v in found if v is not None])
        if isinstance(value, PsObject):
            if key == "psobject":
                return PsObjectView(value)
            return value.properties.get(name)
        if isinstance(value, PsObjectView):
            if key == "properties":
                target = value.target
                if isinstance(target, PsObject):
                    return Hashtable((k, PsProperty(k, v)) for k, v in target.properties.items())
                return Hashtable()
            self._unsupported(f"PSObject.{name}", node)
        if isinstance(value, PsProperty) and key in ("name", "value"):
            return value.name if key == "name" else value.value
        if isinstance(value, Ref) and key == "value":
            return value.read()
        if isinstance(value, Uri):
            return value.member(name)
        if isinstance(value, str) and key == "length":
            return len(value)
        if isinstance(value, _ExecutionContext) and (value.part, key) in (
            ("", "sessionstate"),
            ("sessionstate", "path"),
        ):
            return _ExecutionContext(key)
        if key == "count":
            return 1  # every scalar has Count 1 in PowerShell 3 and later
        if key == "psobject":
            return PsObjectView(value)
        self._unsupported(f"the property {name} of a {_type_word(value)}", node)

    def _call_method(self, value: Any, name: str, args: list[Any], node: Node) -> Any:
        key = name.lower()
        if value is None:
            raise RuntimeFault("You cannot call a method on a null-valued expression.", node)
        if key == "tostring" and not args:
            return to_string(value)
        if isinstance(value, str):
            return _string_method(
                value, key, args, lambda: self._unsupported(f"the method {name}() on a System.String", node)
            )
        if isinstance(value, Date):
            if key == "touniversaltime" and not args:
                return value.to_universal()
            if key == "tostring" and len(args) == 1:
                return value.format(to_string(args[0]))
        if isinstance(value, Hashtable):
            if key in ("containskey", "contains") and len(args) == 1:
                return value.contains(args[0])
            if key == "add" and len(args) == 2:
                value.add(args[0], args[1])
                return None
            if key == "remove" and len(args) == 1:
                value.remove(args[0])
                return None
        if isinstance(value, PsList):
            if key == "add" and len(args) == 1:
                value.append(args[0])
                return None
            if key == "toarray" and not args:
                return list(value)
        if isinstance(value, list):
            if key == "contains" and len(args) == 1:
                return any(equals(item, args[0]) for item in value)
            if key == "add":
                raise RuntimeFault(
                    'Exception calling "Add" with "1" argument(s): "Collection was of a fixed size."', node
                )
        path_call = key == "getunresolvedproviderpathfrompspath" and len(args) == 1
        if isinstance(value, _ExecutionContext) and value.part == "path" and path_call:
            return resolve(self.host, to_string(args[0]))
        self._unsupported(f"the method {name}() on a {_type_word(value)}", node)

    def _static_member(self, kind: PsType, name: str, node: Node) -> Any:
        if kind.name == "System.UriKind" and name.lower() in ("absolute", "relative", "relativeorabsolute"):
            return {"absolute": "Absolute", "relative": "Relative"}.get(name.lower(), "RelativeOrAbsolute")
        self._unsupported(f"[{kind.name}]::{name}", node)

    def _static_call(self, kind: PsType, name: str, args: list[Any], node: Node) -> Any:
        key = name.lower()
        if kind.name == "System.Uri" and key == "trycreate" and len(args) == 3:
            text, uri_kind, out = args
            if not isinstance(out, Ref):
                raise RuntimeFault(
                    "Argument: '3' should be a System.Management.Automation.PSReference.", node
                )
            uri = Uri(to_string(text))
            wanted = to_string(uri_kind).lower()
            ok = (
                (wanted == "absolute" and uri.is_absolute)
                or (wanted == "relative" and not uri.is_absolute)
                or (wanted == "relativeorabsolute")
            )
            out.write(uri if ok else None)
            return ok
        if kind.name == "System.IO.File" and key == "writealltext":
            write_all_text(self.host, args)
            return None
        self._unsupported(f"[{kind.name}]::{name}()", node)

    # -- variables and assignment ---------------------------------------------------------------------

    def _read_variable(self, node: Node, scope: _Scope) -> Any:
        qualifier, name = _variable_parts(text_of(node))
        return self._lookup(scope, qualifier, name, node)

    def _lookup(self, scope: _Scope, qualifier: str | None, name: str, node: Node | None = None) -> Any:
        key = name.lower()
        if qualifier is None or qualifier in _SCOPES:
            if key == "null":
                return None
            if key in ("true", "false"):
                return key == "true"
            if key == "psscriptroot":
                return self.host.script_root
            if key == "executioncontext":
                return _ExecutionContext()
        if qualifier in ("script", "global"):
            return self._global.variables.get(key)
        if qualifier in ("local", "private"):
            return scope.variables.get(key)
        if qualifier is not None:
            raise Unsupported(f"the variable ${qualifier}:{name}", node)
        found = scope.find(key)
        return None if found is None else found.variables[key]

    def _set_variable(self, node: Node, value: Any, scope: _Scope) -> None:
        qualifier, name = _variable_parts(text_of(node))
        key = name.lower()
        if key == "null" and qualifier is None:
            return  # $null = … discards
        if key in ("true", "false", "psscriptroot", "executioncontext") and qualifier is None:
            raise RuntimeFault(f"Cannot overwrite variable {name} because it is read-only or constant.", node)
        if qualifier in ("script", "global"):
            self._global.variables[key] = value
        elif qualifier in (None, "local", "private"):
            scope.variables[key] = value
        else:
            self._unsupported(f"the variable ${qualifier}:{name}", node)

    def _assign(self, node: Node, scope: _Scope) -> Any:
        parts = [c for c in node.named_children if c.type != "comment"]
        target, operator_node, value_node = parts[0], parts[1], parts[2]
        operator = text_of(operator_node)
        value = self._value_of(value_node, scope)
        if operator != "=":
            current = self._eval(target, scope)
            value = add(current, value) if operator == "+=" else arithmetic(operator[0], current, value)
        self._store(target, value, scope)
        return value

    def _store(self, target: Node, value: Any, scope: _Scope) -> None:
        inner = _innermost(target)
        if inner.type == "variable":
            self._set_variable(inner, value, scope)
        elif inner.type == "element_access":
            holder_node, index_node = [c for c in inner.named_children if c.type != "comment"][:2]
            holder = self._eval(holder_node, scope)
            key = self._eval(index_node, scope)
            if isinstance(holder, Hashtable):
                holder.set(key, value)
            elif isinstance(holder, list):
                index = int(key)
                if not -len(holder) <= index < len(holder):
                    raise RuntimeFault("Index was outside the bounds of the array.", inner)
                holder[index] = value
            else:
                raise RuntimeFault(f"Unable to index into an object of type {_type_word(holder)}.", inner)
        elif inner.type == "member_access":
            holder_node, _, member = [c for c in inner.children if c.type != "comment"][:3]
            holder = self._eval(holder_node, scope)
            name = self._member_name(member, scope)
            if isinstance(holder, Hashtable):
                holder.set(name, value)
            else:
                self._unsupported(f"setting the property {name} of a {_type_word(holder)}", inner)
        else:
            self._unsupported(f"assigning to {first_line(target, 40)!r}", target)


def _operand(interpreter: Interpreter, node: Node, scope: _Scope) -> Any:
    """A level of the grammar that wraps one operand."""
    return interpreter._single(node, scope)


_COMPARISONS = {
    "eq", "ne", "gt", "ge", "lt", "le", "like", "notlike", "match", "notmatch", "contains", "notcontains",
    "in", "notin", "replace",
}  # fmt: skip

_HANDLERS: dict[str, Callable[[Interpreter, Node, _Scope], Any]] = {
    "array_literal_expression": Interpreter._array_literal,
    "unary_expression": Interpreter._unary,
    "expression_with_unary_operator": Interpreter._unary,
    "argument_expression": _operand,
    "cast_expression": Interpreter._cast,
    "type_literal": Interpreter._type_literal,
    "post_increment_expression": Interpreter._postfix,
    "post_decrement_expression": Interpreter._postfix,
    "pre_increment_expression": Interpreter._postfix,
    "pre_decrement_expression": Interpreter._postfix,
    "parenthesized_expression": Interpreter._parenthesized,
    "sub_expression": Interpreter._sub_expression,
    "array_expression": Interpreter._array_expression,
    "hash_literal_expression": Interpreter._hash_literal,
    "script_block_expression": Interpreter._script_block,
    "string_literal": Interpreter._string,
    "verbatim_string_characters": Interpreter._verbatim,
    "verbatim_here_string_characters": Interpreter._verbatim,
    "expandable_string_literal": Interpreter._expandable,
    "expandable_here_string_literal": Interpreter._expandable,
    "integer_literal": _operand,
    "decimal_integer_literal": Interpreter._integer,
    "hexadecimal_integer_literal": Interpreter._integer,
    "real_literal": Interpreter._real,
    "variable": Interpreter._variable,
    "member_access": Interpreter._member_access,
    "invokation_expression": Interpreter._invokation,
    "element_access": Interpreter._element_access,
    "left_assignment_expression": _operand,
}


# ---------------------------------------------------------------------------------------------------
# Helpers.


def _innermost(node: Node) -> Node:
    """Down through the single-operand levels to the node that is the expression."""
    current = node
    while True:
        children = [c for c in current.children if c.type != "comment"]
        if len(children) == 1 and children[0].is_named and current.type != "variable":
            current = children[0]
            continue
        return current


def _descendants(node: Node, kind: str) -> Iterator[Node]:
    for child in node.named_children:
        if child.type == kind:
            yield child
        else:
            yield from _descendants(child, kind)


def _splatted(node: Node) -> Node | None:
    inner = _innermost(node)
    return inner if inner.type == "variable" and text_of(inner).startswith("@") else None


def _variable_parts(text: str) -> tuple[str | None, str]:
    """'$script:Changed' -> ('script', 'Changed'); '${a b}' -> (None, 'a b'); '$_' -> (None, '_')."""
    body = text[1:]
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    if ":" in body:
        qualifier, name = body.split(":", 1)
        return qualifier.lower(), name
    return None, body


def _type_text(literal: Node) -> str:
    text = text_of(literal).strip()
    return text[1:-1].strip() if text.startswith("[") and text.endswith("]") else text


def _unescape(text: str, here: bool) -> str:
    """The literal text of a double-quoted string between its expansions (about_Special_Characters)."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "`" and index + 1 < len(text):
            following = text[index + 1]
            out.append(_ESCAPES.get(following, following))
            index += 2
            continue
        if not here and char == '"' and text[index + 1 : index + 2] == '"':
            out.append('"')
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _match(by_name: dict[str, _Parameter], name: str, owner: str, node: Node) -> _Parameter:
    key = name.lower()
    if key in by_name:
        return by_name[key]
    found = [p for k, p in by_name.items() if k.startswith(key)]
    if len(found) == 1:
        return found[0]
    if found:
        raise RuntimeFault(
            f"Parameter cannot be processed because the parameter name '{name}' is ambiguous.", node
        )
    raise RuntimeFault(f"{owner}: A parameter cannot be found that matches parameter name '{name}'.", node)


class _Bindable(Protocol):
    """A parameter as the binding of named arguments sees it: a function's or a cmdlet's."""

    @property
    def name(self) -> str: ...

    @property
    def switch(self) -> bool: ...


def _bind_named(
    tokens: list[_Named | _Positional],
    find: Callable[[_Named], _Bindable],
    fault: Callable[[str, Node], Exception],
) -> tuple[dict[str, Any], list[_Positional]]:
    """The named arguments' values by parameter name, and the positional arguments left, in order.

    A switch takes no argument unless written -Name:value; another parameter takes -Name:value or the
    argument after its name (about_Parameters). `find` matches a name to its parameter; `fault` makes
    the error for a parameter left without its argument.
    """
    values: dict[str, Any] = {}
    positional: list[_Positional] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if isinstance(token, _Positional):
            positional.append(token)
            continue
        parameter = find(token)
        if parameter.switch:
            values[parameter.name] = to_bool(token.value) if token.explicit else True
        elif token.explicit:
            values[parameter.name] = token.value
        elif index < len(tokens) and isinstance(tokens[index], _Positional):
            values[parameter.name] = tokens[index].value
            index += 1
        else:
            raise fault(f"Missing an argument for parameter '{parameter.name}'.", token.node)
    return values, positional


def _split_common(tokens: list[_Named | _Positional]) -> tuple[dict[str, Any], list[_Named | _Positional]]:
    common: dict[str, Any] = {}
    rest: list[_Named | _Positional] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if isinstance(token, _Named) and token.name.lower() in ("erroraction", "ea"):
            if token.explicit:
                common["ErrorAction"] = token.value
            elif index < len(tokens):
                common["ErrorAction"] = tokens[index].value
                index += 1
            continue
        rest.append(token)
    return common, rest


def _error_action(value: Any) -> str:
    text = to_string(value)
    for action in ERROR_ACTIONS:
        if action.lower() == text.lower():
            if action == "Inquire":
                raise Unsupported("-ErrorAction Inquire (there is no one to ask)")
            return action
    raise RuntimeFault(
        f'Cannot convert value "{text}" to type "System.Management.Automation.ActionPreference". '
        f"Specify one of the following enumerator names and try again: {', '.join(ERROR_ACTIONS)}"
    )


def _position(param: Param) -> int:
    return param.position if param.position is not None else 0


def _default_of(kind: PsType | None) -> Any:
    if kind is None:
        return None
    if kind.name == "System.String":
        return ""
    if kind.name in ("System.Int32", "System.Int64", "System.Double"):
        return 0
    if kind.name == "System.Boolean":
        return False
    return None


def _index(value: Any, key: Any, node: Node) -> Any:
    if value is None:
        raise RuntimeFault("Cannot index into a null array.", node)
    if isinstance(value, Hashtable):
        return value.get(key)
    if isinstance(value, (list, str)):
        if isinstance(key, list):
            return [_index(value, k, node) for k in key]
        index = int(key)
        return value[index] if -len(value) <= index < len(value) else None
    raise RuntimeFault(f"Unable to index into an object of type {_type_word(value)}.", node)


def _type_word(value: Any) -> str:
    if isinstance(value, PsObject):
        return value.type_name
    return {
        str: "System.String", bool: "System.Boolean", int: "System.Int32", float: "System.Double",
        Uri: "System.Uri", Date: "System.DateTime", Hashtable: "System.Collections.Hashtable",
        PsList: "System.Collections.Generic.List[object]", list: "System.Object[]",
    }.get(type(value), type(value).__name__)  # fmt: skip


def _string_method(value: str, key: str, args: list[Any], unsupported: Callable[[], NoReturn]) -> Any:
    texts = [to_string(a) for a in args]
    if key in ("tolower", "tolowerinvariant") and not args:
        return value.lower()
    if key in ("toupper", "toupperinvariant") and not args:
        return value.upper()
    if key in ("trim", "trimstart", "trimend") and len(args) <= 1:
        chars = texts[0] if texts else None
        return {"trim": value.strip, "trimstart": value.lstrip, "trimend": value.rstrip}[key](chars)
    if key == "startswith" and len(args) == 1:
        return value.startswith(texts[0])
    if key == "endswith" and len(args) == 1:
        return value.endswith(texts[0])
    if key == "contains" and len(args) == 1:
        return texts[0] in value
    if key == "replace" and len(args) == 2:
        return value.replace(texts[0], texts[1])
    if key == "split" and len(args) == 1:
        return re.split("[" + re.escape(texts[0]) + "]", value)
    if key == "indexof" and len(args) == 1:
        return value.find(texts[0])
    if key == "substring" and len(args) in (1, 2):
        start = int(args[0])
        return value[start:] if len(args) == 1 else value[start : start + int(args[1])]
    unsupported()
