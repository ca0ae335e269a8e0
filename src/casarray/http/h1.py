"""Sans-I/O HTTP/1.1 message framing for a proxy: bytes in, events out. No sockets, no asyncio.

Why not llhttp (httptools) here: llhttp accepts only a fixed list of methods and rejects Outlook
Anywhere's RPC_IN_DATA / RPC_OUT_DATA ("Invalid method encountered"), which a proxy for Exchange must
pass through. So heads are parsed here: one C-level pass over a head's bytes, slices for its first line
(the regexes read only unusual ones), a memo lookup per field line; and bodies are *framed*, not
decoded: body events carry the raw bytes as received (chunked encoding included), so a body streams
through with no per-chunk copy and no re-chunking. The health checks and doctor read responses with this
framer too (http/decode.py strips the chunk framing for them).

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
_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]"  # a field-value byte (SP and HTAB included)
_VCHAR = rb"[^\x00-\x20\x7f]"  # a value byte that is not whitespace
# One field line; the value without the optional whitespace around it (greedy, then one step back:
# no per-byte backtracking).
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:" + _VALUE + rb"*" + _VCHAR + rb")?)[ \t]*\r\n")
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":" + _VALUE + rb"*\r\n)*")
# Bytes a field line may hold besides its CRLF: a value's (visible chars, SP, HTAB, obs-text, RFC 9110
# §5.5), which include a name's. Deleting them from a valid block leaves its CRLFs and nothing else.
_FIELD_BYTES: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
_NAME: Final = re.compile(_TOKEN)
# The same bytes as a translation table: each to itself, any other byte (a control character, a bare CR
# or LF) to a space, which it never is: translate() changes a head's bytes (CRLFs taken out) exactly
# when one of them may not be in a head. A table, not deleted bytes: compiled, one C loop, no set-up.
_FIELD_TABLE: Final = bytes(c if c in _FIELD_BYTES else 0x20 for c in range(256))
# The fields a proxy reads (framing, routing, connection-bound authentication) or drops (hop-by-hop,
# forwarding), by lower-cased name.
SPECIAL: Final = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"expect",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
        b"authorization",
    }
)
# Field names as received, checked already: each one's lower-cased form when it is in SPECIAL, else b"".
# Names repeat from message to message, so most lines cost one dict lookup; cleared when full.
_NAMES: Final[dict[bytes, bytes]] = {}
_NAMES_SIZE: Final = 512
# Whole field lines as received, checked already: (name, value) as in a Field when the name is in
# SPECIAL, else (b"", b""). A server's and a client's lines repeat from message to message (Server,
# Content-Type, Host, Connection...): most cost one dict lookup. Short lines only; cleared when full.
_LINES: Final[dict[bytes, tuple[bytes, bytes]]] = {}
_LINES_SIZE: Final = 1024
_LINE_MEMO_MAX: Final = 128
# The tokens of a Connection field by its value (lower-cased and trimmed). Cleared when full.
_TOKENS: Final[dict[bytes, frozenset[bytes]]] = {}
_TOKENS_SIZE: Final = 64
# Request methods checked already (a token, RFC 9110 §9.1): they repeat. Cleared when full.
_METHODS: Final[dict[bytes, bool]] = {}
_METHODS_SIZE: Final = 64
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) ([1-5]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_DIGITS = re.compile(rb"[0-9]{1,19}")

# Fields a Connection header may never name. RFC 9110 §7.6.1 has a proxy drop the fields Connection
# lists, and lets it refuse the message instead: dropping one of these would change the framing
# (Content-Length, Transfer-Encoding: the body would reach the server as a second, unchecked request),
# where the message goes (Host) or what the proxy says about the client (the forwarding fields).
PROTECTED: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
    }
)
MAX_INTERIM: Final = 8  # 1xx responses relayed before one final response; more is a broken server

NO_BODY: Final = -1
UNTIL_CLOSE: Final = -2
CHUNKED: Final = -3


@dataclass(slots=True)
class Limits:
    max_request_line: int = 16 * 1024  # longer → 414 (RFC 9112 §3)
    max_head: int = 64 * 1024  # request line + headers; larger → 431 (RFC 6585 §5). Kerberos tokens are big.
    max_headers: int = 100  # more → 431


# A field the proxy reads or may drop: lower-cased name, value (lower-cased, trimmed), and the span of
# its line in the block, CRLF before it included: block[start:end] == b"\r\nName: value".
Field = tuple[bytes, bytes, int, int]


# The per-message classes are plain classes, not dataclasses: compiled, a dataclass's __init__ is still
# the Python function dataclasses generates, and these are made for every message.
class RequestHead:
    __slots__ = (
        "auth_scheme",
        "block",
        "connection",
        "expect_continue",
        "fields",
        "host",
        "keep_alive",
        "length",
        "line",
        "method",
        "target",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        line: bytes,
        block: bytes,
        fields: list[Field],
        keep_alive: bool,
        length: int,
        host: bytes,
        expect_continue: bool,
        connection: frozenset[bytes],
        auth_scheme: bytes,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version  # b"1.1" or b"1.0"
        self.line = line  # the request line, with the version as `version` says
        self.block = block  # b"\r\n" + the header lines exactly as received, each ending in CRLF
        self.fields = fields
        self.keep_alive = keep_alive
        self.length = length  # >= 0 Content-Length, CHUNKED, or NO_BODY
        self.host = host  # lower-cased
        self.expect_continue = expect_continue
        self.connection = connection  # tokens of the Connection header, lower-cased (hop-by-hop names)
        # the scheme of the Authorization field, lower-cased ("ntlm", "basic"); b"" if none
        self.auth_scheme = auth_scheme

    @property
    def headers(self) -> Headers:
        """Every field as (name, value), case and order as received."""
        return _HEADER_LINE.findall(self.block, 2)


class ResponseHead:
    __slots__ = (
        "block",
        "connection",
        "fields",
        "keep_alive",
        "length",
        "line",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        line: bytes,
        block: bytes,
        fields: list[Field],
        keep_alive: bool,
        length: int,
        connection: frozenset[bytes],
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.line = line  # the status line as an HTTP/1.1 proxy sends it on
        self.block = block  # as in RequestHead
        self.fields = fields
        self.keep_alive = keep_alive
        self.length = length  # >= 0, CHUNKED, UNTIL_CLOSE or NO_BODY
        self.connection = connection

    @property
    def headers(self) -> Headers:
        return _HEADER_LINE.findall(self.block, 2)


Head = RequestHead | ResponseHead


class Body:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data  # raw bytes of the body as framed on the wire (chunk headers included when chunked)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Body) and other.data == self.data

    def __repr__(self) -> str:
        return f"Body({self.data!r})"


class End:
    """The message is complete. Bytes after it stay buffered until `next_message()`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END: Final = End()
