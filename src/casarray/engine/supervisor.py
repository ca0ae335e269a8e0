"""Several data-plane workers behind one supervisor (`workers: N`, N > 1).

The supervisor binds every listening socket, runs the one health checker and the admin side, and
starts N worker processes (`casarray worker`, hidden) that inherit the sockets and accept from them:
the kernel spreads connections over the workers. A socketpair per worker carries JSON lines:
  supervisor -> worker: {"op": "health", ...} for every member change, {"op": "operator", ...},
                        {"op": "serve"} once the first states are in, {"op": "drain", "grace": s};
  worker -> supervisor: {"op": "ready"} when its listeners are built, {"op": "stats", ...} every second.
A worker that dies is logged and started again. Reload: the supervisor checks the new config, starts
new workers with it, then drains the old ones — the sockets stay open throughout, so no connection is
refused; connections already open finish on the old workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from casarray.balance.state import Member, Operator
from casarray.config.load import load_config
from casarray.config.model import Config
from casarray.engine.balancer import Balancer
from casarray.engine.control import Event, ServerView, Snapshot
from casarray.errors import CasarrayError
from casarray.health.state import Transition

log = logging.getLogger("casarray.supervisor")

STATS_INTERVAL = 1.0


class WorkerHandle:
    def __init__(
        self,
        number: int,
        generation: int,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.number = number
        self.generation = generation
        self.process = process
        self.reader = reader
        self.writer = writer
        self.stats: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self.stopping = False

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(message).encode() + b"\n")


class Supervisor:
    """Implements `Control` for the admin side; the data plane runs in the workers."""

    def __init__(self, config: Config, config_path: Path, workers: int) -> None:
        self.count = workers
        self.master = Balancer(config, config_path, role="master")
        self.master.on_change = self._on_change
        self.workers: list[WorkerHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._numbers = 0
        self._retired: list[dict[str, Any]] = []  # last stats of workers that are gone
        self._dir = Path(tempfile.mkdtemp(prefix="casarray-"))
        self._config_file = self._write_config(config_path)

    @property
    def config(self) -> Config:
        return self.master.config

    def _write_config(self, source: Path) -> Path:
        """A private copy of the config the workers read, so they run exactly what was checked."""
        generation = self.master.current.number if self.master.current else 1
        path = self._dir / f"generation-{generation}.yaml"
        path.write_text(source.read_text(encoding="utf-8-sig"), encoding="utf-8")
        return path

    async def start(self) -> None:
        await self.master.start()
        try:
            await self._spawn_all()
        except BaseException:
            await self.stop(0)
            raise
        log.info("%d workers serving", self.count)

    async def _spawn_all(self) -> list[WorkerHandle]:
        generation = self.master.current.number if self.master.current else 1
        handles = await asyncio.gather(*(self._spawn(generation) for _ in range(self.count)))
        return list(handles)

    async def _spawn(self, generation: int) -> WorkerHandle:
        self._numbers += 1
        number = self._numbers
        ours, theirs = socket.socketpair()
        fds = self.master.listeners.fds()
        args = [
            sys.executable,
            "-m",
            "casarray",
            "worker",
            "--config",
            str(self._config_file),
            "--control-fd",
            str(theirs.fileno()),
            "--number",
            str(number),
        ]
        for (address, port), fd in fds.items():
            args += ["--listen", f"{address}:{port}={fd}"]
        process = await asyncio.create_subprocess_exec(
            *args, pass_fds=[theirs.fileno(), *fds.values()], stdin=asyncio.subprocess.DEVNULL
        )
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        handle = WorkerHandle(number, generation, process, reader, writer)
        self.workers.append(handle)
        self._keep(self._read(handle))
        self._keep(self._watch(handle))
        try:
            async with asyncio.timeout(30):
                await handle.ready.wait()
        except TimeoutError:
            raise CasarrayError(f"worker {number} did not start within 30s", "workers") from None
        for message in self._state_messages():
            handle.send(message)
        handle.send({"op": "serve"})
        log.info("worker %d (pid %d) serving generation %d", number, process.pid, generation)
        return handle

    def _keep(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _state_messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        current = self.master.current
        if current is None:
            return out
        for state in current.states():
            out.append(
                {"op": "operator", "server": state.name, "service": None, "state": state.operator.value}
            )
            for member in state.members.values():
                out.append(self._health_message(member))
                out.append(
                    {
                        "op": "operator",
                        "server": state.name,
                        "service": member.service,
                        "state": member.operator.value,
                    }
                )
        return out

    @staticmethod
    def _health_message(member: Member) -> dict[str, Any]:
        last = member.health.last
        return {
            "op": "health",
            "server": member.server.name,
            "service": member.service,
            "up": member.health.up,
            "checked": member.health.checked,
            "code": last.code if last else "",
            "reason": last.reason if last else "",
        }

    def _broadcast(self, message: dict[str, Any]) -> None:
        # Draining workers too: a `maint` must also close the connections they still hold.
        for handle in self.workers:
            handle.send(message)

    def _on_change(self, member: Member, transition: Transition) -> None:
        self._broadcast(self._health_message(member))

    async def _read(self, handle: WorkerHandle) -> None:
        with contextlib.suppress(ConnectionError):  # a killed worker resets its end: _watch reports it
            await self._read_lines(handle)

    async def _read_lines(self, handle: WorkerHandle) -> None:
        while line := await handle.reader.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("op") == "ready":
                handle.ready.set()
            elif message.get("op") == "stats":
                handle.stats = message

    async def _watch(self, handle: WorkerHandle) -> None:
        code = await handle.process.wait()
        handle.writer.close()
        if handle in self.workers:
            self.workers.remove(handle)
        self._retire(handle.stats)
        if handle.stopping or self._stopping:
            return
        log.error(
            "worker %d (pid %d) exited with status %s: starting a new one",
            handle.number,
            handle.process.pid,
            code,
        )
        try:
            await self._spawn(handle.generation)
        except CasarrayError as exc:
            log.error("could not restart a worker: %s", exc)

    def _retire(self, stats: dict[str, Any]) -> None:
        """Keep the totals of a worker that is gone, so counters never go down (Prometheus would read
        a reset). Gauges (open connections, peaks, queue) are not kept."""
        if not stats:
            return
        stats = dict(stats)
        stats["clients"] = stats["queue"] = 0
        stats["servers"] = [{**server, "active": 0, "peak": 0} for server in stats.get("servers", [])]
        self._retired.append(stats)

    # --- Control ------------------------------------------------------------------------------------
    def events(self, since: float = 0.0) -> Sequence[Event]:
        return self.master.events(since)

    def set_operator(self, server: str, service: str | None, state: Operator) -> None:
        self.master.set_operator(server, service, state)
        self._broadcast({"op": "operator", "server": server, "service": service, "state": state.value})

    async def reload(self) -> str:
        config_path = self.master.config_path
        assert config_path is not None
        outcome = await self.master.reload()  # refuses (raises) an invalid config; nothing changes then
        self._config_file = self._write_config(config_path)
        old = [h for h in self.workers]
        await self._spawn_all()
        for handle in old:
            handle.stopping = True
            handle.send({"op": "drain", "grace": self.master.config.timeouts.grace})
        outcome += f" ({self.count} new workers; {len(old)} old ones draining)"
        log.info("%s", outcome)
        return outcome

    def snapshot(self) -> Snapshot:
        base = self.master.snapshot()
        stats = [h.stats for h in self.workers if h.stats] + self._retired
        servers: list[ServerView] = []
        for view in base.servers:
            sums = [0] * 6
            requests: dict[str, int] = {}
            for stat in stats:
                for s in stat.get("servers", []):
                    if s["name"] == view.name:
                        for i, key in enumerate(
                            ("active", "peak", "total", "bytes_in", "bytes_out", "connect_errors")
                        ):
                            sums[i] += int(s[key])
                        for name, member in s["members"].items():
                            requests[name] = requests.get(name, 0) + int(member["requests"])
            members = {
                name: dataclasses.replace(m, requests=requests.get(name, 0))
                for name, m in view.members.items()
            }
            servers.append(
                dataclasses.replace(
                    view,
                    active=sums[0],
                    peak=sums[1],
                    total=sums[2],
                    bytes_in=sums[3],
                    bytes_out=sums[4],
                    connect_errors=sums[5],
                    members=members,
                )
            )
        counts: dict[str, dict[str, int]] = {}
        for stat in stats:
            for service, classes in stat.get("requests", {}).items():
                for cls, n in classes.items():
                    counts.setdefault(service, {})[cls] = counts.get(service, {}).get(cls, 0) + int(n)
        return dataclasses.replace(
            base,
            servers=tuple(servers),
            clients=sum(int(s.get("clients", 0)) for s in stats),
            clients_total=sum(int(s.get("clients_total", 0)) for s in stats),
            refused=sum(int(s.get("refused", 0)) for s in stats),
            requests=counts,
            queue=sum(int(s.get("queue", 0)) for s in stats),
            tls_handshake_failures=sum(int(s.get("tls_handshake_failures", 0)) for s in stats),
            workers=len(self.workers),
        )

    def reopen_logs(self) -> None:
        """SIGUSR1: every worker reopens its access log."""
        for handle in self.workers:
            handle.process.send_signal(__import__("signal").SIGUSR1)

    # --- stop ---------------------------------------------------------------------------------------
    def close_all(self) -> None:
        for handle in self.workers:
            if handle.process.returncode is None:
                handle.process.kill()

    async def stop(self, grace: float | None = None) -> None:
        self._stopping = True
        grace = self.master.config.timeouts.grace if grace is None else grace
        for handle in self.workers:
            handle.stopping = True
            handle.send({"op": "drain", "grace": grace})
        self.master.listeners.close()  # refuse new connections at once (workers close their copies)
        waits = [h.process.wait() for h in list(self.workers)]
        try:
            async with asyncio.timeout(grace + 5):
                await asyncio.gather(*waits)
        except TimeoutError:
            self.close_all()
        await self.master.stop(0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for path in self._dir.iterdir():
            path.unlink()
        self._dir.rmdir()


async def run_worker(
    config_path: Path, listen: list[tuple[str, int, int]], control_fd: int, number: int
) -> None:
    """The worker process: build the data plane on the inherited sockets, take health and operator
    states from the supervisor, serve, report counters, drain when told."""
    config = load_config(config_path)
    balancer = Balancer(config, config_path, role="worker")
    for address, port, fd in listen:
        balancer.listeners.adopt(address, port, fd)
    await balancer.start()
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=control_fd))

    def send(message: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(message).encode() + b"\n")

    async def report() -> None:
        while True:
            snapshot = balancer.snapshot()
            send({"op": "stats", **dataclasses.asdict(snapshot)})
            await asyncio.sleep(STATS_INTERVAL)

    send({"op": "ready"})
    reporter = asyncio.get_running_loop().create_task(report())
    grace = config.timeouts.grace
    try:
        while line := await reader.readline():
            message = json.loads(line)
            op = message.get("op")
            if op == "health" and message["checked"]:
                balancer.apply_health(
                    message["server"], message["service"], message["up"], message["code"], message["reason"]
                )
            elif op == "operator":
                with contextlib.suppress(KeyError):
                    balancer.set_operator(
                        message["server"], message["service"], Operator(message["state"]), quiet=True
                    )
            elif op == "serve" and balancer.current is not None:
                await balancer.current.serve()
            elif op == "drain":
                grace = float(message["grace"])
                break
    finally:
        reporter.cancel()
        await balancer.stop(grace)
        writer.close()
