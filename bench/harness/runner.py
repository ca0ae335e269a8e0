"""The measuring loop: sanity checks, warm-up, then every scenario against every target."""

from __future__ import annotations

import re
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .backends import Context, Target, check_response
from .idle import IdleResult, fd_budget, measure_idle
from .procs import BenchError, cpu_seconds
from .suites import CANDIDATE, REFERENCE, TARGET_ORDER, IdleCase, Scenario, Suite
from .wrk import WrkResult, run_wrk


@dataclass(frozen=True, slots=True)
class Durations:
    warmup_s: float
    measure_s: float
    settle_s: float
    rounds: int = 1  # each cell measured this many times, targets interleaved; the medians are reported


@dataclass(slots=True)
class Measurement:
    target: str
    wrk: WrkResult
    cpu_seconds: float | None

    def value(self, scenario: Scenario) -> float:
        return self.wrk.mib_per_s if scenario.metric == "mib_per_s" else self.wrk.requests_per_s

    @property
    def cpu_s_per_1k_requests(self) -> float | None:
        if self.cpu_seconds is None or self.wrk.requests == 0:
            return None
        return self.cpu_seconds / self.wrk.requests * 1000.0

    def to_json(self, scenario: Scenario) -> dict[str, Any]:
        return {
            "value": self.value(scenario),
            "unit": scenario.unit,
            "cpu_seconds": self.cpu_seconds,
            "cpu_s_per_1k_requests": self.cpu_s_per_1k_requests,
            "wrk": self.wrk.to_json(),
        }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(slots=True)
class ScenarioResult:
    """A scenario's measurements: `rounds` of them per target (taken in turn: round 1 of every target,
    then round 2...), so a drift of the machine reaches every target alike. Every figure reported is
    the median over the rounds: throughput, p99 latency and CPU per request each on its own."""

    scenario: Scenario
    rounds: dict[str, list[Measurement]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, measurement: Measurement) -> None:
        self.rounds.setdefault(measurement.target, []).append(measurement)

    def value(self, target: str) -> float | None:
        return _median([m.value(self.scenario) for m in self.rounds.get(target, [])])

    def p99_ms(self, target: str) -> float | None:
        return _median([p for m in self.rounds.get(target, []) if (p := m.wrk.p99_ms) is not None])

    def cpu_s_per_1k_requests(self, target: str) -> float | None:
        taken = self.rounds.get(target, [])
        return _median([c for m in taken if (c := m.cpu_s_per_1k_requests) is not None])

    @property
    def ratio(self) -> float | None:
        reference, candidate = self.value(REFERENCE), self.value(CANDIDATE)
        if reference is None or candidate is None or reference == 0:
            return None
        return candidate / reference

    def passes(self, target_ratio: float | None) -> bool | None:
        """None when there is no goal or no ratio."""
        ratio = self.ratio
        return None if ratio is None or target_ratio is None else ratio >= target_ratio

    @property
    def passed(self) -> bool | None:
        return self.passes(self.scenario.target_ratio)

    @property
    def p99_ratio(self) -> float | None:
        """casarray's p99 latency ÷ HAProxy's; None without both."""
        reference, candidate = self.p99_ms(REFERENCE), self.p99_ms(CANDIDATE)
        if reference is None or candidate is None or reference == 0:
            return None
        return candidate / reference

    @property
    def p99_passed(self) -> bool | None:
        ratio, goal = self.p99_ratio, self.scenario.p99_target
        return None if ratio is None or goal is None else ratio <= goal

    @property
    def verdicts(self) -> list[bool | None]:
        """One per goal (the scenario's own, the p99 one); empty when it has none."""
        goals = [self.scenario.target_ratio] if self.scenario.target_ratio is not None else []
        verdicts = [self.passes(goal) for goal in goals]
        if self.scenario.p99_target is not None:
            verdicts.append(self.p99_passed)
        return verdicts

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "key": s.key,
            "title": s.title,
            "path": s.path,
            "plain": s.plain,
            "connections": s.connections,
            "headers": list(s.headers),
            "metric": s.metric,
            "unit": s.unit,
            "target": None if s.target_ratio is None else f"{CANDIDATE} >= {s.target_ratio:g} x {REFERENCE}",
            "target_ratio": s.target_ratio,
            "ratio": self.ratio,
            "passed": self.passed,
            "p99_target": None
            if s.p99_target is None
            else f"{CANDIDATE} p99 <= {s.p99_target:g} x {REFERENCE}",
            "p99_ratio": self.p99_ratio,
            "p99_passed": self.p99_passed,
            "results": {
                name: {
                    "value": self.value(name),
                    "unit": s.unit,
                    "p99_ms": self.p99_ms(name),
                    "cpu_s_per_1k_requests": self.cpu_s_per_1k_requests(name),
                    "rounds": [m.to_json(s) for m in taken],
                }
                for name, taken in self.rounds.items()
            },
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class SuiteResult:
    suite: Suite
    targets: list[Target]
    scenarios: list[ScenarioResult]
    idle: list[IdleResult] = field(default_factory=list)
    idle_skipped: dict[str, str] = field(default_factory=dict)
    shape: str = "production"  # Context.shape: health checks on (production) or off (bare)
    workers: int = 1  # Context.workers: casarray workers, HAProxy nbthread

    def idle_case(self, result: IdleResult) -> IdleCase:
        spec = self.suite.idle
        assert spec is not None
        return next(case for case in spec.cases if case.key == result.case)

    def idle_ratio(self, result: IdleResult) -> float | None:
        """The candidate's KiB per connection ÷ the reference's in the same case; None without both."""
        reference = next((r for r in self.idle if r.target == REFERENCE and r.case == result.case), None)
        if result.target != CANDIDATE or reference is None:
            return None
        mine, theirs = result.kib_per_connection, reference.kib_per_connection
        if mine is None or theirs is None or theirs <= 0:
            return None
        return mine / theirs

    def idle_passed(self, result: IdleResult) -> bool | None:
        """Within the case's goal, with every connection opened and still open (and, for a released
        case, the upstream connections released); None: no ratio."""
        ratio = self.idle_ratio(result)
        if ratio is None:
            return None
        complete = result.failed == 0 and result.still_open == result.opened
        if self.idle_case(result).released:
            complete = complete and result.release_seconds is not None
        return complete and ratio <= self.idle_case(result).target_ratio

    @property
    def missed(self) -> bool:
        """A goal was missed or could not be judged (casarray not measured)."""
        verdicts = [v for outcome in self.scenarios for v in outcome.verdicts]
        verdicts += [self.idle_passed(r) for r in self.idle if r.target == CANDIDATE]
        if self.suite.idle is not None:
            for case in self.suite.idle.cases:
                if not any(r.target == CANDIDATE and r.case == case.key for r in self.idle):
                    verdicts.append(None)
        return any(v is not True for v in verdicts)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(ctx: Context, target: Target, scenario: Scenario, duration_s: float) -> Measurement:
    proc = target.process
    before = cpu_seconds(proc.pid) if proc else None
    result = run_wrk(
        ctx.wrk,
        target.url(scenario.path, plain=scenario.plain),
        duration_s=duration_s,
        connections=scenario.connections,
        headers=scenario.headers,
    )
    after = cpu_seconds(proc.pid) if proc else None
    used = after - before if before is not None and after is not None else None
    return Measurement(target.name, result, used)


