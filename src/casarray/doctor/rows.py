"""One line of the doctor's report and the verdict on a whole report. Pure data, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class UrlRow:
    """One URL a client is told, as `doctor --user` reports it: which protocol setting told it and who
    said so, whether it is on the namespace, whether it leads through the VIP, which server answered it
    there, and the verdict with its evidence."""

    protocol: str  # the setting that told it: "EXCH EwsUrl", "mapiHttp MailStore InternalUrl", "SCP", …
    url: str
    told_by: str  # the servers whose Autodiscover answers held it (X-FEServer), or where it came from
    on_namespace: str  # "yes", or why not
    via_vip: str  # "yes (127.0.0.1)", or why not
    answered_by: str  # X-FEServer of the answer through the VIP, "" when none
    status: Status
    detail: str

    def as_json(self) -> dict[str, str]:
        return {
            "protocol": self.protocol,
            "url": self.url,
            "told_by": self.told_by,
            "on_namespace": self.on_namespace,
            "via_vip": self.via_vip,
            "answered_by": self.answered_by,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Tally:
    """The verdict on one server or one service, from the rows that concern it (the report's end)."""

    name: str
    status: Status
    detail: str


_ORDER: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


def _worst(rows: Sequence[Row]) -> Status:
    return max((row.status for row in rows), key=_ORDER.__getitem__, default="ok")


def per_server(rows: Iterable[Row], servers: Sequence[str]) -> list[Tally]:
    """One tally per server: its certificate and health rows (targets `MB1` and `MB1/<service>`)."""
    rows = list(rows)
    out: list[Tally] = []
    for name in servers:
        mine = [r for r in rows if r.target == name or r.target.startswith(name + "/")]
        health = [r for r in mine if r.check == "health"]
        up = sum(r.status == "ok" for r in health)
        parts = [f"{up} of {len(health)} services healthy"] if health else []
        down = [r.target.partition("/")[2] for r in health if r.status != "ok"]
        if down:
            parts[0] += f" (failing: {', '.join(down)})"
        others = [r for r in mine if r.check != "health" and r.status != "ok"]
        parts += [f"{r.check}: {r.status}" for r in others]
        if not others and len(mine) > len(health):
            parts.append("certificate ok")
        out.append(Tally(name, _worst(mine), "; ".join(parts) or "nothing checked"))
    return out


def per_service(rows: Iterable[Row], services: Sequence[str]) -> list[Tally]:
    """One tally per service: on how many servers its health check passes, and through the VIP."""
    rows = list(rows)
    out: list[Tally] = []
    for name in services:
        health = [r for r in rows if r.check == "health" and r.target.endswith("/" + name)]
        via = [r for r in rows if r.check == "health via the VIP" and r.target.split(" ")[0] == name]
        up = sum(r.status == "ok" for r in health)
        detail = f"healthy on {up} of {len(health)} servers"
        down = [r.target.partition("/")[0] for r in health if r.status != "ok"]
        if down:
            detail += f" (failing on {', '.join(down)})"
        if via:
            detail += "; through the VIP: " + ("ok" if all(r.status == "ok" for r in via) else "failing")
        out.append(Tally(name, _worst(health + via), detail))
    return out
