"""Property tests of the HTTP/1.1 framer (hypothesis). In `make test` a short pass; `make fuzz` runs the
same properties far longer (marker `fuzz`).

Properties:
- any bytes give events or a ProtocolError carrying an HTTP status, never another exception;
- the events do not depend on how the bytes were split into reads (TLS records);
- what the proxy forwards of an accepted request is framed the same way by the next hop: same method,
  target, Host and body length — the property request smuggling breaks.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casarray.engine.l7 import _SKIP_REQUEST
from casarray.http import h1
from casarray.http.errors import ProtocolError
from casarray.http.h1 import (
    END,
    Body,
    Event,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    forward_block,
)
from casarray.http.target import normalize_target

NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"Keep-Alive",
    b"TE",
    b"Upgrade",
    b"Trailer",
    b"X-Forwarded-For",
    b"Forwarded",
    b"X-Real-IP",
    b"Authorization",
    b"Cookie",
    b"content-length",
    b"transfer-encoding",
    b"X-Pad",
]
VALUES = [
    b"outlook.alwayshotcafe.com",
    b"0",
    b"5",
    b"5, 5",
    b"-1",
    b"+5",
    b"0x5",
    b"99999999999999999999",
    b"chunked",
    b"chunked, identity",
    b"gzip, chunked",
    b" chunked",
    b"keep-alive",
    b"close",
    b"content-length",
    b"Content-Length, close",
    b"transfer-encoding",
    b"host",
    b"x-forwarded-for",
    b"100-continue",
    b"NTLM TlRMTVNTUAABAAAAB4IIog==",
    b"a\x00b",
    b"a\rb",
    b"",
]
METHODS = [b"GET", b"POST", b"HEAD", b"RPC_IN_DATA", b"PROPFIND", b"CONNECT", b"G ET", b""]
TARGETS = [b"/owa/", b"/ews/Exchange.asmx", b"/owa/../ecp/", b"/owa/%2e%2e/x", b"*", b"http://a/b", b"/a b"]
BODIES = [
    b"",
    b"abcde",
    b"5\r\nabcde\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b"zz\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
]

header = st.tuples(
    st.sampled_from(NAMES), st.sampled_from([b": ", b":", b" : ", b":\t"]), st.sampled_from(VALUES)
)
request = st.builds(
    lambda method, target, version, headers, body: (
        method
        + b" "
        + target
        + b" HTTP/"
        + version
        + b"\r\n"
        + b"".join(n + sep + v + b"\r\n" for n, sep, v in headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from(METHODS),
    st.sampled_from(TARGETS),
    st.sampled_from([b"1.1", b"1.0", b"1.2", b"2.0"]),
    st.lists(header, max_size=6),
    st.sampled_from(BODIES),
)
splits = st.lists(st.integers(min_value=1, max_value=64), max_size=20)
response = st.builds(
    lambda status, headers, body: (
        b"HTTP/1.1 "
        + status
        + b" X\r\n"
        + b"".join(n + sep + v + b"\r\n" for n, sep, v in headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from([b"100", b"101", b"200", b"204", b"304", b"401", b"000", b"999"]),
    st.lists(header, max_size=5),
    st.sampled_from(BODIES),
)


def run(reader: RequestReader | ResponseReader, data: bytes, sizes: list[int]) -> list[Event]:
    """Feed `data` in pieces of `sizes` (then the rest), following every End like the proxy does."""
    events: list[Event] = []
    pos = 0
    for size in [*sizes, len(data)]:
        piece = data[pos : pos + size]
        pos += len(piece)
        if piece:
            events += reader.feed(piece)
        while events and events[-1] is END and reader.buffered:
            more = reader.next_message()
            if not more:
                break
            events += more
    return events


def summary(events: list[Event]) -> list[object]:
    out: list[object] = []
    body = b""
    for event in events:
        if isinstance(event, Body):
            body += event.data
            continue
        if body:
            out.append(body)
            body = b""
        if isinstance(event, RequestHead):
            out.append((event.method, event.target, event.host, event.length, event.block))
        elif isinstance(event, ResponseHead):
            out.append((event.status, event.length, event.block))
        else:
            out.append("end")
    if body:
        out.append(body)
    return out


def outcome(make: type[RequestReader] | type[ResponseReader], data: bytes, sizes: list[int]) -> object:
    try:
        return summary(run(make(), data, sizes))
    except ProtocolError as exc:
        status = exc.status
    assert 400 <= status <= 505
    return "refused"


def check_split_invariance(
    make: type[RequestReader] | type[ResponseReader], data: bytes, sizes: list[int]
) -> None:
    whole = outcome(make, data, [])
    split = outcome(make, data, sizes)
    if whole == "refused" or split == "refused":
        # Split reads may stop before the bytes that are refused; they never accept something else.
        assert whole == "refused" or split == whole
        return
    assert split == whole


def check_forwarded_framing(data: bytes) -> None:
    try:
        events = RequestReader().feed(data)
    except ProtocolError:
        return
    if not events or not isinstance(events[0], RequestHead):
        return
    head = events[0]
    try:
        target = normalize_target(head.target) if head.target.startswith(b"/") else head.target
    except ProtocolError:
        return
    forwarded = head.line + forward_block(head, _SKIP_REQUEST) + b"X-Forwarded-For: 192.0.2.1\r\n\r\n"
    (again, *_) = RequestReader().feed(forwarded)
    assert isinstance(again, RequestHead)
    assert (again.method, again.target, again.host, again.length) == (
        head.method,
        head.target,
        head.host,
        head.length,
    )
    if target.startswith(b"/"):  # no dot-segment survives normalisation
        assert not {b".", b".."} & set(target.split(b"?")[0].split(b"/"))


SHORT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=50_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SHORT
@given(request, splits)
def test_requests_frame_the_same_however_they_are_split(data: bytes, sizes: list[int]) -> None:
    check_split_invariance(RequestReader, data, sizes)


@SHORT
@given(response, splits)
def test_responses_frame_the_same_however_they_are_split(data: bytes, sizes: list[int]) -> None:
    check_split_invariance(ResponseReader, data, sizes)


@SHORT
@given(request)
def test_what_is_forwarded_is_framed_the_same_by_the_next_hop(data: bytes) -> None:
    check_forwarded_framing(data)


@SHORT
@given(st.binary(max_size=300), splits)
def test_arbitrary_bytes_are_events_or_a_protocol_error(data: bytes, sizes: list[int]) -> None:
    outcome(RequestReader, data, sizes)
    outcome(ResponseReader, data, sizes)


@pytest.mark.fuzz
@LONG
@given(request, splits)
def test_fuzz_requests(data: bytes, sizes: list[int]) -> None:
    check_split_invariance(RequestReader, data, sizes)
    check_forwarded_framing(data)


@pytest.mark.fuzz
@LONG
@given(response, splits)
def test_fuzz_responses(data: bytes, sizes: list[int]) -> None:
    check_split_invariance(ResponseReader, data, sizes)


@pytest.mark.fuzz
@LONG
@given(st.binary(max_size=2000), splits)
def test_fuzz_arbitrary_bytes(data: bytes, sizes: list[int]) -> None:
    outcome(RequestReader, data, sizes)
    outcome(ResponseReader, data, sizes)


# The request and status lines are read by slicing where they are the usual HTTP/1.1 or 1.0 ones, and
# by the regexes otherwise: wherever the fast reading accepts a line, it reads what the regex reads.
LINE_BYTES = st.sampled_from(
    [
        b"GET",
        b"RPC_IN_DATA",
        b"/owa/",
        b" ",
        b"\t",
        b"HTTP/",
        b"1",
        b"0",
        b".",
        b"2",
        b"9",
        b"x",
        b"@",
        b"\xe9",
        b"\x00",
        b"\x7f",
        b"\r",
        b"\n",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b"HTTP/1.1 ",
        b"200",
        b"099",
        b"600",
        b" OK",
    ]
)
line_pieces = st.lists(LINE_BYTES, max_size=8).map(b"".join)


@SHORT
@given(line_pieces)
def test_the_fast_request_line_reads_as_the_regex(line: bytes) -> None:
    if not h1._clean(line):
        return
    method, target, version = h1._request_line(line)
    if not method:
        return
    assert h1._request_line_slowly(line) == (method, target, version, line)


@SHORT
@given(line_pieces)
def test_the_fast_status_line_reads_as_the_regex(line: bytes) -> None:
    if not h1._clean(line):
        return
    status, reason = h1._status_line(line)
    if not status:
        return
    assert h1._status_line_slowly(line, line) == (status, reason, b"1.1", line)
