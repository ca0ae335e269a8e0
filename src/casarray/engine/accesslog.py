"""The access log: one line per l4 connection or l7 request, text or JSON, to stderr or a file.

Termination codes follow HAProxy's two letters (configuration.txt, "Session state at disconnection"):
who ended it — C client, S server, P the proxy itself, c/s a client/server timeout, L local answer —
and in which phase — R request, Q queue, C connect, H response headers, D data; "--" is normal.
Lines are buffered and flushed at least every second, so logging costs no syscall per request.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any


class AccessLog:
    def __init__(self, path: str | None, fmt: str) -> None:
        self.path = path
        self.json = fmt == "json"
        self._file: IO[str] = open(path, "a", encoding="utf-8") if path else sys.stderr  # noqa: SIM115
        self._lines: list[str] = []

    def reopen(self) -> None:
        """After logrotate moved the file (SIGUSR1)."""
        self.flush()
        if self.path:
            self._file.close()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def flush(self) -> None:
        if self._lines:
            self._file.write("".join(self._lines))
            self._file.flush()
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self.path:
            self._file.close()

    def _emit(self, fields: dict[str, Any], text: str, **shown: str) -> None:
        """One line: `fields` as JSON, or `text` (a format string over the same fields, `shown`
        overriding how some read) as text; only the configured form is built."""
        if self.json:
            line = json.dumps(fields, separators=(",", ":"))
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(fields["time"]))
            line = text.format_map({**fields, **shown, "stamp": stamp})
        self._lines.append(line + "\n")
        if len(self._lines) >= 256:
            self.flush()

    def l4(
        self,
        listener: str,
        client: str,
        server: str,
        bytes_in: int,
        bytes_out: int,
        duration: float,
        termination: str,
    ) -> None:
        fields = {
            "time": time.time(),
            "kind": "l4",
            "listener": listener,
            "client": client,
            "server": server,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(duration * 1000, 1),
            "termination": termination,
        }
        self._emit(fields, _L4_TEXT)

    def l7(
        self,
        client: str,
        method: str,
        path: str,
        service: str,
        server: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        ttfb: float,
        duration: float,
        termination: str,
    ) -> None:
        fields = {
            "time": time.time(),
            "kind": "l7",
            "client": client,
            "method": method,
            "path": path,
            "service": service,
            "server": server,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "ttfb_ms": round(ttfb * 1000, 1),
            "duration_ms": round(duration * 1000, 1),
            "termination": termination,
        }
        self._emit(fields, _L7_TEXT, service=service or "-", server=server or "-")


_L4_TEXT = "{stamp} {client} {listener} {server} {bytes_in} {bytes_out} {duration_ms:.0f}ms {termination}"
_L7_TEXT = (
    '{stamp} {client} "{method} {path}" {service} {server} {status} {bytes_in} {bytes_out} '
    "{ttfb_ms:.0f}ms {duration_ms:.0f}ms {termination}"
)
