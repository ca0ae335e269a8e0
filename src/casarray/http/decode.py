"""What a client of the proxy's framer needs besides framing: a chunked body's data, and the start of one
response (status, headers, first body bytes) for the health checks and `doctor`. Sans-I/O.

The proxy never decodes a body (h1's Body events carry the raw framed bytes, streamed as received); a
health check or `doctor` judges the first bytes of the body's *data* ("200 OK<br/>SERVER.FQDN"), so
here the chunk framing is stripped after h1.ResponseReader has checked it.
"""

from __future__ import annotations

from typing import Final

from casarray.http.errors import ProtocolError
from casarray.http.h1 import CHUNKED, Body, End, Event, Limits, ResponseHead, ResponseReader

_SIZE: Final = 0  # at a chunk-size line
_DATA: Final = 1  # inside chunk data
_CRLF: Final = 2  # at the CRLF that ends chunk data
_TRAILER: Final = 3  # in the trailer section, after the last chunk
_DONE: Final = 4  # after the empty line that ends the message

_STATUS_START: Final = b"HTTP/"  # every status line starts so (RFC 9112 §4)


class ChunkedDecoder:
    """The data of a chunked body (RFC 9112 §7.1) from the raw bytes of h1's Body events: chunk-size lines
    (extensions included), the CRLF after each chunk and the trailer section are dropped. The framer has
    refused malformed framing already, so this only strips it; the bytes may be split anywhere."""

    __slots__ = ("_left", "_line", "_state")

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # data bytes left in the current chunk
        self._line = b""  # the start of a framing line cut by the end of the previous piece

    @property
    def finished(self) -> bool:
        return self._state == _DONE

    def decode(self, raw: bytes) -> bytes:
        """The data bytes in `raw` (the next piece of the framed body)."""
        out: list[bytes] = []
        pos = 0
        size = len(raw)
        while pos < size and self._state != _DONE:
            if self._state == _DATA:
                take = min(self._left, size - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _CRLF
                continue
            end = raw.find(b"\n", pos)
            if end < 0:
                self._line += raw[pos:]
                break
            line = self._line + raw[pos:end]
            self._line = b""
            pos = end + 1
            if self._state == _SIZE:
                # chunk-size [ chunk-ext ] CRLF; the framer matched it against its chunk-size rule.
                self._left = int(line.split(b";", 1)[0].strip(b" \t\r"), 16)
                self._state = _DATA if self._left else _TRAILER
            elif self._state == _CRLF:
                self._state = _SIZE
            elif line in (b"", b"\r"):  # the empty line after the trailer fields (§7.1.2)
                self._state = _DONE
        return out[0] if len(out) == 1 else b"".join(out)


class ResponseStart:
    """Status, headers and the first `keep` data bytes of one response to a GET, read with the proxy's own
    framer: what a health check and `doctor` judge. `feed` the bytes, `eof` when the peer closes; `done`
    turns true once the final head and `keep` bytes of the body (or the whole, shorter body) are in.
    Interim (1xx) responses are skipped (RFC 9110 §15.2). A malformed response raises ProtocolError."""

    __slots__ = ("_chunks", "_lead", "_reader", "body", "cut_short", "done", "head", "keep")

    def __init__(self, keep: int = 256, limits: Limits | None = None) -> None:
        self.keep = keep
        self.head: ResponseHead | None = None  # the final response's head
        self.body = b""
        self.done = False
        self.cut_short = False  # the peer closed inside the body, before `keep` bytes of it
        self._reader = ResponseReader(limits)
        self._chunks: ChunkedDecoder | None = None
        self._lead: bytes | None = b""  # the first bytes, until they show the start of a status line

    @property
    def status(self) -> int | None:
        return None if self.head is None else self.head.status

    def header(self, name: bytes) -> bytes | None:
        """The value of the last field called `name` (lower case), or None."""
        if self.head is None:
            return None
        found = None
        for field, value in self.head.headers:
            if field.lower() == name:
                found = value
        return found

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once done (later bytes are ignored)."""
        if self.done:
            return True
        if self._lead is not None:
            self._check_lead(data)
        self._take(self._reader.feed(data))
        return self.done

    def _check_lead(self, data: bytes) -> None:
        """Refuse a peer that is not speaking HTTP from its first bytes (an SSH or SMTP banner, TLS
        alerts): the framer alone would wait for a blank line that may never come, and the check would
        end as a timeout instead of a wrong answer."""
        lead = (self._lead or b"") + data[:5]
        if not _STATUS_START.startswith(lead[:5]):
            shown = ((self._lead or b"") + data)[:60]
            raise ProtocolError(f"malformed status line {shown!r}", 502)
        self._lead = None if len(lead) >= 5 else lead

    def eof(self) -> None:
        """The peer closed. A body delimited by close is complete now; a body cut short ends here too
        (judged on what arrived, `cut_short` says so); no final head yet is an error."""
        if self.done:
            return
        if self.head is None:
            raise ProtocolError("connection closed before a response", 502)
        try:
            events = self._reader.eof()
        except ProtocolError:
            self.cut_short = True
            events = []
        self._take(events)
        self.done = True

    def _take(self, events: list[Event]) -> None:
        while events:
            next_events: list[Event] = []
            for event in events:
                if isinstance(event, Body):
                    data = event.data if self._chunks is None else self._chunks.decode(event.data)
                    room = self.keep - len(self.body)
                    if room > 0:
                        self.body += data[:room]
                    if len(self.body) >= self.keep:
                        self.done = True
                        return
                elif isinstance(event, ResponseHead):
                    if event.status >= 200:
                        self.head = event
                        self._chunks = ChunkedDecoder() if event.length == CHUNKED else None
                elif not isinstance(event, End):
                    continue
                elif self.head is None:  # the End of an interim response: the final one follows
                    next_events = self._reader.next_message()
                else:  # the End of the final response
                    self.done = True
                    return
            events = next_events
