"""Sans-I/O HTTP/1.1 message framing for a proxy: bytes in, events out. No sockets, no asyncio.

Why not llhttp (httptools) here: llhttp accepts only a fixed list of methods and rejects Outlook
Anywhere's RPC_IN_DATA / RPC_OUT_DATA ("Invalid method encountered"), which a proxy for Exchange must
pass through. So heads are parsed here with one C-level regex per block, and bodies are *framed*, not
decoded: body events carry the raw bytes as received (chunked encoding included), so a body streams
through with no per-chunk copy and no re-chunking. httptools still parses health-check responses.

Strictness follows RFC 9112: a request with both Content-Length and Transfer-Encoding, an invalid or
duplicated-and-different Content-Length, a transfer coding other than a final "chunked", whitespace
before a header colon, control characters in names or values, obsolete line folding, a missing or
repeated Host on HTTP/1.1, or a bad chunk size is refused (400, or 501 for an unknown transfer coding,
RFC 9112 §6.1) before anything of it is forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from casarray.http.errors import ProtocolError

Headers = list[tuple[bytes, bytes]]  # names and values exactly as received (case and order kept)

# RFC 9110 §5.6.2 token; §5.5 field values: visible chars, SP, HTAB, obs-text; no CTLs.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n")
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_DIGITS = re.compile(rb"[0-9]{1,19}")

NO_BODY: Final = -1
UNTIL_CLOSE: Final = -2
CHUNKED: Final = -3


@dataclass(slots=True)
class Limits:
    max_request_line: int = 16 * 1024  # longer → 414 (RFC 9112 §3)
    max_head: int = 64 * 1024  # request line + headers; larger → 431 (RFC 6585 §5). Kerberos tokens are big.
    max_headers: int = 100  # more → 431


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    keep_alive: bool
    length: int  # >= 0 Content-Length, CHUNKED, or NO_BODY
    host: bytes
    expect_continue: bool
    connection: frozenset[bytes]  # tokens of the Connection header, lower-cased (hop-by-hop names)


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    version: bytes
    headers: Headers
    keep_alive: bool
    length: int  # >= 0, CHUNKED, UNTIL_CLOSE or NO_BODY
    connection: frozenset[bytes]


@dataclass(slots=True)
class Body:
    data: bytes  # raw bytes of the body as framed on the wire (chunk headers included when chunked)


@dataclass(slots=True)
class End:
    """The message is complete. Bytes after it stay buffered until `next_message()`."""


END: Final = End()
Event = RequestHead | ResponseHead | Body | End


_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"})


def _scan(headers: Headers) -> dict[bytes, list[bytes]]:
    """The values of the fields that frame and route a message, by lower-cased name, in one pass."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        low = name.lower()
        if low in _FRAMING:
            found.setdefault(low, []).append(value)
    return found


def connection_tokens(values: list[bytes] | None) -> frozenset[bytes]:
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for value in values for t in value.split(b","))


def _keep_alive(version: bytes, tokens: frozenset[bytes]) -> bool:
    if version == b"1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens  # HTTP/1.0 closes unless asked (RFC 9112 §9.3)


def _parse_headers(block: bytes, limits: Limits) -> Headers:
    # One pass: the line matches must tile the whole block; a skipped byte means an invalid line.
    headers: Headers = []
    covered = 0
    for match in _HEADER_LINE.finditer(block):
        start, end = match.span()
        if start != covered:
            break
        covered = end
        headers.append((match.group(1), match.group(2)))
    if covered != len(block):
        raise ProtocolError(_header_problem(block))
    if len(headers) > limits.max_headers:
        raise ProtocolError(f"more than {limits.max_headers} header fields", 431)
    return headers


def _header_problem(block: bytes) -> str:
    for line in block.split(b"\r\n"):
        if not line or _HEADER_BLOCK.fullmatch(line + b"\r\n"):
            continue
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding in a header (RFC 9112 §5.2)"
        name, colon, _ = line.partition(b":")
        if not colon:
            return f"header line without a colon: {line[:40]!r}"
        if name != name.rstrip(b" \t"):
            return f"whitespace before the colon in header {name.strip()[:40]!r} (RFC 9112 §5.1)"
        if not re.fullmatch(_TOKEN, name):
            return f"invalid character in header name {name[:40]!r}"
        return f"control character in the value of header {name[:40]!r}"
    return "malformed header block"


