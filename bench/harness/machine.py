"""The machine and the software versions a result was measured with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

from .backends import Context, casarray_env
from .procs import BenchError, run_bounded


def _first_line(argv: list[str], **kwargs: Any) -> str:
    try:
        done = run_bounded(argv, 20.0, **kwargs)
    except (BenchError, OSError) as exc:
        return f"unknown ({exc})"
    # nginx -v writes to stderr; wrk -v exits with status 1 after printing its version.
    text = (done.stdout or "") + (done.stderr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def versions(ctx: Context) -> dict[str, str]:
    try:
        uvloop_version = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop_version = "not installed"
    casarray = _first_line(
        # The version and the build that runs: compiled by mypyc, or pure Python (and why).
        [
            ctx.python,
            "-c",
            "from casarray import __version__, compiled; print(__version__, f'({compiled.current().describe()})')",
        ],
        env=casarray_env(ctx),
    )
    return {
        "haproxy": _first_line([ctx.haproxy, "-v"]),
        "nginx": _first_line([ctx.nginx, "-v"]),
        "wrk": _first_line([ctx.wrk, "-v"]),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "uvloop": uvloop_version,
        "casarray": casarray,
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = _read("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
            break
    sysctls = {
        name: _read("/proc/sys/" + name.replace(".", "/"))
        for name in (
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.ip_local_port_range",
            "net.core.somaxconn",
        )
    }
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_kib": memory_kib,
        "kernel": platform.release(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        # Taken when the suite starts: anything else busy on the machine shows here.
        "loadavg_1_5_15": list(os.getloadavg()),
        "sysctl": sysctls,
    }
