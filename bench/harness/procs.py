"""Child processes the bench starts: each in its own process group, always stopped on the way out."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


class BenchError(Exception):
    """A failure reported as one clear line; bench/run.py exits 1 on it."""


@dataclass(frozen=True, slots=True)
class Tool:
    binary: str
    package: str


WRK = Tool("wrk", "wrk")
NGINX = Tool("nginx", "nginx-light")
HAPROXY = Tool("haproxy", "haproxy")


def find_tool(tool: Tool) -> str:
    """Absolute path of a Debian binary, or a BenchError naming the package to install."""
    # /usr/sbin is not on a non-root PATH, yet that is where nginx and haproxy live.
    found = shutil.which(tool.binary) or shutil.which(tool.binary, path="/usr/sbin:/sbin")
    if found is None:
        raise BenchError(
            f"`{tool.binary}` not found: install the Debian package with `apt-get install -y {tool.package}`"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; children inherit it. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class ManagedProcess:
    """A long-running child (nginx, HAProxy, casarray) in a new session, output kept in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self._stopped = False
        try:
            # A new session = a new process group: Ctrl-C in the terminal does not reach it, and
            # stop() can signal the whole group (nginx's workers, anything casarray forks).
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        except OSError as exc:
            self._log.close()
            raise BenchError(f"cannot start {name} ({argv[0]}): {exc}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_listening(self, port: int, timeout: float, host: str = LOOPBACK) -> None:
        """Return once host:port accepts a connection; BenchError if the process exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise BenchError(
                    f"{self.name} exited with status {self.proc.returncode} before listening on "
                    f"{host}:{port}; its output:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not listen on {host}:{port} within {timeout:.0f}s; "
                    f"its output:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc.poll() is None:
                signal_group(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    signal_group(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=grace)
            # The leader may be gone while children of its group linger (e.g. nginx workers).
            signal_group(self.proc.pid, signal.SIGKILL)
        finally:
            self._log.close()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    # Linux never hands out a pid that is still in use as a process-group id, so this reaches only
    # the group this harness created.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_bounded(
    argv: list[str],
    timeout: float,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command in its own process group; kill the group if it outlives `timeout`."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        signal_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from exc
    finally:
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a supervisor and its workers), from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            # After the ")" that ends comm: [0]=state (field 3), [1]=ppid.
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live descendants, from /proc/<pid>/stat."""
    total = 0
    for current in process_tree(pid):
        fields = _stat_fields(current)
        if fields is not None:
            # [11]=utime, [12]=stime (fields 14 and 15 of proc(5)).
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses; everything after the last ")" is space-separated.
    return raw[raw.rindex(")") + 2 :].split()
