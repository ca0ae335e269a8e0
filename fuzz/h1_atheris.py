"""Coverage-guided fuzzing of the HTTP/1.1 framer and the target normaliser with atheris (libFuzzer).

Run by `make fuzz` where atheris installs; any exception other than ProtocolError is a finding.
Arguments are libFuzzer's, e.g. `-max_total_time=600 -runs=5000000`."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from casarray.http.errors import ProtocolError
    from casarray.http.h1 import END, RequestReader, ResponseReader
    from casarray.http.target import normalize_target


def one(data: bytes) -> None:
    if not data:
        return
    split = data[0] % 64 + 1  # the first byte chooses where the second read starts
    body = data[1:]
    for make in (RequestReader, ResponseReader):
        reader = make()
        try:
            events = reader.feed(body[:split]) + reader.feed(body[split:])
            while events and events[-1] is END and reader.buffered:
                events = reader.next_message()
            reader.eof()
        except ProtocolError:
            pass
    if body.startswith(b"/"):
        with contextlib.suppress(ProtocolError):
            normalize_target(body)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
