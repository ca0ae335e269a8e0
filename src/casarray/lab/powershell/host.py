"""What a script reaches outside the interpreter: the console, the clock, files, the transcript.

`Host` is the boundary: the interpreter never prints, reads a clock or writes a file itself.
`MemoryHost` keeps everything in memory (unit tests; a dry run); the lab's console host lives in
casarray.lab.powershell.run.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Stream(StrEnum):
    """Where a line goes, as PowerShell's streams and host calls name it."""

    OUTPUT = "output"  # the script's own output (Out-Default)
    HOST = "host"  # Write-Host, What if: messages
    WARNING = "warning"
    ERROR = "error"  # a non-terminating error record


class Host(Protocol):
    def write(self, stream: Stream, text: str) -> None:
        """One line on the console (and in the transcript when one is open)."""

    def now(self) -> datetime:
        """The local time, with its time zone (Get-Date)."""

    @property
    def script_root(self) -> str:
        """$PSScriptRoot: the folder of the running script; '' when it came from no file."""

    @property
    def location(self) -> str:
        """Get-Location: the working folder."""

    def start_transcript(self, path: str) -> str:
        """Start recording every line into `path`; the full path."""

    def stop_transcript(self) -> str | None:
        """Stop recording; the transcript's path, or None when none was open."""

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file ([System.IO.File]::WriteAllText)."""


def resolve(host: Host, path: str) -> str:
    """`path` made absolute against the host's location (GetUnresolvedProviderPathFromPSPath)."""
    return posixpath.normpath(posixpath.join(host.location, path))


@dataclass(slots=True)
class MemoryHost:
    """A host that keeps its lines, files and transcripts in memory."""

    clock: datetime
    script_root: str = ""
    location: str = "/lab"
    lines: list[tuple[Stream, str]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    transcripts: dict[str, list[str]] = field(default_factory=dict)
    _transcript: str | None = None

    def write(self, stream: Stream, text: str) -> None:
        self.lines.append((stream, text))
        if self._transcript is not None:
            self.transcripts[self._transcript].append(text)

    def now(self) -> datetime:
        return self.clock

    def start_transcript(self, path: str) -> str:
        full = resolve(self, path)
        self._transcript = full
        self.transcripts[full] = []
        return full

    def stop_transcript(self) -> str | None:
        path, self._transcript = self._transcript, None
        return path

    def write_file(self, path: str, data: bytes) -> None:
        self.files[resolve(self, path)] = data

    def text(self, *streams: Stream) -> list[str]:
        """The lines written to `streams` (every stream when none is named)."""
        return [text for stream, text in self.lines if not streams or stream in streams]
