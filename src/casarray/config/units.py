"""The one parser for durations ("250ms", "5s", "1h", 30) and sizes ("64MiB", "35MB", 1024).

Pure functions, no I/O: used by the config models and the CLI alike.
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string with a unit: ms, s, m, h, d. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 5s, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    else:
        raise ValueError("expected a duration such as 250ms, 5s, 1h or a number of seconds")
    if not math.isfinite(seconds):  # `.inf`, `.nan`, or more digits than a float holds
        raise ValueError("expected a finite duration such as 250ms, 5s, 1h or a number of seconds")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string with a unit: KB/MB/GB (powers of 1000) or KiB/MiB/GiB (1024)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64MiB, 35MB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        number = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
        if not math.isfinite(number):  # more digits than a float holds: int() would raise OverflowError
            raise ValueError("expected a size such as 64MiB, 35MB or a number of bytes")
        size = int(number)
    else:
        raise ValueError("expected a size such as 64MiB, 35MB or a number of bytes")
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return size


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for docs and exported configs: 3600 -> "1h", 0.25 -> "250ms"."""
    for unit in ("d", "h", "m", "s"):
        factor = _DURATION_UNITS[unit]
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    return f"{round(seconds * 1000)}ms"