_TRACEBACK_FILE = re.compile(r'^\s*File "([^"]+)", line (\d+)')
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*")


def _last_error(output: str) -> str:
    """'; it raised X at file:line' from the last traceback in a log, or '' when there is none."""
    where, error = "", ""
    for line in output.splitlines():
        if found := _TRACEBACK_FILE.match(line):
            where = f" at {found.group(1)}:{found.group(2)}"
        elif found := _EXCEPTION.match(line.strip()):
            error, where = f"; it raised {found.group(0)}{where}", ""
    return error


def _lost(target: Target) -> str | None:
    """Why a target that was running can no longer be measured (its process exited)."""
    if target.process is not None and not target.process.alive():
        return (
            f"{target.name} exited with status {target.process.proc.returncode} during the run; "
            f"its output:\n{target.process.log_tail()}"
        )
    return None


def run_suite(
    suite: Suite,
    ctx: Context,
    stack: ExitStack,
    durations: Durations,
    *,
    idle_connections: int | None = None,
) -> SuiteResult:
    """Every scenario against every target, then (when the suite has one) the idle-memory measurement
    with `idle_connections` connections (default: the suite's; 0 skips it)."""
    log(f"[{suite.name}] starting nginx, haproxy and casarray in {ctx.workdir}")
    targets = sorted(suite.setup(ctx, stack), key=lambda t: TARGET_ORDER.index(t.name))

    for target in targets:
        if not target.available:
            continue
        for scenario in suite.scenarios:
            if scenario.plain and target.plain_port is None:
                continue
            problem = check_response(
                target,
                scenario.path,
                scenario.expected_size,
                plain=scenario.plain,
                headers=scenario.headers,
            )
            if problem is None:
                continue
            if scenario.plain:
                problem = f"plain HTTP: {problem}"
            if target.name != CANDIDATE:
                raise BenchError(f"{target.name}: sanity check failed: {problem}")
            target.skip_reason = f"sanity check failed: {problem}"
            if target.process is not None:
                tail = target.process.log_tail(40)
                target.process.stop()  # free its CPU for the others
                target.skip_reason += f"{_last_error(tail)}; its output:\n{tail}"
            break
    for target in targets:
        if target.skip_reason:
            log(f"[{suite.name}] SKIPPING {target.name}: {target.skip_reason}")

    live = [t for t in targets if t.available]
    if durations.warmup_s > 0 and suite.scenarios:  # the idle measurement starts fresh processes
        for target in live:
            log(f"[{suite.name}] warm-up {target.name} ({durations.warmup_s:g}s)")
            warm = suite.scenarios[0]
            run_wrk(
                ctx.wrk,
                target.url(warm.path, plain=warm.plain),
                duration_s=durations.warmup_s,
                connections=warm.connections,
                headers=warm.headers,
            )

    results: list[ScenarioResult] = []
    for scenario in suite.scenarios:
        outcome = ScenarioResult(scenario)
        for round_number in range(1, durations.rounds + 1):
            for target in targets:
                if not target.available:
                    outcome.skipped[target.name] = target.skip_reason or "not available"
                    continue
                if scenario.plain and target.plain_port is None:
                    outcome.skipped[target.name] = target.plain_skip or "no plain-HTTP mode"
                    continue
                time.sleep(durations.settle_s)
                measurement = _measure(ctx, target, scenario, durations.measure_s)
                lost = _lost(target)
                if lost is not None:
                    target.skip_reason = lost
                    outcome.skipped[target.name] = lost
                    outcome.rounds.pop(target.name, None)
                    log(f"[{suite.name}] {target.name} is gone: {lost}")
                    continue
                outcome.add(measurement)
                label = f" (round {round_number}/{durations.rounds})" if durations.rounds > 1 else ""
                log(_progress_line(suite, scenario, measurement) + label)
        results.append(outcome)
    result = SuiteResult(suite, targets, results, shape=ctx.shape, workers=ctx.workers)
    if suite.idle is not None:
        _measure_idle(suite, targets, result, durations, idle_connections)
    return result


