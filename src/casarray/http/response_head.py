"""Read a response's status and the start of its body (enough for health checks). Sans-I/O."""

from __future__ import annotations

import httptools

from casarray.http.errors import ProtocolError


class ResponseHead:
    """Feed bytes with `receive_data`; `done` turns true once the status and `keep` body bytes (or the
    whole, shorter body) have arrived."""

    __slots__ = ("_parser", "body", "done", "keep", "status")

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.status: int | None = None
        self.body = b""
        self.done = False
        self._parser = httptools.HttpResponseParser(self)

    def receive_data(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed HTTP response: {exc}", 502) from None

    def connection_closed(self) -> None:
        """The peer closed: a response delimited by close is complete now; no status is an error."""
        if self.status is None:
            raise ProtocolError("connection closed before a response", 502)
        self.done = True

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        room = self.keep - len(self.body)
        if room > 0:
            self.body += body[:room]
        if len(self.body) >= self.keep:
            self.done = True

    def on_message_complete(self) -> None:
        self.done = True
