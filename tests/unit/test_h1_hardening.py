"""The framer's defences: fields Connection may not name, responses it refuses, heads that arrive a byte
at a time, and request targets resolved before routing. Plain bytes, no sockets."""

from __future__ import annotations

import pytest

from casarray.http.errors import ProtocolError
from casarray.http.h1 import (
    END,
    MAX_INTERIM,
    PROTECTED,
    Body,
    Event,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
)
from casarray.http.target import normalize_target, remove_dot_segments


@pytest.mark.parametrize("field", sorted(PROTECTED))
def test_a_request_whose_connection_names_a_protected_field_is_refused(field: bytes) -> None:
    raw = (
        b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
        b"Connection: keep-alive, " + field.title() + b"\r\nContent-Length: 4\r\n\r\nabcd"
    )
    with pytest.raises(ProtocolError) as info:
        RequestReader().feed(raw)
    assert info.value.status == 400
    assert field.decode() in info.value.what


def test_connection_may_still_name_ordinary_fields() -> None:
    (head, _) = RequestReader().feed(
        b"GET /owa/ HTTP/1.1\r\nHost: a.b\r\nConnection: keep-alive, X-Private, TE\r\nX-Private: 1\r\n\r\n"
    )
    assert isinstance(head, RequestHead)
    assert head.connection == frozenset({b"keep-alive", b"x-private", b"te"})


@pytest.mark.parametrize("field", [b"content-length", b"transfer-encoding", b"Content-Length"])
def test_a_response_whose_connection_names_its_framing_is_refused(field: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nConnection: " + field + b"\r\nContent-Length: 2\r\n\r\nok")
    assert info.value.status == 502


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    ],
)
def test_ambiguous_or_impossible_responses_are_502(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseReader().feed(raw)
    assert info.value.status == 502


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /ews/ HTTP/1.1\r\nHost: a.b\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST /ews/ HTTP/1.1\r\nHost: a.b\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    ],
)
def test_a_repeated_content_length_is_refused_not_forwarded(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="more than one Content-Length"):
        RequestReader().feed(raw)


def test_interim_responses_are_bounded_per_request() -> None:
    reader = ResponseReader()
    reader.expect(b"POST")
    events: list[Event] = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)
    for _ in range(MAX_INTERIM - 1):
        assert isinstance(events[0], ResponseHead)
        assert events[1] is END
        events = reader.next_message()
    with pytest.raises(ProtocolError) as info:
        reader.next_message()
    assert info.value.status == 502
    reader = ResponseReader()
    reader.expect(b"POST")
    assert len(reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) == 2
    (final, _) = reader.next_message()
    assert isinstance(final, ResponseHead)
    assert final.status == 200


def test_a_head_arriving_a_byte_at_a_time_parses_like_a_whole_one() -> None:
    raw = (
        b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 500) for i in range(60))
        + b"Content-Length: 3\r\n\r\nabc"
    )
    whole = RequestReader().feed(raw)
    reader = RequestReader()
    events: list[Event] = []
    for i in range(len(raw)):
        events += reader.feed(raw[i : i + 1])
    assert isinstance(events[0], RequestHead)
    assert isinstance(whole[0], RequestHead)
    assert events[0].block == whole[0].block
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"abc"
    assert events[-1] is END


def test_limits_hold_when_the_head_arrives_a_byte_at_a_time() -> None:
    reader = RequestReader()
    for _ in range(16 * 1024):
        reader.feed(b"a")
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"a")
    assert info.value.status == 414
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: a.b\r\n")
    for _ in range(reader.buffered, 64 * 1024):
        reader.feed(b"X")
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"X")
    assert info.value.status == 431


def test_pipelined_bytes_held_a_byte_at_a_time_are_kept_in_order() -> None:
    reader = RequestReader()
    assert len(reader.feed(b"GET /owa/ HTTP/1.1\r\nHost: a.b\r\n\r\n")) == 2
    for byte in b"GET /ews/ HTTP/1.1\r\nHost: a.b\r\n\r\n":
        assert reader.feed(bytes([byte])) == []  # paused after End: held
    (second, _) = reader.next_message()
    assert isinstance(second, RequestHead)
    assert second.target == b"/ews/"


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        (b"/owa/../ecp/default.aspx", b"/ecp/default.aspx"),
        (b"/owa/%2e%2e/ecp/", b"/ecp/"),
        (b"/owa/%2E%2e/ecp/", b"/ecp/"),
        (b"/owa/.%2e/.%2E/oab/x", b"/oab/x"),
        (b"/owa/./auth/logon.aspx", b"/owa/auth/logon.aspx"),
        (b"/owa/%2e/x", b"/owa/x"),
        (b"/ews/..", b"/"),
        (b"/../../owa/", b"/owa/"),
        (b"/owa/x/..?q=/../ecp", b"/owa/?q=/../ecp"),
        (b"/owa/x.htm", b"/owa/x.htm"),
        (b"/owa/.well-known/x", b"/owa/.well-known/x"),
        (
            b"/Microsoft-Server-ActiveSync?User=CORP%5Cuser&Cmd=Ping",
            b"/Microsoft-Server-ActiveSync?User=CORP%5Cuser&Cmd=Ping",
        ),
    ],
)
def test_targets_are_normalised_before_routing(target: bytes, normal: bytes) -> None:
    assert normalize_target(target) == normal


def test_an_unchanged_target_is_the_same_object() -> None:
    target = b"/ews/Exchange.asmx?x=%41"
    assert normalize_target(target) is target


@pytest.mark.parametrize(
    "target", [b"/owa/..%2fecp/", b"/owa/..%2Fecp/", b"/owa/..%5cecp/", b"/owa\\..\\ecp/"]
)
def test_separators_a_server_could_read_differently_are_refused(target: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        normalize_target(target)
    assert info.value.status == 400


def test_remove_dot_segments_follows_rfc3986() -> None:
    # RFC 3986 §5.2.4 examples (absolute paths).
    assert remove_dot_segments(b"/a/b/c/./../../g") == b"/a/g"
    assert remove_dot_segments(b"/a/b/..") == b"/a/"
    assert remove_dot_segments(b"/a//b/../c") == b"/a//c"
    assert remove_dot_segments(b"/.") == b"/"
