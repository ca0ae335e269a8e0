"""The report: a table on the terminal (rich when available), Markdown on request, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
LATENCY_HEADERS: Row = ["scenario", *(f"{name} p99" for name in TARGET_ORDER)]


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _verdict(outcome: ScenarioResult) -> str:
    passed = outcome.passed
    if passed is None:
        return "n/a"
    return "PASS" if passed else "FAIL"


def _cpu(outcome: ScenarioResult, target: str) -> str:
    found = outcome.measurements.get(target)
    per_1k = found.cpu_s_per_1k_requests if found else None
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
                f"≥ {s.target_ratio:.2f}",
                _verdict(outcome),
                _cpu(outcome, REFERENCE),
                _cpu(outcome, CANDIDATE),
            ]
        )
    return table


def latency_rows(result: SuiteResult) -> list[Row]:
    table: list[Row] = []
    for outcome in result.scenarios:
        cells = [outcome.scenario.key]
        for name in TARGET_ORDER:
            found = outcome.measurements.get(name)
            p99 = found.wrk.p99_ms if found else None
            cells.append("—" if p99 is None else f"{p99:.2f} ms")
        table.append(cells)
    return table


def notes(result: SuiteResult, machine: dict[str, Any], duration_s: float) -> list[str]:
    lines = [
        f"wrk -t1, {duration_s:g}s per cell; nginx worker_processes 1; haproxy nbthread 1.",
        f"No CPU pinning: wrk, nginx and the balancer share {machine['usable_cpus']} CPU(s) "
        f"({machine['cpu_model']}), so the balancer competes with the load generator and the origin.",
        "CPU s/1k req = balancer user+sys CPU seconds (from /proc/<pid>/stat) per 1 000 requests.",
        "MiB/s = wrk's Transfer/sec (1 MiB = 1 048 576 bytes, headers included).",
    ]
    for outcome in result.scenarios:
        for name, m in outcome.measurements.items():
            if m.wrk.error_count:
                lines.append(
                    f"{outcome.scenario.key} via {name}: socket errors {m.wrk.socket_errors}, "
                    f"non-2xx/3xx {m.wrk.non_2xx_3xx}"
                )
    for target in result.targets:
        if target.skip_reason:
            # The full output is in the JSON and was printed when it was skipped; one line here.
            first = target.skip_reason.split("; its output:")[0].strip().splitlines()[0]
            lines.append(f"{target.name} skipped: {first}")
    return lines


def print_report(result: SuiteResult, machine: dict[str, Any], duration_s: float) -> None:
    title = f"casarray bench — {result.suite.title}"
    table, latency = rows(result), latency_rows(result)
    extra = notes(result, machine, duration_s)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(render_plain(HEADERS, table))
        print(f"ratio = {CANDIDATE} / {REFERENCE}")
        print()
        print(render_plain(LATENCY_HEADERS, latency))
        print()
        for line in extra:
            print(f"* {line}")
        return
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # piped to a file or make: do not squeeze the columns
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
    return (
        render_markdown(HEADERS, rows(result))
        + "\n\n"
        + render_markdown(LATENCY_HEADERS, latency_rows(result))
    )


def write_json(
    path: Path,
    result: SuiteResult,
    *,
    started: str,
    quick: bool,
    duration_s: float,
    warmup_s: float,
    machine: dict[str, Any],
    versions: dict[str, str],
) -> None:
    data = {
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
        "notes": notes(result, machine, duration_s),
        "targets": {
            t.name: {"available": t.available, "port": t.port, "skip_reason": t.skip_reason}
            for t in result.targets
        },
        "scenarios": [outcome.to_json() for outcome in result.scenarios],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
