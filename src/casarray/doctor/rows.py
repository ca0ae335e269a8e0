"""One line of the doctor's report and the verdict on a whole report. Pure data, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Row:
    """What was checked (`check`), on what (`target`), the outcome and the evidence a person reads."""

    check: str
    target: str
    status: Status
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "target": self.target, "status": self.status, "detail": self.detail}


def failed(rows: Iterable[Row]) -> bool:
    """A report fails when any row fails; warnings alone do not fail it."""
    return any(row.status == "fail" for row in rows)


def summary(rows: Iterable[Row]) -> str:
    """'12 ok, 1 warning, 0 failures'."""
    counts = Counter(row.status for row in rows)
    warn, fail = counts["warn"], counts["fail"]
    return (
        f"{counts['ok']} ok, {warn} warning{'s' if warn != 1 else ''}, "
        f"{fail} failure{'s' if fail != 1 else ''}"
    )