Event = RequestHead | ResponseHead | Body | End


_NO_TOKENS: Final[frozenset[bytes]] = frozenset()


def _parse_block(block: bytes, limits: Limits) -> tuple[list[Field], dict[bytes, list[bytes]]]:
    """Validate a header block (b"\r\n" + lines, each ending in CRLF) and find the fields a proxy acts
    on: `_fields` over its lines, which checks every byte of each line it has not seen before."""
    return _fields(block, block.split(b"\r\n"), limits)


def _clean(line: bytes) -> bool:
    """Whether a line of a head (split at its CRLFs) holds only bytes a head may hold (_FIELD_BYTES):
    every byte outside them would be a control character, a bare CR or LF (RFC 9112 §2.2) or a NUL
    (RFC 9110 §5.5). The first line is checked so, and a field line when `_fields` has not seen it
    before (the lines it memoises were checked)."""
    return line.translate(_FIELD_TABLE) == line


def _fields(block: bytes, lines: list[bytes], limits: Limits) -> tuple[list[Field], dict[bytes, list[bytes]]]:
    """The fields a proxy acts on, from a block split at its CRLFs (`lines[1:-1]` its field lines): one
    step per line, a dict lookup for a line or a name seen before. A line not seen before is checked
    for bytes a head may not hold (`_clean`: a control character, a bare CR or LF), and refused with
    what is wrong with the block; so is a name that is not a token right up to its colon."""
    fields: list[Field] = []
    values: dict[bytes, list[bytes]] = {}
    start = 0  # where the CRLF before the line is
    for i in range(1, len(lines) - 1):
        line = lines[i]
        known = _LINES.get(line)
        if known is None:
            if not _clean(line):
                raise ProtocolError(_header_problem(block[2:]))
            name, colon, rest = line.partition(b":")
            special = _NAMES.get(name) if colon else None
            if special is None:
                # A name is a token right up to its colon: no whitespace before the colon (RFC 9112
                # §5.1), no obsolete line folding (a line that starts with SP or HTAB, §5.2).
                if not colon or _NAME.fullmatch(name) is None:
                    raise ProtocolError(_header_problem(block[2:]))
                lowered = name.lower()
                special = lowered if lowered in SPECIAL else b""
                if len(_NAMES) >= _NAMES_SIZE:
                    _NAMES.clear()
                _NAMES[name] = special
            # The value without the optional whitespace around it (RFC 9110 §5.5), lower-cased.
            value = rest.strip(b" \t").lower() if special else b""
            if len(line) <= _LINE_MEMO_MAX:
                if len(_LINES) >= _LINES_SIZE:
                    _LINES.clear()
                _LINES[line] = (special, value)
        else:
            special, value = known
        end = start + 2 + len(line)
        if special:
            fields.append((special, value, start, end))
            found = values.get(special)
            if found is None:
                values[special] = [value]
            else:
                found.append(value)
        start = end
    if len(lines) - 2 > limits.max_headers:
        raise ProtocolError(f"more than {limits.max_headers} header fields", 431)
    return fields, values