def _content_length(values: list[bytes] | None) -> int | None:
    if not values:
        return None
    found: int | None = None
    for value in values:
        # A list "5, 5" or repeated fields with one value are tolerated (RFC 9110 §8.6); others are not.
        for part in value.split(b","):
            part = part.strip()
            if _DIGITS.fullmatch(part) is None:
                raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
            number = int(part)
            if found is not None and found != number:
                raise ProtocolError("conflicting Content-Length values")
            found = number
    return found


def _transfer_chunked(values: list[bytes] | None) -> bool | None:
    """True for "chunked", None when absent; any other coding is refused with 501."""
    if not values:
        return None
    codings = [c.strip().lower() for value in values for c in value.split(b",") if c.strip()]
    if codings != [b"chunked"]:
        raise ProtocolError(f"unsupported transfer coding {b', '.join(codings).decode('latin-1')!r}", 501)
    return True


class _Framer:
    """Shared machinery: head buffering, body framing (length, chunked, until close)."""

    __slots__ = ("_buf", "_chunk_left", "_chunk_state", "_in_body", "_left", "_length", "_paused", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = b""
        self._in_body = False
        self._paused = False
        self._length = NO_BODY
        self._left = 0
        self._chunk_state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._chunk_left = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Add bytes; return the events they complete. Stops after End until `next_message()`."""
        if self._buf:
            data = self._buf + data
        self._buf = b""
        return self._run(data)

    def next_message(self) -> list[Event]:
        """Go on with the bytes held after the previous End (pipelined requests)."""
        self._paused = False
        data, self._buf = self._buf, b""
        return self._run(data) if data else []

    def _run(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        pos = 0
        size = len(data)
        while pos < size and not self._paused:
            if not self._in_body:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._check_partial_head(data, pos)
                    self._buf = data[pos:]
                    return events
                head = data[pos : end + 2]
                pos = end + 4
                if len(head) > self.limits.max_head:
                    raise ProtocolError(f"header section larger than {self.limits.max_head} bytes", 431)
                event = self._head(head)
                events.append(event)
                if self._length == NO_BODY:
                    events.append(END)
                    self._paused = True
                else:
                    self._in_body = True
                    self._left = self._length
                    self._chunk_state = 0
                continue
            pos = self._body(data, pos, events)
        if pos < size:
            self._buf = data[pos:]
        return events

    def _check_partial_head(self, data: bytes, pos: int) -> None:
        pending = len(data) - pos
        if pending > self.limits.max_head:
            raise ProtocolError(f"header section larger than {self.limits.max_head} bytes", 431)
        line_end = data.find(b"\r\n", pos)
        if line_end < 0 and pending > self.limits.max_request_line:
            raise ProtocolError(f"request line longer than {self.limits.max_request_line} bytes", 414)

    def _head(self, head: bytes) -> Event:
        raise NotImplementedError

    def _body(self, data: bytes, pos: int, events: list[Event]) -> int:
        length = self._length
        if length >= 0:
            take = min(self._left, len(data) - pos)
            events.append(Body(data if pos == 0 and take == len(data) else data[pos : pos + take]))
            self._left -= take
            pos += take
            if self._left == 0:
                self._finish(events)
            return pos
        if length == UNTIL_CLOSE:
            events.append(Body(data if pos == 0 else data[pos:]))
            return len(data)
        return self._chunked(data, pos, events)

    def _chunked(self, data: bytes, pos: int, events: list[Event]) -> int:
        """Walk chunk boundaries (RFC 9112 §7.1) and emit the raw bytes unchanged."""
        start = pos
        size = len(data)
        while pos < size:
            state = self._chunk_state
            if state == 1:
                take = min(self._chunk_left, size - pos)
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_state = 2
                continue
            end = data.find(b"\r\n", pos)
            if end < 0:
                if size - pos > 4096:
                    raise ProtocolError("chunk size or trailer line too long")
                break  # keep the partial line for the next feed
            line = data[pos:end]
            pos = end + 2
            if state == 0:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
                self._chunk_left = int(match.group(1), 16)
                self._chunk_state = 1 if self._chunk_left else 3
            elif state == 2:
                if line:
                    raise ProtocolError("missing CRLF after chunk data")
                self._chunk_state = 0
            elif line:  # trailer field
                if _HEADER_BLOCK.fullmatch(line + b"\r\n") is None:
                    raise ProtocolError("malformed trailer field")
            else:
                if pos > start:
                    events.append(Body(data[start:pos]))
                self._finish(events)
                return pos
        if pos > start:
            events.append(Body(data if start == 0 and pos == size else data[start:pos]))
        if pos < size:
            # An incomplete size/CRLF/trailer line: hold it back (it is re-fed with the next bytes).
            self._buf = data[pos:]
            return size
        return pos

    def _finish(self, events: list[Event]) -> None:
        events.append(END)
        self._in_body = False
        self._paused = True

    def eof(self) -> list[Event]:
        """The peer closed its side. Completes a body delimited by close; mid-message is an error."""
        if self._in_body and self._length == UNTIL_CLOSE:
            events: list[Event] = []
            self._finish(events)
            return events
        if self._in_body or (self._buf and not self._paused):
            raise ProtocolError("connection closed in the middle of a message", 400)
        return []


class RequestReader(_Framer):
    """Reads requests sent by a client."""

    __slots__ = ()

    def _head(self, head: bytes) -> RequestHead:
        line_end = head.find(b"\r\n")
        line = head[:line_end]
        if len(line) > self.limits.max_request_line:
            raise ProtocolError(f"request line longer than {self.limits.max_request_line} bytes", 414)
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(f"malformed request line {line[:60]!r}")
        method, target, major, minor = match.groups()
        if major != b"1":
            raise ProtocolError(f"HTTP version {major.decode()}.{minor.decode()} not supported", 505)
        version = b"1.1" if minor != b"0" else b"1.0"
        headers = _parse_headers(head[line_end + 2 :], self.limits)
        fields = _scan(headers)
        hosts = fields.get(b"host", [])
        if len(hosts) > 1:
            raise ProtocolError("more than one Host header (RFC 9112 §3.2)")
        if not hosts and version == b"1.1":
            raise ProtocolError("missing Host header (RFC 9112 §3.2)")
        chunked = _transfer_chunked(fields.get(b"transfer-encoding"))
        content_length = _content_length(fields.get(b"content-length"))
        if chunked and content_length is not None:
            # Request smuggling vector (RFC 9112 §6.3 item 3): refuse instead of guessing.
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if chunked and version == b"1.0":
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
        self._length = CHUNKED if chunked else (content_length or NO_BODY)
        expect = fields.get(b"expect")
        tokens = connection_tokens(fields.get(b"connection"))
        return RequestHead(
            method,
            target,
            version,
            headers,
            _keep_alive(version, tokens),
            self._length,
            hosts[0] if hosts else b"",
            expect is not None and expect[0].lower() == b"100-continue",
            tokens,
        )


class ResponseReader(_Framer):
    """Reads responses sent by a server; `expect(method)` before each request tells how to frame it."""

    __slots__ = ("_method",)

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._method = b"GET"

    def expect(self, method: bytes) -> None:
        self._method = method

    def _head(self, head: bytes) -> ResponseHead:
        line_end = head.find(b"\r\n")
        match = _STATUS_LINE.fullmatch(head[:line_end])
        if match is None:
            raise ProtocolError(f"malformed status line {head[:60]!r}", 502)
        major, minor, status_text, reason = match.groups()
        status = int(status_text)
        version = b"1.1" if (major, minor) != (b"1", b"0") else b"1.0"
        try:
            headers = _parse_headers(head[line_end + 2 :], self.limits)
        except ProtocolError as exc:
            raise ProtocolError(f"bad response header: {exc.what}", 502) from None
        fields = _scan(headers)
        tokens = connection_tokens(fields.get(b"connection"))
        keep_alive = _keep_alive(version, tokens)
        # RFC 9112 §6.3: HEAD, 1xx, 204 and 304 responses have no body, whatever their headers say.
        if self._method == b"HEAD" or status < 200 or status in (204, 304):
            length = NO_BODY
        else:
            try:
                chunked = _transfer_chunked(fields.get(b"transfer-encoding"))
                content_length = _content_length(fields.get(b"content-length"))
            except ProtocolError as exc:
                raise ProtocolError(f"bad response framing: {exc.what}", 502) from None
            if chunked:
                length = CHUNKED
            elif content_length is not None:
                length = content_length if content_length > 0 else NO_BODY
            else:
                length = UNTIL_CLOSE
                keep_alive = False
        self._length = length
        return ResponseHead(status, reason or b"", version, headers, keep_alive, length, tokens)


def serialize_head(first_line: bytes, headers: Headers) -> bytes:
    """A head ready for the wire; names and values written as given (case kept)."""
    parts = [first_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
