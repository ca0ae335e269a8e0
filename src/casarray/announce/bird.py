"""What `casarray announce` says to BIRD and how BIRD's answers read. Pure: no process is run here.

Announcing is enabling the static protocol that holds the VIP's route (`birdc enable casarray_vip4`),
withdrawing is disabling it; BGP then sends the UPDATE to every router. The command carries a message
that BIRD shows as the protocol's "Message:" in `birdc show protocols all`, so an operator sees why.

BIRD 2's answers (nest/proto.c, proto_cmd_enable / proto_cmd_disable), after its "BIRD 2.0.x ready."
greeting: "<name>: enabled", "<name>: already enabled", "<name>: disabled", "<name>: already disabled".
Anything else (an unknown protocol is a syntax error, an unreachable socket is birdc's own message) is
an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from casarray.errors import CasarrayError

DEFAULT_SOCKET = "/run/bird/bird.ctl"  # Debian's bird2 (bird.service runs `bird -s` there)
DEFAULT_BIRDC = "birdc"

MESSAGE_LIMIT = 120  # characters of the reason shown in `show protocols all`


class BirdError(CasarrayError):
    """BIRD could not be told (not running, socket unreadable, no such protocol)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """BIRD's answer to one enable/disable."""

    protocol: str
    enabled: bool  # the protocol's state now
    changed: bool  # False when it was in that state already


def command(protocol: str, enable: bool, reason: str) -> list[str]:
    """The birdc arguments that set `protocol` enabled or disabled, with `reason` as its message."""
    return ["enable" if enable else "disable", protocol, f'"{message(reason)}"']


def message(reason: str) -> str:
    """`reason` as a BIRD string: BIRD's lexer reads "..." with no escapes, so neither a double quote nor
    a line break may appear inside (conf/cf-lex.l, the QUOTED state)."""
    text = " ".join(reason.replace('"', "'").split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def parse_reply(protocol: str, enable: bool, output: str) -> Reply:
    """BIRD's answer, as birdc printed it; a BirdError says what went wrong otherwise."""
    verb = "enabled" if enable else "disabled"
    for line in output.splitlines():
        line = line.strip()
        if line == f"{protocol}: {verb}":
            return Reply(protocol, enable, changed=True)
        if line == f"{protocol}: already {verb}":
            return Reply(protocol, enable, changed=False)
    said = " / ".join(line.strip() for line in output.splitlines() if line.strip() and "ready." not in line)
    raise BirdError(said or "no answer", where=f"birdc {'enable' if enable else 'disable'} {protocol}")