def connection_tokens(values: list[bytes] | None) -> frozenset[bytes]:
    """The lower-cased tokens of Connection fields (values already lower-cased and trimmed); those of
    one field from a memo (its value is most often "keep-alive" or "close")."""
    if not values:
        return _NO_TOKENS
    if len(values) > 1:
        return frozenset(t.strip() for value in values for t in value.split(b","))
    value = values[0]
    tokens = _TOKENS.get(value)
    if tokens is None:
        tokens = frozenset(t.strip() for t in value.split(b",")) if 44 in value else frozenset(values)
        if len(value) <= _LINE_MEMO_MAX:
            if len(_TOKENS) >= _TOKENS_SIZE:
                _TOKENS.clear()
            _TOKENS[value] = tokens
    return tokens


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


def _check_connection(tokens: frozenset[bytes], status: int) -> None:
    if tokens and not tokens.isdisjoint(PROTECTED):
        names = ", ".join(sorted(t.decode("latin-1") for t in tokens & PROTECTED))
        raise ProtocolError(
            f"Connection names {names}, which would change the message's framing or routing", status
        )


def _keep_alive(version: bytes, tokens: frozenset[bytes]) -> bool:
    if version == b"1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens  # HTTP/1.0 closes unless asked (RFC 9112 §9.3)


def _content_length(values: list[bytes] | None) -> int | None:
    if not values:
        return None
    value = values[0]
    if len(values) == 1 and 0 < len(value) <= 19:
        # Digits read one by one rather than isdigit() and int(): compiled, a loop that calls nothing.
        number = 0
        for i in range(len(value)):
            digit = value[i] - 48
            if not 0 <= digit <= 9:
                break
            number = number * 10 + digit
        else:
            return number
    if len(values) > 1 or b"," in values[0]:
        # RFC 9110 §8.6 lets a recipient refuse a repeated or listed Content-Length instead of picking
        # one value; no Exchange client or server sends one, and forwarding it could be read otherwise.
        raise ProtocolError("more than one Content-Length value")
    raise ProtocolError(f"invalid Content-Length {values[0][:40]!r}")


def _transfer_chunked(values: list[bytes] | None) -> bool | None:
    """True for "chunked", None when absent; any other coding is refused with 501."""
    if not values:
        return None
    if values == [b"chunked"]:
        return True
    codings = [c.strip().lower() for value in values for c in value.split(b",") if c.strip()]
    if codings != [b"chunked"]:
        raise ProtocolError(f"unsupported transfer coding {b', '.join(codings).decode('latin-1')!r}", 501)
    return True


_NO_REQUEST_LINE: Final = (b"", b"", b"")
_NO_STATUS_LINE: Final = (0, b"")


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """Method, target and version ("1.1" or "1.0") of a request line `_REQUEST_LINE` reads as HTTP/1.1
    or HTTP/1.0, a line `_clean` passed; empty for any other line: `_request_line_slowly` reads
    or refuses those. Slices and a method memo instead of the regex and its groups."""
    n = len(line)
    if n < 12:
        return _NO_REQUEST_LINE
    tail = line[n - 9 :]
    if tail == b" HTTP/1.1":
        version = b"1.1"
    elif tail == b" HTTP/1.0":
        version = b"1.0"
    else:
        return _NO_REQUEST_LINE
    method, _, target = line[: n - 9].partition(b" ")
    # The target: one or more bytes, no SP or HTAB (_clean refused every other control character).
    if not target or 32 in target or 9 in target:
        return _NO_REQUEST_LINE
    token = _METHODS.get(method)
    if token is None:
        token = _NAME.fullmatch(method) is not None
        if len(_METHODS) >= _METHODS_SIZE:
            _METHODS.clear()
        _METHODS[method] = token
    return (method, target, version) if token else _NO_REQUEST_LINE


