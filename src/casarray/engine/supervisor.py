"""Several data-plane workers behind one supervisor (`workers: N`, N > 1).

The supervisor binds every listening socket, runs the one health checker and the admin side (its own
Balancer built with the SUPERVISOR parts: sockets, pools, checks, pool log; no frontend), and starts
N worker processes (`casarray worker`, hidden; the WORKER parts) that inherit the sockets and accept
from them: the kernel spreads connections over the workers. A socketpair per worker carries the typed
messages of engine/messages.py, one JSON line each:
  supervisor -> worker: Health for every member change, SetOperator, Serve once the first states are
                        in, Retire (replaced by a reload), Drain (stop, or cut a retiring one short);
  worker -> supervisor: Ready when its listeners are built, Stats (its Counters) every second,
                        Drained (how its drain ended) before it exits.

Workers run exactly the config that was checked: the supervisor reads the file once, validates those
bytes and writes those same bytes to a private file (its own temporary directory, read-only) that the
workers load; an edit of the config file can never reach a worker that nobody validated.

Reload: one at a time (a request during one is coalesced into one more after it). The supervisor
checks the new config, starts new workers with it, and only once they are ready retires the old ones:
they stop accepting and serve what they hold (an old generation's rules, see engine/balancer.py) up to
`timeouts.hard_stop_after`; at most MAX_DRAINING sets of old workers drain at once (beyond it the
oldest closes what it holds). The sockets stay open throughout, so no connection is refused. A worker
that dies is logged and started again — at once the first time, then with a back-off doubling from
BACKOFF_FIRST up to BACKOFF_MAX while replacements keep failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from casarray.balance.state import Member, Operator
from casarray.config.load import load_config
from casarray.config.model import Config
from casarray.engine.balancer import (
    MAX_DRAINING,
    SUPERVISOR,
    WORKER,
    Balancer,
    SerialReloads,
    read_config_file,
)
from casarray.engine.control import Adoption, Event, Setting, Snapshot
from casarray.engine.counters import Counters
from casarray.engine.messages import (
    Drain,
    Drained,
    Health,
    Message,
    Ready,
    Retire,
    Serve,
    SetOperator,
    Stats,
    decode,
    encode,
)
from casarray.errors import CasarrayError
from casarray.health.state import Transition

log = logging.getLogger("casarray.supervisor")

STATS_INTERVAL = 1.0
READY_TIMEOUT = 30.0  # a worker has this long to build its listeners
BACKOFF_FIRST = 0.5  # seconds before the second start in a row of a worker that keeps failing ...
BACKOFF_MAX = 30.0  # ... doubling up to this
STABLE_S = 30.0  # a worker that served this long before it died starts a new count


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
        self.started = time.monotonic()
        self.counters: Counters | None = None  # the last the worker reported
        self.drained: Drained | None = None  # the worker's report of how its drain ended
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        self.stopping = False

    @classmethod
    async def launch(
        cls, number: int, generation: int, path: Path, fds: dict[tuple[str, int], int]
    ) -> WorkerHandle:
        """Start `casarray worker` on the config at `path`, with the listening sockets `fds` and one
        end of a socketpair for the messages."""
        ours, theirs = socket.socketpair()
        args = [
            sys.executable,
            "-m",
            "casarray",
            "worker",
            "--config",
            str(path),
            "--control-fd",
            str(theirs.fileno()),
            "--number",
            str(number),
        ]
        for (address, port), fd in fds.items():
            args += ["--listen", f"{address}:{port}={fd}"]
        try:
            process = await asyncio.create_subprocess_exec(
                *args, pass_fds=[theirs.fileno(), *fds.values()], stdin=asyncio.subprocess.DEVNULL
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker has its copy
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return cls(number, generation, process, reader, writer)

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))


@dataclasses.dataclass(eq=False)
class OldWorkers:
    """The workers of one generation a reload replaced, while they drain."""

    generation: int
    handles: set[WorkerHandle]
    started: float
    capped: bool = False
    held: int = 0
    closed: int = 0
    why: str = ""


class Supervisor:
    """Implements `Control` for the admin side; the data plane runs in the workers."""

    def __init__(self, config: Config, config_path: Path, workers: int) -> None:
        self.count = workers
        self.master = Balancer(config, config_path, SUPERVISOR)
        self.master.on_change = self._on_change
        self.config_path = config_path
        self.workers: list[WorkerHandle] = []
        self.generation = 0  # the generation the serving workers run
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._numbers = 0
        self._crashes = 0  # worker failures in a row (the back-off)
        self._retired = Counters()  # what the workers that are gone had counted (engine/counters.py)
        self._retiring: list[OldWorkers] = []  # oldest first
        self._reloads = SerialReloads(self._reload_once)
        self._dir = Path(tempfile.mkdtemp(prefix="casarray-"))
        self._config_file = self._dir / "none.yaml"

    @property
    def config(self) -> Config:
        return self.master.config

    def _write_config(self, data: bytes, generation: int) -> Path:
        """The validated bytes, where the workers of `generation` read them (only this process writes
        that directory; the file is read-only)."""
        path = self._dir / f"generation-{generation}.yaml"
        path.unlink(missing_ok=True)
        path.write_bytes(data)
        path.chmod(0o400)
        return path

    async def start(self) -> None:
        # Read once more here rather than trust the file again later: these bytes are validated, run
        # by the supervisor and handed to the workers.
        try:
            data, config = await asyncio.to_thread(read_config_file, self.config_path)
            self.master.config = config
            await self.master.start()
            generation = self.master.current.number if self.master.current else 1
            self._config_file = self._write_config(data, generation)
            self.generation = generation
            await self._spawn_set(generation, self._config_file)
        except BaseException:
            await self.stop(0)
            raise
        log.info("%d workers serving", self.count)

    async def _spawn_set(self, generation: int, path: Path) -> list[WorkerHandle]:
        """`count` workers on `path`; if one does not start, the others are stopped and it is raised."""
        results = await asyncio.gather(
            *(self._spawn(generation, path) for _ in range(self.count)), return_exceptions=True
        )
        handles = [r for r in results if isinstance(r, WorkerHandle)]
        for failure in results:
            if isinstance(failure, BaseException):
                for handle in handles:
                    handle.stopping = True
                    handle.send(Drain(0))
                raise failure
        return handles

    async def _spawn(self, generation: int, path: Path) -> WorkerHandle:
        self._numbers += 1
        number = self._numbers
        handle = await WorkerHandle.launch(number, generation, path, self.master.listeners.fds())
        process = handle.process
        self.workers.append(handle)
        self._keep(self._read(handle))
        self._keep(self._watch(handle))
        ready = asyncio.ensure_future(handle.ready.wait())
        exited = asyncio.ensure_future(handle.exited.wait())
        await asyncio.wait((ready, exited), timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if not handle.ready.is_set():
            handle.stopping = True  # its failure is ours to report, not _watch's to restart
            if process.returncode is None:
                process.kill()
                what = f"did not start within {READY_TIMEOUT:g}s"
            else:
                what = f"exited with status {process.returncode} before it was ready"
            raise CasarrayError(f"worker {number} (pid {process.pid}) {what}", "workers")
        for message in self._state_messages():
            handle.send(message)
        handle.send(Serve())
        log.info("worker %d (pid %d) serving generation %d", number, process.pid, generation)
        return handle

    def _keep(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _state_messages(self) -> list[Message]:
        out: list[Message] = []
        current = self.master.current
        if current is None:
            return out
        for state in current.states():
            out.append(SetOperator(state.name, None, state.operator.value))
            for member in state.members.values():
                out.append(self._health_message(member))
                out.append(SetOperator(state.name, member.service, member.operator.value))
        return out

    @staticmethod
    def _health_message(member: Member) -> Health:
        last = member.health.last
        return Health(
            member.server.name,
            member.service,
            member.health.up,
            member.health.checked,
            last.code if last else "",
            last.reason if last else "",
        )

    def _broadcast(self, message: Message) -> None:
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
                message = decode(line)
            except ValueError as exc:
                log.warning("worker %d: unreadable message skipped: %s", handle.number, exc)
                continue
            if isinstance(message, Ready):
                handle.ready.set()
            elif isinstance(message, Stats):
                handle.counters = message.counters
            elif isinstance(message, Drained):
                handle.drained = message

    async def _watch(self, handle: WorkerHandle) -> None:
        code = await handle.process.wait()
        handle.exited.set()
        handle.writer.close()
        if handle in self.workers:
            self.workers.remove(handle)
        if handle.counters is not None:
            self._retired += handle.counters.ended()
        self._old_worker_gone(handle, code)
        if handle.stopping or self._stopping or not handle.ready.is_set():
            return  # expected; or it never got ready, which _spawn reports
        delay = self._crashed(time.monotonic() - handle.started)
        log.error(
            "worker %d (pid %d) exited with status %s: starting a new one%s",
            handle.number,
            handle.process.pid,
            code,
            self._backoff(delay),
        )
        self._restart(delay)

    def _crashed(self, lived: float) -> float:
        """Count a failure; the wait before the next start: none after a worker that ran a while, then
        BACKOFF_FIRST doubling up to BACKOFF_MAX — a worker that keeps failing cannot spin."""
        self._crashes = 1 if lived >= STABLE_S else self._crashes + 1
        if self._crashes == 1:
            return 0.0
        return min(BACKOFF_MAX, BACKOFF_FIRST * float(1 << min(self._crashes - 2, 16)))

    def _backoff(self, delay: float) -> str:
        return f" in {delay:g}s (back-off: {self._crashes} failures in a row)" if delay else ""

    def _restart(self, delay: float) -> None:
        self._keep(self._restart_later(delay, self.generation))

    async def _restart_later(self, delay: float, generation: int) -> None:
        await asyncio.sleep(delay)
        if self._stopping or generation != self.generation:
            return  # stopping, or a reload has replaced that generation's workers meanwhile
        started = time.monotonic()
        try:
            handle = await self._spawn(generation, self._config_file)
        except CasarrayError as exc:
            delay = self._crashed(time.monotonic() - started)
            log.error("%s: starting a new one%s", exc.what, self._backoff(delay) or " now")
            self._restart(delay)
            return
        if generation != self.generation:  # a reload finished while it started: it is already old
            handle.stopping = True
            handle.send(Drain(0))

    # --- Control ------------------------------------------------------------------------------------
    def events(self, since: float = 0.0) -> Sequence[Event]:
        return self.master.events(since)

    def set_operator(
        self, server: str, service: str | None, state: Operator, *, reason: str = "", by: str = ""
    ) -> None:
        self.master.set_operator(server, service, state, reason=reason, by=by)
        self._broadcast(SetOperator(server, service, state.value))

    def operator_settings(self) -> Sequence[Setting]:
        return self.master.operator_settings()

    def adopt_operators(self, settings: Sequence[Setting], source: str) -> list[Adoption]:
        adopted = self.master.adopt_operators(settings, source)
        for adoption in adopted:
            if adoption.result == "taken":
                setting = adoption.setting
                self._broadcast(SetOperator(setting.server, setting.service, setting.state.value))
        return adopted

    async def reload(self) -> str:
        """Check the config file, start workers on it, retire the old ones. Serialised and coalesced
        like the single-process reload: a HUP storm costs at most two reloads at a time."""
        return await self._reloads()

    async def _reload_once(self) -> str:
        data, config = await self.master.read_config()  # refuses (raises) an invalid config
        outcome = await self.master.apply(config)
        generation = self.master.current.number if self.master.current else 1
        path = self._write_config(data, generation)
        try:
            await self._spawn_set(generation, path)
        except CasarrayError as exc:
            path.unlink(missing_ok=True)
            log.error("reload failed, the old workers keep serving: %s", exc)
            raise
        old = [h for h in self.workers if h.generation != generation and not h.stopping]
        previous, self._config_file, self.generation = self._config_file, path, generation
        previous.unlink(missing_ok=True)
        self._retire_workers(old)
        outcome += f" ({self.count} new workers; {len(old)} old ones draining)"
        log.info("%s", outcome)
        return outcome

    def _retire_workers(self, handles: list[WorkerHandle]) -> None:
        """Old workers serve what they hold up to their hard stop; beyond MAX_DRAINING sets draining,
        the oldest set closes what it still holds."""
        if not handles:
            return
        for handle in handles:
            handle.stopping = True
            handle.send(Retire())
        generation = min(h.generation for h in handles)
        self._retiring.append(OldWorkers(generation, set(handles), time.monotonic()))
        draining = [s for s in self._retiring if not s.capped]
        if len(draining) > MAX_DRAINING:
            oldest = draining[0]
            oldest.capped = True
            why = f"more than {MAX_DRAINING} generations draining"
            for handle in oldest.handles:
                handle.send(Drain(0, why))

    def _old_worker_gone(self, handle: WorkerHandle, code: int) -> None:
        """One line once every worker of a retired generation is gone: how their drain ended."""
        for old in self._retiring:
            if handle in old.handles:
                break
        else:
            return
        old.handles.discard(handle)
        report = handle.drained
        if report is not None:
            old.held += report.held
            old.closed += report.closed
            old.why = report.why if report.closed else old.why
        elif code != 0:
            log.warning(
                "worker %d (pid %d) exited with status %s while draining",
                handle.number,
                handle.process.pid,
                code,
            )
        if old.handles:
            return
        self._retiring.remove(old)
        drained = Drained(old.generation, time.monotonic() - old.started, old.held, old.closed, old.why)
        log.log(logging.WARNING if old.closed else logging.INFO, "%s", drained.describe())

    def snapshot(self) -> Snapshot:
        counted = sum((h.counters for h in self.workers if h.counters is not None), self._retired)
        return self.master.view(counted, workers=len(self.workers))

    def reopen_logs(self) -> None:
        """SIGUSR1: every worker reopens its access log."""
        for handle in self.workers:
            handle.process.send_signal(signal.SIGUSR1)

    # --- stop ---------------------------------------------------------------------------------------
    def close_all(self) -> None:
        """Stop now (a second signal, or a stop past its bound): kill the workers; none is restarted."""
        self._stopping = True
        for handle in self.workers:
            handle.stopping = True
            if handle.process.returncode is None:
                handle.process.kill()

    async def stop(self, grace: float | None = None) -> None:
        self._stopping = True
        grace = self.master.config.timeouts.grace if grace is None else grace
        for handle in self.workers:
            handle.stopping = True
            handle.send(Drain(grace))
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
    states from the supervisor, serve, report counters; retire or drain when told, and keep listening
    meanwhile (a stop during a retirement shortens it), then report how the drain ended."""
    config = load_config(config_path)  # the supervisor's private copy of the validated bytes
    balancer = Balancer(config, config_path, WORKER)
    for address, port, fd in listen:
        balancer.listeners.adopt(address, port, fd)
    await balancer.start()
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=control_fd))

    def send(message: Message) -> None:
        if not writer.is_closing():
            writer.write(encode(message))

    async def report() -> None:
        while True:
            send(Stats(balancer.counters()))
            await asyncio.sleep(STATS_INTERVAL)

    stopping: list[asyncio.Task[Drained | None]] = []
    stop_asked = asyncio.Event()

    def stop(grace: float, reload: bool = False, why: str | None = None) -> None:
        if stopping:
            balancer.hurry(grace, why)  # already draining: the shorter bound wins
            return
        stopping.append(loop.create_task(balancer.stop(grace, reload)))
        stop_asked.set()

    async def commands() -> None:
        while line := await reader.readline():
            try:
                message = decode(line)
            except ValueError as exc:
                log.warning("worker %d: unreadable message from the supervisor skipped: %s", number, exc)
                continue
            if isinstance(message, Health):
                if message.checked:
                    balancer.apply_health(
                        message.server, message.service, message.up, message.code, message.reason
                    )
            elif isinstance(message, SetOperator):
                with contextlib.suppress(KeyError, ValueError):  # ValueError: not an operator state
                    balancer.set_operator(
                        message.server, message.service, Operator(message.state), quiet=True
                    )
            elif isinstance(message, Serve):
                if balancer.current is not None:
                    await balancer.current.serve()
            elif isinstance(message, Retire):
                stop(config.timeouts.hard_stop_after, reload=True)
            elif isinstance(message, Drain):
                stop(message.grace, why=message.why)
        stop(config.timeouts.grace)  # the supervisor is gone: finish like a stop

    send(Ready())
    reporter = loop.create_task(report())
    listening = loop.create_task(commands())
    try:
        asked = loop.create_task(stop_asked.wait())
        await asyncio.wait((listening, asked), return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()
        if not stopping:  # the control channel failed
            stop(config.timeouts.grace)
        drained = await stopping[0]  # commands() keeps listening meanwhile: a stop may hurry it
        if drained is not None:
            send(drained)
            with contextlib.suppress(ConnectionError):  # the supervisor is gone: nobody to tell
                await writer.drain()
    finally:
        reporter.cancel()
        listening.cancel()
        writer.close()
