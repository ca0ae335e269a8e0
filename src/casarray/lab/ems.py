"""The lab's Exchange Management Shell: runs a PowerShell script — the collector, an apply or a rollback
script, exactly as `casarray namespace` wrote it — against the simulated servers of a config.

The interpreter (casarray.lab.powershell) walks the script; this module gives it the organisation, the
servers of the config reached directly on their control endpoint (`GET`/`POST /_sim/settings`, never
through the balancer, with the Host the sims accept: the address as written), and a console host that
prints, keeps the transcript file Start-Transcript asks for, and writes the files the script writes.

Blocking I/O (httpx's client): the CLI calls it directly, the lab runner in a worker thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from casarray.config import Config
from casarray.engine.tls import upstream_context
from casarray.lab.powershell import (
    ExchangeShell,
    Interpreter,
    Outcome,
    ScriptError,
    SettingsFailed,
    Stream,
    parse,
)
from casarray.textfile import NotText, decode_text

SETTINGS_PATH = "/_sim/settings"
TIMEOUT_S = 10.0  # one settings request on loopback takes milliseconds; a stuck sim must not hang a run

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SimServer:
    name: str
    address: str
    port: int

    @property
    def url(self) -> httpx.URL:
        return httpx.URL(scheme="https", host=self.address, port=self.port, path=SETTINGS_PATH)


class SimOrganization:
    """The organisation of simulated servers: each one's settings read and changed over HTTPS."""

    def __init__(self, servers: Sequence[SimServer], client: httpx.Client) -> None:
        self._servers = {s.name: s for s in servers}
        self._client = client

    @classmethod
    def of(cls, config: Config, client: httpx.Client) -> SimOrganization:
        return cls([SimServer(s.name, s.address, s.port) for s in config.servers], client)

    def servers(self) -> Sequence[str]:
        return list(self._servers)

    def read(self, server: str) -> Mapping[str, Any]:
        return self._request(server, "GET", None)

    def change(self, server: str, change: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._request(server, "POST", change)

    def _request(self, server: str, method: str, body: Mapping[str, Any] | None) -> Mapping[str, Any]:
        sim = self._servers[server]
        try:
            response = self._client.request(method, sim.url, json=body)
        except httpx.HTTPError as exc:
            raise SettingsFailed(f"{server}: cannot reach {sim.url}: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            detail = error or f"HTTP {response.status_code} {response.reason_phrase}"
            raise SettingsFailed(f"{server}: {detail}")
        return answer


def client_for(config: Config) -> httpx.Client:
    """An HTTPS client that trusts the servers as the balancer does (upstream_tls)."""
    return httpx.Client(verify=upstream_context(config), timeout=TIMEOUT_S, trust_env=False)


@dataclass(slots=True)
class ConsoleHost:
    """Prints each line through `say`, and keeps files and transcripts on disk."""

    say: Say
    script_root: str = ""
    location: str = field(default_factory=lambda: str(Path.cwd()))
    _transcript: IO[str] | None = None
    _transcript_path: str | None = None

    def write(self, stream: Stream, text: str) -> None:
        self.say(text)
        if self._transcript is not None:
            self._transcript.write(text + "\n")

    def now(self) -> datetime:
        return datetime.now().astimezone()

    def start_transcript(self, path: str) -> str:
        full = Path(self.location, path)
        self.stop_transcript()
        self._transcript = full.open("w", encoding="utf-8")  # without -Append it starts the file anew
        self._transcript_path = str(full)
        self._transcript.write(_banner("start", self.now()))
        return str(full)

    def stop_transcript(self) -> str | None:
        if self._transcript is None:
            return None
        self._transcript.write(_banner("end", self.now()))
        self._transcript.close()
        path, self._transcript, self._transcript_path = self._transcript_path, None, None
        return path

    def write_file(self, path: str, data: bytes) -> None:
        Path(self.location, path).write_bytes(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stop_transcript()


def _banner(which: str, now: datetime) -> str:
    # The frame PowerShell's transcript puts around a session (Start-Transcript).
    line = "*" * 22
    return f"{line}\nPowerShell transcript {which}\n{which.title()} time: {now:%Y%m%d%H%M%S}\n{line}\n"


def read_script(path: Path) -> str:
    """A .ps1 file's text (UTF-8 with or without a BOM, or UTF-16 with one, as PowerShell reads them)."""
    try:
        return decode_text(path.read_bytes())
    except NotText as exc:
        raise ScriptError(str(exc), where=str(path)) from None


def run_script(
    text: str,
    name: str,
    config: Config,
    say: Say,
    *,
    arguments: Mapping[str, Any] | None = None,
    script_root: str = "",
    location: Path | None = None,
) -> Outcome:
    """Parse `text` and run it against the servers of `config`; ScriptError if it did not finish."""
    script = parse(text, name)
    host = ConsoleHost(say, script_root, str(location or Path.cwd()))
    with client_for(config) as client:
        try:
            return Interpreter(script, host, ExchangeShell(SimOrganization.of(config, client))).run(arguments)
        finally:
            host.close()