def _request_line_slowly(line: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Method, target, version and the line as forwarded, read by `_REQUEST_LINE`; refused when it is
    not a request line (400) or not HTTP/1 (505)."""
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"malformed request line {line[:60]!r}")
    method, target, major, minor = match.groups()
    if major != b"1":
        raise ProtocolError(f"HTTP version {major.decode()}.{minor.decode()} not supported", 505)
    version = b"1.1" if minor != b"0" else b"1.0"
    if minor > b"1":  # HTTP/1.2 and later minor versions are spoken as 1.1 (RFC 9110 §2.5)
        line = method + b" " + target + b" HTTP/1.1"
    return method, target, version, line


def _status_line(line: bytes) -> tuple[int, bytes]:
    """Status and reason of an "HTTP/1.1 ddd reason" line (status 100-599, the reason possibly empty),
    a line `_clean` passed; status 0 for any other line: `_status_line_slowly` reads or refuses
    those. Bytes compared as numbers instead of the regex, its groups and int()."""
    if len(line) < 13 or not line.startswith(b"HTTP/1.1 ") or line[12] != 32:
        return _NO_STATUS_LINE
    hundreds, tens, units = line[9], line[10], line[11]
    if not (49 <= hundreds <= 53 and 48 <= tens <= 57 and 48 <= units <= 57):  # [1-5][0-9][0-9]
        return _NO_STATUS_LINE
    return (hundreds - 48) * 100 + (tens - 48) * 10 + units - 48, line[13:]


def _status_line_slowly(line: bytes, head: bytes) -> tuple[int, bytes, bytes, bytes]:
    """Status, reason, version and the line as forwarded (as HTTP/1.1), read by `_STATUS_LINE`;
    refused (502) when it is not a status line."""
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"malformed status line {head[:60]!r}", 502)
    major, minor, status_text, reason = match.groups()
    version = b"1.1" if (major, minor) != (b"1", b"0") else b"1.0"
    if minor != b"1" or major != b"1" or reason is None:
        line = b"HTTP/1.1 " + status_text + b" " + (reason or b"")
    return int(status_text), reason or b"", version, line


class _Framer:
    """Shared machinery: head buffering, body framing (length, chunked, until close)."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_chunk_state",
        "_in_body",
        "_left",
        "_length",
        "_paused",
        "_scanned",
        "limits",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = bytearray()  # bytes held: a partial head or line, or what follows an End
        self._scanned = 0  # how much of a partial head in _buf was searched for its end already
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
        buf = self._buf
        if not buf:
            return self._run(data)
        buf += data  # appended in place: bytes arriving a few at a time cost linear time in total
        if self._paused:
            return []  # held until next_message()
        # Only the new bytes (and the three before them) can complete a head: a head sent one byte per
        # TLS record is searched once overall, not once per record (that was quadratic).
        if not self._in_body and buf.find(b"\r\n\r\n", self._scanned) < 0:
            self._check_partial_head(buf)
            self._scanned = max(len(buf) - 3, 0)
            return []
        self._buf = bytearray()
        return self._run(bytes(buf))

    def next_message(self) -> list[Event]:
        """Go on with the bytes held after the previous End (pipelined requests)."""
        self._paused = False
        if not self._buf:
            return []
        data = bytes(self._buf)
        self._buf = bytearray()
        return self._run(data)

    def _hold(self, data: bytes, pos: int) -> None:
        self._buf = bytearray(memoryview(data)[pos:])
        self._scanned = 0

    def _run(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        pos = 0
        size = len(data)
        while pos < size and not self._paused:
            if not self._in_body:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._hold(data, pos)
                    self._check_partial_head(self._buf)
                    self._scanned = max(size - pos - 3, 0)
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
            self._hold(data, pos)
        return events

    def _check_partial_head(self, pending: bytearray) -> None:
        if len(pending) > self.limits.max_head:
            raise ProtocolError(f"header section larger than {self.limits.max_head} bytes", 431)
        limit = self.limits.max_request_line
        # Scans at most the first line's worth: found early (the usual case) or refused.
        if len(pending) > limit and pending.find(b"\r\n", 0, limit + 2) < 0:
            raise ProtocolError(f"request line longer than {limit} bytes", 414)

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
            self._hold(data, pos)
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
        limits = self.limits
        lines = head.split(b"\r\n")
        line = lines[0]
        if len(line) > limits.max_request_line:
            raise ProtocolError(f"request line longer than {limits.max_request_line} bytes", 414)
        block = head[len(line) :]
        method, target, version = _request_line(line) if _clean(line) else _NO_REQUEST_LINE
        if method:
            fields, values = _fields(block, lines, limits)
        else:
            # Not the usual head: the line read by its regex, the block checked on its own, either
            # refused with what is wrong with it.
            method, target, version, line = _request_line_slowly(line)
            fields, values = _parse_block(block, limits)
        hosts = values.get(b"host")
        if hosts is None:
            if version == b"1.1":
                raise ProtocolError("missing Host header (RFC 9112 §3.2)")
            host = b""
        elif len(hosts) > 1:
            raise ProtocolError("more than one Host header (RFC 9112 §3.2)")
        else:
            host = hosts[0]
        coding = values.get(b"transfer-encoding")
        declared = values.get(b"content-length")
        if coding is None and declared is None:
            length = NO_BODY  # the usual request: no body
        else:
            chunked = _transfer_chunked(coding)
            content_length = _content_length(declared)
            if chunked and content_length is not None:
                # Request smuggling vector (RFC 9112 §6.3 item 3): refuse instead of guessing.
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            if chunked and version == b"1.0":
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
            length = CHUNKED if chunked else (content_length or NO_BODY)
        self._length = length
        expect = values.get(b"expect")
        tokens = connection_tokens(values.get(b"connection"))
        _check_connection(tokens, 400)
        # credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ] (RFC 9110 §11.4, §11.6.2)
        authorization = values.get(b"authorization")
        auth_scheme = authorization[0].partition(b" ")[0] if authorization else b""
        return RequestHead(
            method,
            target,
            version,
            line,
            block,
            fields,
            _keep_alive(version, tokens),
            length,
            host,
            expect is not None and expect[0] == b"100-continue",
            tokens,
            auth_scheme,
        )


class ResponseReader(_Framer):
    """Reads responses sent by a server; `expect(method)` before each request tells how to frame it."""

    __slots__ = ("_interim", "_method")

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._method = b"GET"
        self._interim = 0

    def expect(self, method: bytes) -> None:
        self._method = method
        self._interim = 0

    def _head(self, head: bytes) -> ResponseHead:
        lines = head.split(b"\r\n")
        line = lines[0]
        version = b"1.1"
        status, reason = _status_line(line) if _clean(line) else _NO_STATUS_LINE
        usual = status != 0
        if not usual:  # not the usual head: the line read by its regex (the block is checked below)
            status, reason, version, line = _status_line_slowly(line, head)
        if status < 200:
            if status == 101:
                # The proxy never forwards Upgrade (Exchange's client protocols do not switch), so a
                # switch was never asked for: relaying it would turn the connection into a blind tunnel.
                raise ProtocolError("101 Switching Protocols, though no upgrade was requested", 502)
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses", 502)
        block = head[len(lines[0]) :]
        try:
            fields, values = _fields(block, lines, self.limits) if usual else _parse_block(block, self.limits)
        except ProtocolError as exc:
            raise ProtocolError(f"bad response header: {exc.what}", 502) from None
        tokens = connection_tokens(values.get(b"connection"))
        _check_connection(tokens, 502)
        if b"transfer-encoding" in values and b"content-length" in values:
            # RFC 9112 §6.3 item 3: "ought to be handled as an error" (response splitting); forwarding it
            # would need the Content-Length removed, and a server sending both is not to be trusted.
            raise ProtocolError("both Transfer-Encoding and Content-Length in a response", 502)
        keep_alive = _keep_alive(version, tokens)
        # RFC 9112 §6.3: HEAD, 1xx, 204 and 304 responses have no body, whatever their headers say.
        if self._method == b"HEAD" or status < 200 or status in (204, 304):
            length = NO_BODY
        else:
            try:
                chunked = _transfer_chunked(values.get(b"transfer-encoding"))
                content_length = _content_length(values.get(b"content-length"))
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
        return ResponseHead(status, reason, version, line, block, fields, keep_alive, length, tokens)


def forward_block(head: Head, drop: frozenset[bytes]) -> bytes:
    """The head's block without the fields named in `drop` or in its Connection header (RFC 9110
    §7.6.1); every other line byte for byte as received. Usually a few slices of the received block;
    only a Connection header naming other fields costs a re-serialization."""
    block = head.block
    tokens = head.connection
    if tokens and not tokens <= drop and any(t not in drop and t != b"close" for t in tokens):
        skip = drop | tokens
        kept = [n + b": " + v + b"\r\n" for n, v in head.headers if n.lower() not in skip]
        return b"\r\n" + b"".join(kept)
    parts: list[bytes] = []
    pos = 0
    for name, _, start, end in head.fields:
        if name in drop:
            parts.append(block[pos:start])
            pos = end
    if not parts:
        return block
    parts.append(block[pos:])
    return b"".join(parts)


def serialize_head(first_line: bytes, headers: Headers) -> bytes:
    """A head ready for the wire; names and values written as given (case kept)."""
    parts = [first_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
