"""The sans-I/O HTTP/1.1 framing, driven with plain bytes."""

from __future__ import annotations

import pytest

from casarray.http.errors import ProtocolError
from casarray.http.h1 import (
    CHUNKED,
    END,
    NO_BODY,
    UNTIL_CLOSE,
    Body,
    Event,
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    forward_block,
    serialize_head,
)


def body_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


def test_rpc_in_data_with_a_1gb_length_streams_in_pieces() -> None:
    reader = RequestReader()
    events = reader.feed(
        b"RPC_IN_DATA /rpc/rpcproxy.dll?mb1:6001 HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
        b"Content-Length: 1073741824\r\n\r\nabc"
    )
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.method == b"RPC_IN_DATA"
    assert head.length == 1073741824
    assert events[1:] == [Body(b"abc")]
    chunk = b"x" * 65536
    more = reader.feed(chunk)
    assert len(more) == 1
    assert more[0].data is chunk  # type: ignore[union-attr]  # zero copy when the whole read is body


def test_header_case_and_order_are_kept() -> None:
    raw = b"GET /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1\r\nHost: h.example.com\r\nMS-ASProtocolVersion: 14.1\r\nX-MS-PolicyKey: 1\r\ncontent-type: x\r\n\r\n"
    (head, end) = RequestReader().feed(raw)
    assert isinstance(head, RequestHead)
    assert head.headers == [
        (b"Host", b"h.example.com"),
        (b"MS-ASProtocolVersion", b"14.1"),
        (b"X-MS-PolicyKey", b"1"),
        (b"content-type", b"x"),
    ]
    assert end is END
    assert serialize_head(b"GET / HTTP/1.1", head.headers).split(b"\r\n")[1:5] == [
        b"Host: h.example.com",
        b"MS-ASProtocolVersion: 14.1",
        b"X-MS-PolicyKey: 1",
        b"content-type: x",
    ]


def test_chunked_body_is_passed_raw_and_ends_exactly() -> None:
    reader = RequestReader()
    raw = b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
    events: list[Event] = []
    wire = raw + body + b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n"
    for i, byte in enumerate(wire):
        events += reader.feed(bytes([byte]))
        if events and events[-1] is END:
            assert i == len(raw + body) - 1
            break
    assert reader.feed(wire[len(raw + body) :]) == []  # held while paused
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.length == CHUNKED
    assert body_of(events) == body
    (nxt, end) = reader.next_message()
    assert isinstance(nxt, RequestHead)
    assert end is END


def test_pipelined_requests_wait_for_next_message() -> None:
    reader = RequestReader()
    events = reader.feed(b"GET /a HTTP/1.1\r\nHost: x.y\r\n\r\nGET /b HTTP/1.1\r\nHost: x.y\r\n\r\n")
    assert [type(e).__name__ for e in events] == ["RequestHead", "End"]
    events = reader.next_message()
    assert isinstance(events[0], RequestHead)
    assert events[0].target == b"/b"


