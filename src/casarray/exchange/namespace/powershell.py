"""PowerShell literals: how every value casarray writes into a script is quoted.

A value from an inventory file or the command line becomes a single-quoted string with each quote
doubled (about_Quoting_Rules), so a name such as "O'Brien" or "$x" can neither end the string nor
expand. PowerShell also ends a single-quoted string at the typographic single quotes U+2018, U+2019,
U+201A and U+201B, so those are doubled too.
"""

from __future__ import annotations

import re

_SINGLE_QUOTES = re.compile("['\u2018\u2019\u201a\u201b]")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def ps_string(value: str | None) -> str:
    """`value` as a PowerShell single-quoted literal, or `$null`."""
    if value is None:
        return "$null"
    return "'" + _SINGLE_QUOTES.sub(lambda m: m.group(0) * 2, value) + "'"


def ps_bool(value: bool) -> str:
    return "$true" if value else "$false"


def ps_comment(text: str) -> str:
    """`text` safe inside a comment: one line, and no '#>' that would end a <# #> block early."""
    return _LINE_BREAKS.sub(" ", text).replace("#>", "# >")
