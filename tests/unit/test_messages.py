"""The supervisor <-> worker messages (engine/messages.py): every one survives its JSON line, and a
malformed line is refused with ValueError instead of reaching a worker as a half-typed dict."""

import pytest

from casarray.engine.counters import Counters, ServerCounters
from casarray.engine.messages import (
    Drain,
    Drained,
    Health,
    Message,
    Ready,
    Retire,
    Serve,
    SetOperator,
    Stats,
    decode,
    encode,
)

EVERY_MESSAGE: list[Message] = [
    Health("ex1", "owa", up=False, checked=True, code="L7STS", reason="HTTP 503"),
    Health("ex2", "imap:993", up=True, checked=False, code="", reason=""),
    SetOperator("ex1", None, "maint"),
    SetOperator("ex1", "ews", "drain"),
    Serve(),
    Retire(),
    Drain(0),
    Drain(2.5, "more than 3 generations draining"),
    Ready(),
    Stats(Counters()),
    Stats(
        Counters(
            3,
            40,
            2,
            1,
            5,
            {"owa": {"2xx": 30, "5xx": 1}},
            {"ex1": ServerCounters(1, 4, 30, 9, 99, 2, {"owa": 7})},
        )
    ),
    Drained(4, 12.25, 7, 0, "hard stop after 1h (timeouts.hard_stop_after)"),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one message, one line
    assert decode(line) == message


def test_the_wire_names_each_message() -> None:
    assert encode(Serve()) == b'{"op": "serve"}\n'
    assert encode(Drain(1, None)) == b'{"op": "drain", "grace": 1, "why": null}\n'
    assert decode(b'{"op": "drain", "grace": 1}') == Drain(1.0)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": "launch"}',
        b'{"grace": 1}',
        b'{"op": "drain"}',
        b'{"op": "drain", "grace": "soon"}',
        b'{"op": "drain", "grace": true}',
        b'{"op": "health", "server": "ex1", "service": "owa", "up": 1, "checked": true, "code": "", "reason": ""}',
        b'{"op": "operator", "server": "ex1", "service": 3, "state": "maint"}',
        b'{"op": "stats", "counters": {"clients": "many"}}',
        b'{"op": "drained", "number": 1, "seconds": 1, "held": 1.5, "closed": 0, "why": ""}',
    ],
)
def test_malformed_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's, or ours naming the field
        decode(line)
