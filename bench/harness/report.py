"""The report: a table on the terminal (rich when available), Markdown on request, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .idle import IdleResult
from .runner import ScenarioResult, SuiteResult
from .suites import CANDIDATE, REFERENCE, TARGET_ORDER

Row = list[str]

HEADERS: Row = [
    "scenario",
    "unit",
    *TARGET_ORDER,
    "ratio",
    "target",
    "result",
    f"CPU s/1k {REFERENCE}",
    f"CPU s/1k {CANDIDATE}",
]
LATENCY_HEADERS: Row = ["scenario", *(f"{name} p99" for name in TARGET_ORDER), "ratio", "target", "result"]
IDLE_HEADERS: Row = [
    "case",
    "balancer",
    "idle TLS conns",
    "RSS before→half→after KiB",
    "first half KiB/conn",
    "KiB/conn",
    "ratio",
    "target",
    "result",
    "fds before→half→after",
    "open time",
    "failed",
]


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _verdict(passed: bool | None, target_ratio: float | None) -> str:
    if target_ratio is None:
        return "info"
    if passed is None:
        return "n/a"
    return "PASS" if passed else "FAIL"


def _goal(target_ratio: float | None) -> str:
    return "—" if target_ratio is None else f"≥ {target_ratio:.2f}"


def _cpu(outcome: ScenarioResult, target: str) -> str:
    per_1k = outcome.cpu_s_per_1k_requests(target)
    return "—" if per_1k is None else f"{per_1k:.4f}"


def rows(result: SuiteResult) -> list[Row]:
    table: list[Row] = []
    for outcome in result.scenarios:
        s = outcome.scenario
        ratio = outcome.ratio
        table.append(
            [
                s.key,
                s.unit,
                *(_number(outcome.value(name)) for name in TARGET_ORDER),
                "—" if ratio is None else f"{ratio:.2f}",
                _goal(s.target_ratio),
                _verdict(outcome.passed, s.target_ratio),
                _cpu(outcome, REFERENCE),
                _cpu(outcome, CANDIDATE),
            ]
        )
    return table


def idle_rows(result: SuiteResult) -> list[Row]:
    spec = result.suite.idle
    if spec is None:
        return []
    table: list[Row] = []
    for idle in result.idle:
        per = idle.kib_per_connection
        passed = result.idle_passed(idle)
        ratio = result.idle_ratio(idle)
        goal = f"≤ {result.idle_case(idle).target_ratio:.2f}" if idle.target == CANDIDATE else "—"
        verdict = (
            ("n/a" if passed is None else "PASS" if passed else "FAIL")
            if idle.target == CANDIDATE
            else "info"
        )
        table.append(
            [
                idle.case,
                idle.target,
                f"{idle.still_open:,} of {idle.requested:,}",
                f"{idle.rss_before_kib:,}→{idle.rss_half_kib:,}→{idle.rss_after_kib:,}",
                "—" if idle.kib_first_half is None else f"{idle.kib_first_half:.2f}",
                "—" if per is None else f"{per:.2f}",
                "—" if ratio is None else f"{ratio:.2f}",
                goal,
                verdict,
                f"{idle.fds_before:,}→{idle.fds_half:,}→{idle.fds_after:,}",
                f"{idle.open_seconds:.1f} s",
                f"{idle.failed:,}",
            ]
        )
    for name, reason in result.idle_skipped.items():
        first = reason.split("; its output:")[0].strip().splitlines()[0]
        target, _, case = name.partition(" (")
        table.append([case.rstrip(")"), target, "—", "—", "—", "—", "—", "—", "n/a", "—", "—", first[:60]])
    return table


def _idle_notes(result: SuiteResult) -> list[str]:
    spec = result.suite.idle
    if spec is None:
        return []
    lines = [
        f"Idle memory: TLS clients that each completed a handshake and one GET {spec.path}, then stayed "
        "open, opened in two halves, each case in a fresh process of each balancer; KiB/conn = (VmRSS "
        "after the second half − VmRSS after the first) / connections of the second half: one more idle "
        "connection in a process that has held as many before; first half KiB/conn = (VmRSS after the "
        "first half − before) / its connections (1 KiB = 1 024 bytes); ratio = "
        f"{CANDIDATE} ÷ {REFERENCE} KiB/conn in the same case.",
        *(f"Idle memory, {case.key}: {case.title}." for case in spec.cases),
        f"{REFERENCE} (http-reuse never) keeps the server connection of every client connection in both "
        f"cases; {CANDIDATE}'s 'released' figure is read once its descriptors show the upstream "
        "connections closed (fds after ≈ one per client connection).",
    ]
    notes_seen: set[str] = set()
    for idle in result.idle:
        if idle.note and idle.note not in notes_seen:
            notes_seen.add(idle.note)
            lines.append(f"Idle memory: {idle.note}.")
        if idle.release_seconds is not None:
            lines.append(
                f"Idle memory via {idle.target} ({idle.case}): the upstream connections were closed at "
                f"most {idle.release_seconds:.1f} s after the last client connection of a half opened "
                f"(descriptors {idle.fds_before:,} → {idle.fds_half:,} → {idle.fds_after:,})"
            )
        if idle.errors:
            lines.append(f"Idle memory via {idle.target}: failures {_errors(idle)}")
        if idle.still_open != idle.opened:
            lines.append(
                f"Idle memory via {idle.target}: {idle.opened - idle.still_open:,} of {idle.opened:,} "
                "connections were closed by the balancer before the measurement"
            )
    return lines


def _errors(idle: IdleResult) -> str:
    return "; ".join(
        f"{count:,} × {error}" for error, count in sorted(idle.errors.items(), key=lambda e: -e[1])
    )


def latency_rows(result: SuiteResult) -> list[Row]:
    table: list[Row] = []
    for outcome in result.scenarios:
        cells = [outcome.scenario.key]
        for name in TARGET_ORDER:
            p99 = outcome.p99_ms(name)
            cells.append("—" if p99 is None else f"{p99:.2f} ms")
        ratio, goal, passed = outcome.p99_ratio, outcome.scenario.p99_target, outcome.p99_passed
        cells.append("—" if ratio is None else f"{ratio:.2f}")
        cells.append("—" if goal is None else f"≤ {goal:.2f}")
        cells.append("info" if goal is None else "—" if passed is None else "PASS" if passed else "FAIL")
        table.append(cells)
    return table


def notes(result: SuiteResult, machine: dict[str, Any], duration_s: float, rounds: int) -> list[str]:
    lines = [
        *result.suite.notes,
        (
            f"Every cell measured {rounds} times, the targets in turn; the figures are the medians "
            "(throughput, p99 and CPU each on its own)."
            if rounds > 1
            else "Every cell measured once (--rounds 1): expect ±30 % between runs on a shared machine."
        ),
        f"wrk -t1, {duration_s:g}s per cell; nginx worker_processes 1; haproxy nbthread {result.workers}; "
        f"casarray workers: {result.workers}.",
        f"Shape: {result.shape}"
        + (
            " (l7: both balancers health-check the origin every 2 s, as in a deployment)."
            if result.shape == "production"
            else " (no health checks: --shape bare)."
        ),
        f"No CPU pinning: wrk, nginx and the balancer share {machine['usable_cpus']} CPU(s) "
        f"({machine['cpu_model']}), so the balancer competes with the load generator and the origin.",
        "CPU s/1k req = balancer user+sys CPU seconds (from /proc/<pid>/stat) per 1 000 requests.",
        "MiB/s = wrk's Transfer/sec (1 MiB = 1 048 576 bytes, headers included).",
    ]
    for outcome in result.scenarios:
        for name, taken in outcome.rounds.items():
            for m in taken:
                if m.wrk.error_count:
                    lines.append(
                        f"{outcome.scenario.key} via {name}: socket errors {m.wrk.socket_errors}, "
                        f"non-2xx/3xx {m.wrk.non_2xx_3xx}"
                    )
    lines += _idle_notes(result)
    for target in result.targets:
        if target.skip_reason:
            # The full output is in the JSON and was printed when it was skipped; one line here.
            first = target.skip_reason.split("; its output:")[0].strip().splitlines()[0]
            lines.append(f"{target.name} skipped: {first}")
    return lines


def print_report(result: SuiteResult, machine: dict[str, Any], duration_s: float, rounds: int) -> None:
    title = f"casarray bench — {result.suite.title}"
    table, latency, idle = rows(result), latency_rows(result), idle_rows(result)
    extra = notes(result, machine, duration_s, rounds)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        if table:  # none when --scenario chose only the idle measurement
            print(render_plain(HEADERS, table))
            print(f"ratio = {CANDIDATE} / {REFERENCE}")
            print()
            print(render_plain(LATENCY_HEADERS, latency))
            print()
        if idle:
            print("Memory per idle keep-alive TLS connection")
            print(render_plain(IDLE_HEADERS, idle))
            print()
        for line in extra:
            print(f"* {line}")
        return
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # piped to a file or make: do not squeeze the columns
    if not table:  # --scenario chose only the idle measurement
        console.print(title)
    else:
        main = Table(title=title, title_justify="left", caption=f"ratio = {CANDIDATE} / {REFERENCE}")
        for i, header in enumerate(HEADERS):
            main.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
        for row in table:
            style = {"PASS": "green", "FAIL": "bold red"}.get(row[HEADERS.index("result")])
            main.add_row(*row, style=style)
        console.print(main)
        lat = Table(title="p99 latency (wrk --latency)", title_justify="left")
        for i, header in enumerate(LATENCY_HEADERS):
            lat.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in latency:
            lat.add_row(*row)
        console.print(lat)
    if idle:
        mem = Table(title="Memory per idle keep-alive TLS connection", title_justify="left")
        for i, header in enumerate(IDLE_HEADERS):
            mem.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in idle:
            style = {"PASS": "green", "FAIL": "bold red"}.get(row[IDLE_HEADERS.index("result")])
            mem.add_row(*row, style=style)
        console.print(mem)
    for line in extra:
        console.print(f"• {line}", highlight=False, markup=False)


def render_plain(headers: Row, table: list[Row]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *table, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in table:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def render_markdown(headers: Row, table: list[Row]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def markdown(result: SuiteResult) -> str:
    parts = []
    if result.scenarios:
        parts += [
            render_markdown(HEADERS, rows(result)),
            render_markdown(LATENCY_HEADERS, latency_rows(result)),
        ]
    idle = idle_rows(result)
    if idle:
        parts.append(render_markdown(IDLE_HEADERS, idle))
    return "\n\n".join(parts)


def write_json(
    path: Path,
    result: SuiteResult,
    *,
    started: str,
    quick: bool,
    duration_s: float,
    warmup_s: float,
    rounds: int,
    machine: dict[str, Any],
    versions: dict[str, str],
) -> None:
    data: dict[str, Any] = {
        "suite": result.suite.name,
        "title": result.suite.title,
        "started": started,
        "quick": quick,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "reference": REFERENCE,
        "candidate": CANDIDATE,
        "machine": machine,
        "versions": versions,
        "rounds": rounds,
        "notes": notes(result, machine, duration_s, rounds),
        "targets": {
            t.name: {
                "available": t.available,
                "port": t.port,
                "tls": t.ca is not None,
                "plain_port": t.plain_port,
                "skip_reason": t.skip_reason,
                "plain_skip": t.plain_skip,
            }
            for t in result.targets
        },
        "scenarios": [outcome.to_json() for outcome in result.scenarios],
    }
    if result.suite.idle is not None:
        spec = result.suite.idle
        data["idle_memory"] = {
            "requested": spec.count,
            "path": spec.path,
            "cases": {
                case.key: {
                    "title": case.title,
                    "headers": list(case.headers),
                    "target": f"{CANDIDATE} <= {case.target_ratio:g} x {REFERENCE} KiB per idle connection",
                    "target_ratio": case.target_ratio,
                    "results": {
                        idle.target: {
                            **idle.to_json(),
                            "ratio": result.idle_ratio(idle),
                            "passed": result.idle_passed(idle),
                        }
                        for idle in result.idle
                        if idle.case == case.key
                    },
                }
                for case in spec.cases
            },
            "skipped": result.idle_skipped,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
