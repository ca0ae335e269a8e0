"""http.decode driven with plain bytes: the chunked-body decoder behind the proxy's framer, and the
start of a response as the health checks and doctor read it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casarray.http.decode import ChunkedDecoder, ResponseStart
from casarray.http.errors import ProtocolError
from casarray.http.h1 import Body, End, ResponseReader

HEALTHY = b"200 OK<br/>MB1.ALWAYSHOTCAFE.COM"


def chunked(data: bytes, sizes: list[int], ext: bool = False, trailer: bool = False) -> bytes:
    """`data` framed in chunks of the given sizes (what is left goes in one more chunk)."""
    out: list[bytes] = []
    pos = 0
    for size in [*sizes, len(data)]:
        piece = data[pos : pos + size]
        pos += len(piece)
        if piece:
            out.append(
                f"{len(piece):x}".encode() + (b";name=value" if ext else b"") + b"\r\n" + piece + b"\r\n"
            )
        if pos >= len(data):
            break
    out.append(b"0\r\n" + (b"X-Trailer: yes\r\n" if trailer else b"") + b"\r\n")
    return b"".join(out)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@given(
    data=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 40), max_size=10),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    ext=st.booleans(),
    trailer=st.booleans(),
)
def test_decoder_gives_back_the_data_however_the_bytes_are_cut(
    data: bytes, sizes: list[int], cuts: list[int], ext: bool, trailer: bool
) -> None:
    raw = chunked(data, sizes, ext, trailer)
    decoder = ChunkedDecoder()
    assert b"".join(decoder.decode(piece) for piece in split(raw, cuts)) == data
    assert decoder.finished


@given(
    data=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 40), max_size=10),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    trailer=st.booleans(),
)
def test_decoder_behind_the_framer(data: bytes, sizes: list[int], cuts: list[int], trailer: bool) -> None:
    """What the proxy's Body events carry for a chunked response decodes to the body's data."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(data, sizes, True, trailer)
    reader = ResponseReader()
    decoder = ChunkedDecoder()
    decoded = b""
    ended = False
    for piece in split(raw, cuts):
        for event in reader.feed(piece):
            if isinstance(event, Body):
                decoded += decoder.decode(event.data)
            ended = ended or isinstance(event, End)
    assert ended
    assert decoder.finished
    assert decoded == data


def test_response_start_decodes_a_chunked_healthcheck_body() -> None:
    start = ResponseStart()
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(HEALTHY, [3, 7])
    for i in range(len(raw)):
        start.feed(raw[i : i + 1])
    assert start.done
    assert (start.status, start.body) == (200, HEALTHY)


def test_response_start_skips_interim_responses() -> None:
    start = ResponseStart()
    start.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n"
    )
    assert not start.done
    start.feed(b"Content-Length: 6\r\n\r\n200 OK")
    assert (start.done, start.status, start.body) == (True, 200, b"200 OK")


def test_response_start_stops_at_keep_bytes_of_a_chunked_body() -> None:
    start = ResponseStart(keep=10)
    assert start.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4\r\nabcd\r\n" * 3)
    assert start.body == b"abcdabcdab"


def test_response_start_cut_short_is_told() -> None:
    start = ResponseStart()
    start.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 34\r\n\r\n200 OK<br/>")
    start.eof()
    assert (start.done, start.cut_short, start.body) == (True, True, b"200 OK<br/>")
    whole = ResponseStart()
    whole.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n200 OK")
    whole.eof()
    assert (whole.done, whole.cut_short) == (True, False)


def test_response_start_ignores_bytes_after_done_and_headers_last_wins() -> None:
    start = ResponseStart()
    assert start.feed(b"HTTP/1.1 204 No Content\r\nX-FEServer: MB1\r\nX-FEServer: MB2\r\n\r\n")
    assert start.feed(b"\x00garbage")
    assert (start.status, start.header(b"x-feserver"), start.header(b"x-missing")) == (204, b"MB2", None)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01",  # a TLS record: refused from its first byte
        b"HTTX",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_response_start_refuses_what_the_proxy_refuses(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseStart().feed(raw)


def test_response_start_waits_on_a_partial_status_line() -> None:
    start = ResponseStart()
    assert not start.feed(b"HT")
    assert not start.feed(b"TP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError, match="closed before a response"):
        start.eof()
