"""Health of one member: up or down, with HAProxy-style rise/fall counters. Sans-I/O, takes `now`."""

from __future__ import annotations

from dataclasses import dataclass, field

# Upper bounds (seconds) of the check-duration histogram; the last bucket is +Inf.
CHECK_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check, with a HAProxy result code (L4OK, L4CON, L4TOUT, L6TOUT, L6RSP, L7OK,
    L7STS, L7RSP, L7TOUT) and a reason a person reads ("HTTP 503", "connect refused")."""

    ok: bool
    code: str
    reason: str
    duration: float  # seconds the check took


@dataclass(frozen=True, slots=True)
class Transition:
    """A member changed state; `old` is "init" before the first verdict."""

    old: str
    new: str
    result: CheckResult


@dataclass(slots=True)
class HealthState:
    rise: int
    fall: int
    up: bool = False
    checked: bool = False  # False until the first result: the first result decides at once
    streak: int = 0  # consecutive results pointing away from the current state
    last: CheckResult | None = None
    last_change: float = 0.0
    durations: list[int] = field(default_factory=lambda: [0] * (len(CHECK_BUCKETS) + 1))  # per bucket
    duration_sum: float = 0.0

    @property
    def name(self) -> str:
        if not self.checked:
            return "init"
        return "up" if self.up else "down"

    def record(self, result: CheckResult, now: float) -> Transition | None:
        """Count one result; return the transition when the state changes."""
        self.last = result
        self.duration_sum += result.duration
        self.durations[
            next((i for i, b in enumerate(CHECK_BUCKETS) if result.duration <= b), len(CHECK_BUCKETS))
        ] += 1
        old = self.name
        if not self.checked:
            # No history yet: trust the first check instead of waiting `rise` intervals at start-up.
            self.checked = True
            self.up = result.ok
            self.streak = 0
            self.last_change = now
            return Transition(old, self.name, result)
        if result.ok == self.up:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < (self.rise if result.ok else self.fall):
            return None
        self.up = result.ok
        self.streak = 0
        self.last_change = now
        return Transition(old, self.name, result)

    def force_up(self, now: float) -> None:
        """Health checks disabled: the member counts as up."""
        self.checked = True
        self.up = True
        self.last_change = now
