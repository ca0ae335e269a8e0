"""Run wrk (Debian's 4.1) and parse what it prints with --latency."""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from .procs import BenchError, signal_group

# wrk prints sizes with binary prefixes (1 KB = 1024 B) and times as us/ms/s/m/h.
_SIZE_UNITS = {"B": 1.0, "KB": 1024.0, "MB": 1024.0**2, "GB": 1024.0**3, "TB": 1024.0**4}
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

_NUMBER_UNIT = r"([0-9.]+)\s*([A-Za-z]+)"
_TOTALS = re.compile(r"^\s*(\d+) requests in " + _NUMBER_UNIT + r", " + _NUMBER_UNIT + r" read", re.M)
_RPS = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_TRANSFER = re.compile(r"^Transfer/sec:\s*" + _NUMBER_UNIT, re.M)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+" + _NUMBER_UNIT, re.M)
_LATENCY = re.compile(r"^\s*Latency\s+" + _NUMBER_UNIT + r"\s+" + _NUMBER_UNIT + r"\s+" + _NUMBER_UNIT, re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(slots=True)
class WrkResult:
    """One wrk run. Sizes in bytes, times in milliseconds, rates per second."""

    requests: int
    duration_s: float
    bytes_read: float
    requests_per_s: float
    transfer_bytes_per_s: float
    latency_avg_ms: float | None
    latency_max_ms: float | None
    latency_percentiles_ms: dict[str, float]
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    command: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def mib_per_s(self) -> float:
        return self.transfer_bytes_per_s / 1024.0**2

    @property
    def p99_ms(self) -> float | None:
        return self.latency_percentiles_ms.get("99")

    @property
    def error_count(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mib_per_s"] = self.mib_per_s
        return data


def parse_size(number: str, unit: str) -> float:
    try:
        return float(number) * _SIZE_UNITS[unit]
    except KeyError as exc:
        raise BenchError(f"wrk printed an unknown size unit {unit!r}") from exc


def parse_time_ms(number: str, unit: str) -> float:
    try:
        return float(number) * _TIME_UNITS_MS[unit]
    except KeyError as exc:
        raise BenchError(f"wrk printed an unknown time unit {unit!r}") from exc


def parse_output(text: str) -> WrkResult:
    """Numbers from wrk's report; BenchError if the summary lines are missing."""
    totals = _TOTALS.search(text)
    rps = _RPS.search(text)
    transfer = _TRANSFER.search(text)
    if totals is None or rps is None or transfer is None:
        raise BenchError(f"cannot read wrk's report:\n{text.strip()}")
    latency = _LATENCY.search(text)
    errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(totals.group(1)),
        duration_s=parse_time_ms(totals.group(2), totals.group(3)) / 1000.0,
        bytes_read=parse_size(totals.group(4), totals.group(5)),
        requests_per_s=float(rps.group(1)),
        transfer_bytes_per_s=parse_size(transfer.group(1), transfer.group(2)),
        latency_avg_ms=parse_time_ms(latency.group(1), latency.group(2)) if latency else None,
        latency_max_ms=parse_time_ms(latency.group(5), latency.group(6)) if latency else None,
        latency_percentiles_ms={
            m.group(1): parse_time_ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(text)
        },
        socket_errors=(
            dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
            if errors
            else {}
        ),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        output=text,
    )


def run_wrk(
    binary: str,
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    headers: tuple[str, ...] = (),
    socket_timeout_s: float = 5.0,
) -> WrkResult:
    """One bounded wrk run: wrk's own -d plus a hard kill 30 s after it should have ended."""
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={socket_timeout_s:g}s",
        "--latency",
    ]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=duration_s + 30.0)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + 30.0:.0f}s: {' '.join(argv)}") from exc
    finally:
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with status {proc.returncode}: {' '.join(argv)}\n{out.strip()}")
    result = parse_output(out)
    result.command = argv
    return result