@pytest.mark.parametrize(
    ("raw", "status", "what"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            400,
            "more than one Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: -1\r\n\r\n", 400, "invalid Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 1x\r\n\r\n", 400, "invalid Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "transfer coding"),
        (b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "transfer coding"),
        (b"GET / HTTP/1.1\r\nHost : a.b\r\n\r\n", 400, "whitespace before the colon"),
        (b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", 400, "control character"),
        (b"GET / HTTP/1.1\r\nHost: a.b\r\nX: 1\r\n folded\r\n\r\n", 400, "folding"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
        (b"GET / HTTP/1.1\r\nHost: a.b\r\nHost: c.d\r\n\r\n", 400, "more than one Host"),
        (b"GET / HTTP/2.0\r\nHost: a.b\r\n\r\n", 505, "version"),
        (b"GET  / HTTP/1.1\r\nHost: a.b\r\n\r\n", 400, "request line"),
        (b"G@T / HTTP/1.1\r\nHost: a.b\r\n\r\n", 400, "request line"),
        (b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
        (
            b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            400,
            "CRLF after chunk",
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, status: int, what: str) -> None:
    with pytest.raises(ProtocolError) as info:
        RequestReader().feed(raw)
    assert info.value.status == status
    assert what in info.value.what


def test_http10_without_host_is_fine_and_closes() -> None:
    (head, _) = RequestReader().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert not head.keep_alive


def test_limits() -> None:
    limits = Limits(max_request_line=100, max_head=1000, max_headers=3)
    with pytest.raises(ProtocolError) as info:
        RequestReader(limits).feed(b"GET /" + b"a" * 200)
    assert info.value.status == 414
    with pytest.raises(ProtocolError) as info:
        RequestReader(limits).feed(b"GET / HTTP/1.1\r\nHost: a.b\r\nX: " + b"a" * 2000)
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        RequestReader(limits).feed(b"GET / HTTP/1.1\r\nHost: a.b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert info.value.status == 431


def test_keep_alive_rules() -> None:
    (a, _) = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: a.b\r\nConnection: close\r\n\r\n")
    (b, _) = RequestReader().feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert isinstance(a, RequestHead)
    assert isinstance(b, RequestHead)
    assert (a.keep_alive, b.keep_alive) == (False, True)


def test_expect_continue() -> None:
    (head, *_) = RequestReader().feed(
        b"POST /ews/ HTTP/1.1\r\nHost: a.b\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    assert isinstance(head, RequestHead)
    assert head.expect_continue


@pytest.mark.parametrize(
    ("field", "scheme"),
    [
        (b"Authorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==\r\n", b"ntlm"),
        (b"authorization:   Negotiate YIIHLgYGKwYBBQUCoIIHIjCCBx6g\r\n", b"negotiate"),
        (b"AUTHORIZATION: Basic dXNlcjpwYXNz\r\n", b"basic"),
        (b"Authorization: Bearer\r\n", b"bearer"),
        (b"Proxy-Authorization: NTLM TlRMTVNTUAABAAAA\r\n", b""),  # the proxy's, not the server's
        (b"X-Authorization: NTLM TlRMTVNTUAABAAAA\r\n", b""),
        (b"", b""),
    ],
)
def test_the_authorization_scheme_is_read_lower_cased(field: bytes, scheme: bytes) -> None:
    (head, _) = RequestReader().feed(b"GET /ews/ HTTP/1.1\r\nHost: a.b\r\n" + field + b"\r\n")
    assert isinstance(head, RequestHead)
    assert head.auth_scheme == scheme
    assert forward_block(head, frozenset()) == head.block  # read, never dropped


def test_response_framings() -> None:
    reader = ResponseReader()
    (head, body, end) = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-FEServer: MB1\r\n\r\nok")
    assert isinstance(head, ResponseHead)
    assert (head.status, head.length, body, end) == (200, 2, Body(b"ok"), END)
    assert head.headers[1] == (b"X-FEServer", b"MB1")

    reader = ResponseReader()
    reader.expect(b"HEAD")
    (head, end) = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert isinstance(head, ResponseHead)
    assert head.length == NO_BODY

    reader = ResponseReader()
    (cont, _) = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert isinstance(cont, ResponseHead)
    assert cont.status == 100
    (final, *_) = reader.next_message() + reader.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert isinstance(final, ResponseHead)
    assert final.length == NO_BODY

    reader = ResponseReader()
    (head, body) = reader.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert isinstance(head, ResponseHead)
    assert head.length == UNTIL_CLOSE
    assert not head.keep_alive
    assert reader.eof() == [END]


def test_mapi_pending_chunks_arrive_one_by_one() -> None:
    reader = ResponseReader()
    events = reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    for _ in range(3):
        assert reader.feed(b"9\r\nPENDING\r\n\r\n") == [Body(b"9\r\nPENDING\r\n\r\n")]
    assert reader.feed(b"0\r\n\r\n") == [Body(b"0\r\n\r\n"), END]


def test_truncated_message_is_an_error_on_eof() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError, match="middle of a message"):
        reader.eof()


def test_bad_responses_are_502() -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert info.value.status == 502
    with pytest.raises(ProtocolError) as info:
        ResponseReader().feed(b"SSH-2.0\r\n\r\n")
    assert info.value.status == 502


HOP = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"trailer"})


def test_forward_block_drops_hop_by_hop_lines_and_keeps_the_rest_byte_for_byte() -> None:
    raw = (
        b"GET /ews/x HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\nconnection: Keep-Alive\r\n"
        b"X-Odd:   spaced value  \r\nKeep-Alive: timeout=5\r\nAuthorization: NTLM TlRMTVNTUAAB\r\n\r\n"
    )
    (head, _) = RequestReader().feed(raw)
    assert isinstance(head, RequestHead)
    assert head.keep_alive
    assert head.connection == frozenset({b"keep-alive"})
    assert forward_block(head, HOP) == (
        b"\r\nHost: outlook.alwayshotcafe.com\r\nX-Odd:   spaced value  \r\n"
        b"Authorization: NTLM TlRMTVNTUAAB\r\n"
    )
    (plain, _) = RequestReader().feed(b"GET /ews/x HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\n")
    assert isinstance(plain, RequestHead)
    assert forward_block(plain, HOP) is plain.block  # nothing to drop: the received bytes themselves


def test_forward_block_drops_the_fields_connection_names() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: 1\r\nX-FEServer: MB1\r\n\r\n"
    reader = ResponseReader()
    reader.expect(b"HEAD")
    (head, _) = reader.feed(raw)
    assert isinstance(head, ResponseHead)
    assert not head.keep_alive
    assert forward_block(head, HOP) == b"\r\nX-FEServer: MB1\r\n"


def test_forward_block_of_a_head_without_fields() -> None:
    (head, _) = RequestReader().feed(b"GET /owa/ HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.block == b"\r\n"
    assert head.headers == []
    assert forward_block(head, HOP) == b"\r\n"


def test_status_line_is_forwarded_as_http11() -> None:
    for raw, line in (
        (b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK"),
        (b"HTTP/1.0 404 Not Found\r\n", b"HTTP/1.1 404 Not Found"),
        (b"HTTP/1.1 204\r\n", b"HTTP/1.1 204 "),
    ):
        (head, _) = ResponseReader().feed(raw + b"Content-Length: 0\r\n\r\n")
        assert isinstance(head, ResponseHead)
        assert head.line == line


@pytest.mark.parametrize(
    ("line", "method", "target", "version", "forwarded"),
    [
        (b"GET /owa/ HTTP/1.1", b"GET", b"/owa/", b"1.1", b"GET /owa/ HTTP/1.1"),
        (b"GET /owa/ HTTP/1.0", b"GET", b"/owa/", b"1.0", b"GET /owa/ HTTP/1.0"),
        (b"GET /owa/ HTTP/1.2", b"GET", b"/owa/", b"1.1", b"GET /owa/ HTTP/1.1"),
        (b"GET /owa/ HTTP/1.9", b"GET", b"/owa/", b"1.1", b"GET /owa/ HTTP/1.1"),
        (
            b"RPC_IN_DATA /rpc/rpcproxy.dll?a:6001 HTTP/1.1",
            b"RPC_IN_DATA",
            b"/rpc/rpcproxy.dll?a:6001",
            b"1.1",
            None,
        ),
        (b"X /\xc3\xa9 HTTP/1.1", b"X", b"/\xc3\xa9", b"1.1", None),  # obs-text in a target: passed on
        (b"GET * HTTP/1.1", b"GET", b"*", b"1.1", None),
        (b"A HTTP/1.1 HTTP/1.1", b"A", b"HTTP/1.1", b"1.1", None),
    ],
)
def test_request_lines_read(
    line: bytes, method: bytes, target: bytes, version: bytes, forwarded: bytes | None
) -> None:
    for _ in range(2):  # the second time from the memos
        (head, _) = RequestReader().feed(line + b"\r\nHost: a.b\r\n\r\n")
        assert isinstance(head, RequestHead)
        assert (head.method, head.target, head.version, head.line) == (
            method,
            target,
            version,
            forwarded or line,
        )


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/0.9", 505),
        (b"GET / HTTP/11.1", 400),
        (b"GET / HTTP/1.x", 400),
        (b"GET / HTTP/1.", 400),
        (b"GET / HTTP/1", 400),
        (b"GET / http/1.1", 400),
        (b"GET / HTTP/1.1 ", 400),
        (b" GET / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\t", 400),
        (b"GET /\ta HTTP/1.1", 400),
        (b"GET\t/ HTTP/1.1", 400),
        (b"GET /a\x01 HTTP/1.1", 400),
        (b"GET /a\x7f HTTP/1.1", 400),
        (b"GET /a\x00 HTTP/1.1", 400),
        (b"GET /a\rb HTTP/1.1", 400),
        (b"GET /a\nb HTTP/1.1", 400),
        (b"GET /a b HTTP/1.1", 400),
        (b"GET HTTP/1.1", 400),
        (b"GET  HTTP/1.1", 400),
        (b" / HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),
        (b"G\xc3\xa9T / HTTP/1.1", 400),
        (b"HTTP/1.1", 400),
        (b"", 400),
    ],
)
def test_bad_request_lines_are_refused(line: bytes, status: int) -> None:
    for _ in range(2):  # a bad method is memoised as bad
        with pytest.raises(ProtocolError) as info:
            RequestReader().feed(line + b"\r\nHost: a.b\r\n\r\n")
        assert info.value.status == status
        assert ("request line" if status == 400 else "not supported") in info.value.what


@pytest.mark.parametrize(
    ("line", "status", "reason", "version", "forwarded"),
    [
        (b"HTTP/1.1 200 OK", 200, b"OK", b"1.1", b"HTTP/1.1 200 OK"),
        (b"HTTP/1.1 599 Odd", 599, b"Odd", b"1.1", b"HTTP/1.1 599 Odd"),
        (b"HTTP/1.1 100 Continue", 100, b"Continue", b"1.1", b"HTTP/1.1 100 Continue"),
        (b"HTTP/1.1 404 ", 404, b"", b"1.1", b"HTTP/1.1 404 "),
        (b"HTTP/1.1 404", 404, b"", b"1.1", b"HTTP/1.1 404 "),
        (b"HTTP/1.1 200 A\tB \xe9", 200, b"A\tB \xe9", b"1.1", b"HTTP/1.1 200 A\tB \xe9"),
        (b"HTTP/1.0 200 OK", 200, b"OK", b"1.0", b"HTTP/1.1 200 OK"),
        (b"HTTP/1.2 200 OK", 200, b"OK", b"1.1", b"HTTP/1.1 200 OK"),
        (b"HTTP/2.0 200 OK", 200, b"OK", b"1.1", b"HTTP/1.1 200 OK"),
    ],
)
def test_status_lines_read(line: bytes, status: int, reason: bytes, version: bytes, forwarded: bytes) -> None:
    for _ in range(2):
        (head, *_) = ResponseReader().feed(line + b"\r\nContent-Length: 0\r\n\r\n")
        assert isinstance(head, ResponseHead)
        assert (head.status, head.reason, head.version, head.line) == (status, reason, version, forwarded)


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 099 Low",
        b"HTTP/1.1 000 Zero",
        b"HTTP/1.1 600 High",
        b"HTTP/1.1 999 High",
        b"HTTP/1.1 20 Short",
        b"HTTP/1.1 2000 Long",
        b"HTTP/1.1 2x0 Letter",
        b"HTTP/1.1 \xd9\xa200 Digit",  # not an ASCII digit
        b"HTTP/1.1  200 Two spaces",
        b"HTTP/1.1\t200 Tab",
        b"HTTP/1.1 200\tTab",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 O\x7fK",
        b"HTTP/1.1 200 O\rK",
        b"HTTP/1.1 200 O\nK",
        b"http/1.1 200 OK",
        b"HTTP/1 200 OK",
        b"HTTP/11.1 200 OK",
        b" HTTP/1.1 200 OK",
    ],
)
def test_bad_status_lines_are_502(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseReader().feed(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == 502
    assert "status line" in info.value.what


def test_a_header_problem_is_found_in_a_line_read_before() -> None:
    """Field lines are memoised once checked: a bad line is never, and a good one reads the same in any
    head; the head's other bytes are still checked each time."""
    good = b"GET / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 2\r\n\r\nab"
    for _ in range(2):
        (head, *_) = RequestReader().feed(good)
        assert isinstance(head, RequestHead)
        assert (head.host, head.length) == (b"a.b", 2)
    for bad, what in (
        (
            b"GET / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 2\r\nX\x01: 1\r\n\r\n",
            "invalid character in header name",
        ),
        (b"GET / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 2\r\n folded\r\n\r\n", "folding"),
        (b"GET / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"GET / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 2\nX: 1\r\n\r\n", "control character"),
    ):
        for _ in range(2):
            with pytest.raises(ProtocolError, match=what):
                RequestReader().feed(bad)
