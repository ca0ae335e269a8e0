"""Verify: is every client-access setting of every server on the namespace?

This is the check an administrator runs by eye (GetVirtDirs: Server, Name, InternalUrl, ExternalUrl of
every virtual directory), made exact: a setting passes when the plan has nothing to change for it,
i.e. it is set, its host is the namespace of its side, and it is https on the balancer's port (plan
rule 1: a URL on the namespace with port 444 or http names something the VIP does not serve). Each
failure says which of those is wrong. Settings casarray does not manage (the Autodiscover virtual
directory's URLs, plan rule 3; PowerShell unless asked, rule 4) are listed but never fail, so verify
checks exactly the set the plan and the script move.
"""

from __future__ import annotations

from dataclasses import dataclass

from casarray.exchange.namespace.inventory import Inventory
from casarray.exchange.namespace.plan import (
    Action,
    PlanItem,
    Scope,
    Targets,
    make_plan,
    split_url,
    url_host,
    url_port,
)


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


def verify(inventory: Inventory, targets: Targets, scope: Scope | None = None) -> Verification:
    """Check every setting the plan manages (within `scope`); ok only when none needs a change."""
    plan = make_plan(inventory, targets, scope)
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
    should = f"(should be {item.target})"
    if item.current is None:
        return f"not set {should}"
    if item.target is None or "://" not in item.target:  # an Outlook Anywhere host name
        return f"on {item.current}, not {expected} {should}"
    current, target = split_url(item.current), split_url(item.target)
    if current is None or target is None:
        return f"not an absolute URL {should}"
    if current.hostname != target.hostname:
        reason = f"on {current.hostname}, not {expected} {should}"
        return f"{reason}; {item.note}" if item.note else reason
    if current.scheme.lower() != target.scheme:
        # The balancer's http port only redirects to https://<namespace>/owa.
        return f"{current.scheme.lower()}, not {target.scheme}: the balancer serves https only {should}"
    wanted_port = url_port(target)
    if url_port(current) != wanted_port:
        return f"on port {url_port(current)}, not {wanted_port}: the balancer serves https on {wanted_port} {should}"
    return f"path {current.path!r} differs {should}"