def _measure_idle(
    suite: Suite, targets: list[Target], result: SuiteResult, durations: Durations, requested: int | None
) -> None:
    spec = suite.idle
    assert spec is not None
    wanted = spec.count if requested is None else requested
    if wanted <= 0:
        for name in spec.targets:
            result.idle_skipped[name] = "not measured (--idle-connections 0)"
        return
    count, capped = fd_budget(wanted, spec.descriptors_per_connection)
    if capped:
        log(f"[{suite.name}] idle connections: {capped}")
    for case in spec.cases:
        for target in targets:
            if target.name not in spec.targets:
                continue
            key = f"{target.name} ({case.key})"
            if not target.available or target.relaunch is None:
                result.idle_skipped[key] = target.skip_reason or "not available"
                continue
            # A fresh process per case: memory freed by an earlier measurement would be reused by the
            # next one and hide its cost.
            fresh = target.relaunch(f"{target.name}-idle-{case.key}")
            try:
                if not fresh.available or fresh.process is None or fresh.ca is None or fresh.port is None:
                    result.idle_skipped[key] = fresh.skip_reason or "did not start"
                    continue
                time.sleep(durations.settle_s)
                log(
                    f"[{suite.name}] idle memory ({case.key}): opening {count:,} TLS keep-alive "
                    f"connections to a fresh {target.name}"
                )
                try:
                    idle = measure_idle(
                        target.name,
                        fresh.process.pid,
                        fresh.port,
                        case=case.key,
                        count=count,
                        requested=wanted,
                        ca=fresh.ca,
                        server_name=spec.server_name,
                        request=spec.request(case),
                        capped=capped,
                        # HAProxy with `http-reuse never` keeps every server connection: nothing to wait for.
                        released=case.released and target.name == CANDIDATE,
                    )
                except BenchError as exc:
                    if _lost(fresh) is None:
                        raise
                    log(f"[{suite.name}] idle memory via {target.name}: {exc}")
                lost = _lost(fresh)
                if lost is not None:
                    result.idle_skipped[key] = lost
                    log(f"[{suite.name}] {target.name} ({case.key}) is gone: {lost}")
                    continue
                result.idle.append(idle)
                log(_idle_line(suite, idle))
            finally:
                if fresh.process is not None:
                    fresh.process.stop()  # its memory and descriptors back before the next one


def _idle_line(suite: Suite, idle: IdleResult) -> str:
    per = idle.kib_per_connection
    line = (
        f"[{suite.name}] idle-{idle.case:<11} {idle.target:<9} {idle.opened:,} open "
        f"in {idle.open_seconds:.1f}s, "
        f"RSS {idle.rss_before_kib:,} -> {idle.rss_half_kib:,} -> {idle.rss_after_kib:,} KiB"
        + ("" if per is None else f" = {per:.2f} KiB/conn")
        + f", fds {idle.fds_before:,} -> {idle.fds_half:,} -> {idle.fds_after:,}"
        + f", still open {idle.still_open:,}"
    )
    if idle.release_seconds is not None:
        line += f", upstreams released within {idle.release_seconds:.1f}s of the last opened"
    if idle.failed:
        line += f", FAILED {idle.failed:,}: {idle.errors}"
    return line


def _progress_line(suite: Suite, scenario: Scenario, m: Measurement) -> str:
    line = f"[{suite.name}] {scenario.key:<16} {m.target:<9} {m.value(scenario):>11,.1f} {scenario.unit}"
    if m.wrk.p99_ms is not None:
        line += f"  p99 {m.wrk.p99_ms:.2f} ms"
    if m.cpu_s_per_1k_requests is not None:
        line += f"  cpu {m.cpu_s_per_1k_requests:.4f} s/1k req"
    if m.wrk.error_count:
        line += f"  errors {m.wrk.socket_errors} non-2xx/3xx {m.wrk.non_2xx_3xx}"
    return line
