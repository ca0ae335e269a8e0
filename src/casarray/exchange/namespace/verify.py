"""Verify: is every client-access setting of every server on the namespace?

This is the check the original PowerShell ran by eye (GetVirtDirs: Server, Name, InternalUrl,
ExternalUrl of every virtual directory), made exact: a setting passes when the plan has nothing to
change for it, i.e. it is set and its host is the namespace of its side. Settings casarray does not
manage (the Autodiscover virtual directory's URLs, plan rule 3) are listed but never fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from casarray.exchange.namespace.inventory import Inventory
from casarray.exchange.namespace.plan import Action, PlanItem, Targets, make_plan, url_host


@dataclass(frozen=True, slots=True)
class Check:
    """One setting checked against the namespace."""

    server: str
    kind: str
    identity: str
    property: str
    current: str | None
    expected: str | None  # the host the setting must name; None when casarray does not manage it
    ok: bool
    reason: str  # why it failed, or why it is not checked; "" when on the namespace

    def as_json(self) -> dict[str, str | bool | None]:
        return {
            "server": self.server,
            "kind": self.kind,
            "identity": self.identity,
            "property": self.property,
            "current": self.current,
            "expected": self.expected,
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class Verification:
    targets: Targets
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)


def verify(inventory: Inventory, targets: Targets) -> Verification:
    """Check every setting the plan manages; the result is ok only when none needs a change."""
    plan = make_plan(inventory, targets)
    return Verification(targets=targets, checks=tuple(_check(item) for item in plan.items))


def _check(item: PlanItem) -> Check:
    if item.target is None:
        return Check(
            item.server, item.kind, item.identity, item.property, item.current, None, True, item.note
        )
    # Outlook Anywhere targets are host names; every other target is a URL.
    expected = url_host(item.target) or item.target
    ok = item.action is Action.OK
    return Check(
        item.server,
        item.kind,
        item.identity,
        item.property,
        item.current,
        expected,
        ok,
        "" if ok else _reason(item, expected),
    )


def _reason(item: PlanItem, expected: str) -> str:
    if item.current is None:
        return f"not set (should be {item.target})"
    found = url_host(item.current) if "://" in item.current else item.current
    if found is None:
        return f"not an absolute URL (should be {item.target})"
    return f"on {found}, not {expected} (should be {item.target})"
