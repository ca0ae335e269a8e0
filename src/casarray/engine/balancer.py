"""The running balancer: listeners, one *generation* of data plane per config, health checks, control.

Start-up is all-or-nothing: every step that can fail (address resolution, CA and certificate files,
binding the ports) runs before traffic is accepted, and anything already started is stopped again.

Reload (SIGHUP or the admin API): the file is read once and those bytes are checked first, in a
thread (a big file never stalls serving) — an invalid one is refused and the running one keeps serving.
A valid one becomes a new generation that accepts on the *same listening sockets* (the balancer keeps
them for its whole life and hands each generation a dup), so not one connection is refused. The old
generation stops accepting and serves what it holds on the old config, as HAProxy's old processes do
with `idle-close-on-response`: requests and streams finish, each connection closes after its next
response (`Connection: close`) or at its keep-alive timeout — never under a request that may be on the
wire — all bounded by `timeouts.hard_stop_after`, not by the stop's `timeouts.grace`. Reloads run one
at a time; requests that arrive during one are coalesced into one more; at most MAX_DRAINING old
generations drain at once. Health states and operator states carry over for the same (server, service).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from casarray.balance.algorithm import Picker
from casarray.balance.state import Member, Operator, ServerState
from casarray.config.load import parse_config, read_config
from casarray.config.model import Config, MailProtocol, Server
from casarray.config.secretfile import SecretFileError, affinity_warnings, read_secrets
from casarray.config.units import format_duration
from casarray.engine import opstate
from casarray.engine.accesslog import AccessLog
from casarray.engine.control import Adoption, Event, MemberView, Snapshot
from casarray.engine.control import ServerView as ServerViewData
from casarray.engine.counters import Counters, ServerCounters
from casarray.engine.frontend import Frontend
from casarray.engine.l4 import L4Frontend
from casarray.engine.l4 import log as l4_log
from casarray.engine.l7 import HttpRedirector, L7Frontend
from casarray.engine.messages import Drained
from casarray.engine.pools import ServerPoolLog, ServicePoolLog
from casarray.engine.sockets import TcpServer
from casarray.engine.tls import server_context, upstream_context
from casarray.engine.tlsfd import TlsServer
from casarray.errors import CasarrayError, StartupError
from casarray.exchange import catalog
from casarray.health.checker import HealthChecker, HttpsProbe, Probe, probe_https
from casarray.health.mail import MailProbe, MailProtocolName, probe_mail
from casarray.health.state import CheckResult, HealthState, Transition
from casarray.netaddr import join_host_port

log = logging.getLogger("casarray")

Serving = asyncio.Server | TlsServer | TcpServer  # what a generation starts, stops and waits for

# Old generations left draining at once; a reload beyond it closes the oldest one's connections.
# HAProxy bounds its old processes the same way (mworker-max-reloads).
MAX_DRAINING = 3


def read_config_file(path: Path) -> tuple[bytes, Config]:
    """Read a config file once and validate those very bytes (the loader's guards: size, encoding,
    YAML limits). Blocking: run it in a thread. The bytes are what a supervisor hands its workers, so
    nothing read later can differ from what was checked."""
    data = read_config(path)
    return data, parse_config(data, str(path))


class SerialReloads:
    """Runs reloads one at a time. Requests that arrive while one runs are coalesced into a single one
    after it: that one reads the file again, so the last request's edit is always applied, and a storm
    of HUPs costs at most two reloads."""

    def __init__(self, run: Callable[[], Awaitable[str]]) -> None:
        self._run = run
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task[str] | None = None

    async def __call__(self) -> str:
        task = self._queued
        if task is None:
            task = self._queued = asyncio.get_running_loop().create_task(self._serially())
            task.add_done_callback(_retrieve)
        else:
            log.info("reload requested while one waits for the reload under way: coalesced into it")
        return await asyncio.shield(task)  # a caller that goes away does not cancel the reload

    async def _serially(self) -> str:
        async with self._lock:
            self._queued = None  # a request from now on may follow an edit this reload will not read
            return await self._run()


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark a reload's failure as seen: its callers have it (and the refusal is logged)."""
    if not task.cancelled():
        task.exception()


async def resolve(config: Config) -> list[str]:
    """One IP address per server, in config order; an unresolvable name is a start-up error."""
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for i, server in enumerate(config.servers):
        try:
            infos = await loop.getaddrinfo(server.address, server.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise StartupError(
                f"cannot resolve {server.address!r} ({server.name}): {exc.strerror}",
                f"servers[{i}].address",
                "use an IP address or a name DNS resolves",
            ) from None
        out.append(str(infos[0][4][0]))
    return out


def affinity_secrets(config: Config) -> tuple[bytes, ...]:
    """The secrets of affinity.secret_file when l7 cookie affinity uses them; () for none (the cookie's
    key is then derived from the namespace). An unusable file is a start-up error."""
    path = config.affinity.secret_file
    if path is None or config.affinity.mode != "cookie" or config.mode != "l7":
        return ()
    try:
        return read_secrets(path).keys
    except SecretFileError as exc:
        raise StartupError(exc.what, "affinity.secret_file", exc.hint) from None


class Listeners:
    """The listening sockets, kept for the life of the process so reloads never refuse a connection."""

    def __init__(self) -> None:
        self._socks: dict[tuple[str, int], socket.socket] = {}

    def get(self, address: str, port: int) -> socket.socket:
        key = (address, port)
        sock = self._socks.get(key)
        if sock is None:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(4096)
            except OSError as exc:
                sock.close()
                raise StartupError(
                    f"cannot listen on {address}:{port}: {os.strerror(exc.errno) if exc.errno else exc}",
                    "listen",
                    "is another process using the port, or is the address not local?",
                ) from None
            sock.setblocking(False)
            self._socks[key] = sock
            if port == 0:  # tests: remember the port the kernel chose under its real number too
                self._socks[(address, sock.getsockname()[1])] = sock
        return sock

    def adopt(self, address: str, port: int, fd: int) -> None:
        """A listening socket inherited from the supervisor (workers)."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        self._socks[(address, port)] = sock

    def fds(self) -> dict[tuple[str, int], int]:
        return {key: sock.fileno() for key, sock in self._socks.items()}

    def keep_only(self, keys: set[tuple[str, int]]) -> None:
        for key, sock in list(self._socks.items()):
            if key not in keys and sock.getsockname()[:2] not in keys:
                sock.close()
                del self._socks[key]

    def close(self) -> None:
        for sock in set(self._socks.values()):
            sock.close()
        self._socks.clear()


@dataclass(frozen=True, slots=True)
class Parts:
    """Which parts of the runtime a process builds. One process builds both halves; under a
    supervisor (engine/supervisor.py) the supervisor builds the checking half and binds the sockets,
    each worker the serving half on the sockets it inherits."""

    serving: bool  # frontends on the listening sockets: the data plane
    checking: bool  # the health checker and the log of pool changes: where health comes from

    @property
    def whole(self) -> bool:
        """Both halves: no supervisor reports for it (reload outcomes, drains)."""
        return self.serving and self.checking


ONE_PROCESS = Parts(serving=True, checking=True)
SUPERVISOR = Parts(serving=False, checking=True)
WORKER = Parts(serving=True, checking=False)


@dataclass(eq=False, slots=True)
class MailPool:
    """The pool of one mail port (an l4 listener of its own)."""

    protocol: MailProtocolName
    port: int
    settings: MailProtocol
    states: list[ServerState]

    @property
    def service(self) -> str:
        return mail_service(self.protocol, self.port)


def mail_service(protocol: str, port: int) -> str:
    """The name of a mail port's pool and of its members' service: "imap:993"."""
    return f"{protocol}:{port}"


class PoolBuilder:
    """Builds a generation's server states, carrying over from the previous generation what is known
    of the same (server, address, port, service) — health, operator states — and listing each
    member's check (`probes`) and those never checked yet (`fresh`, checked before serving)."""

    def __init__(
        self,
        config: Config,
        addresses: Sequence[str],
        previous: Generation | None,
        restore: Callable[[ServerState], None] | None = None,
    ) -> None:
        self.config = config
        self.addresses = addresses
        self.restore = restore  # puts the operator states kept from the last run on each server
        self.now = asyncio.get_running_loop().time()
        self.carried = {
            (m.server.name, m.server.address, m.server.port, m.service): m
            for m in (previous.members() if previous else [])
        }
        self.old_operator = {s.name: s.operator for s in (previous.servers if previous else [])}
        self.probes: list[tuple[Member, Probe]] = []
        self.fresh: list[tuple[Member, Probe]] = []

    def pool(
        self,
        port_of: Callable[[Server], int],
        services: Sequence[str],
        probe_for: Callable[[ServerState, str], Probe],
    ) -> list[ServerState]:
        config = self.config
        states: list[ServerState] = []
        for server_config, address in zip(config.servers, self.addresses, strict=True):
            state = ServerState(server_config, address, port_of(server_config))
            state.operator = self.old_operator.get(server_config.name, Operator.READY)
            for name in services:
                member = Member(state, name, HealthState(config.health.rise, config.health.fall))
                old = self.carried.get((state.name, address, state.port, name))
                if old is not None:  # same server, address, port and service: keep what is known
                    member.operator = old.operator
                    member.health = old.health
                    member.health.rise, member.health.fall = config.health.rise, config.health.fall
                if not config.health.enabled:
                    member.health.force_up(self.now)
                state.members[name] = member
                probe = probe_for(state, name)
                self.probes.append((member, probe))
                if old is None or not old.health.checked:
                    self.fresh.append((member, probe))
            if self.restore is not None:
                self.restore(state)
            states.append(state)
        return states


def https_probe(config: Config, upstream_ssl: ssl.SSLContext) -> Callable[[ServerState, str], Probe]:
    def probe(state: ServerState, service: str) -> Probe:
        return partial(
            probe_https,
            HttpsProbe(
                state.address,
                state.port,
                catalog.get(service).health_path,
                config.check_server_name,
                upstream_ssl,
                config.health.timeout,
            ),
        )

    return probe


def mail_probe(
    config: Config, upstream_ssl: ssl.SSLContext, mail: MailPool
) -> Callable[[ServerState, str], Probe]:
    def probe(state: ServerState, _: str) -> Probe:
        return partial(
            probe_mail,
            MailProbe(
                mail.protocol,
                state.address,
                state.port,
                mail.port in catalog.IMPLICIT_TLS_PORTS,
                config.check_server_name,
                upstream_ssl,
                config.health.timeout,
                mail.settings.require_starttls,
            ),
        )

    return probe


class Generation:
    """Everything one config runs: server states, members, frontends, health checker, servers.

    `pools[0]` is the HTTPS pool (`servers`), mail pools follow, one per port; `frontends` are built
    in the same order, in processes that serve (`frontends[0]` the HTTPS listener, l4 or l7).
    """

    def __init__(self, config: Config, number: int) -> None:
        self.config = config
        self.number = number
        self.servers: list[ServerState] = []  # the HTTPS pool
        self.mail: list[MailPool] = []
        self.pools: list[list[ServerState]] = []  # the HTTPS pool, then one per mail port
        self.frontends: list[Frontend] = []
        self.pool_logs: list[ServerPoolLog | ServicePoolLog] = []
        self.checker: HealthChecker[Member] | None = None
        self.asyncio_servers: list[Serving] = []
        self.listen_keys: set[tuple[str, int]] = set()
        self.deadline = math.inf  # loop time at which draining stops waiting (hurry() brings it closer)
        self.why = ""  # what set the deadline (in the log line when it closes connections)
        self.capped = False  # closed early: too many generations draining
        self._hurried = asyncio.Event()

    def states(self) -> list[ServerState]:
        """Every server state of every pool (one per server and pool)."""
        return [s for pool in self.pools for s in pool]

    def members(self) -> list[Member]:
        return [m for s in self.states() for m in s.members.values()]

    async def start(
        self,
        listeners: Listeners,
        previous: Generation | None,
        on_transition: Callable[[Member, Transition], None],
        access: AccessLog | None,
        parts: Parts,
        restore: Callable[[ServerState], None] | None = None,
    ) -> None:
        """Build what `parts` asks for, every step that can fail before any traffic is accepted (the
        caller stops what was started if one raises). A worker serves when its supervisor says so.
        `restore`: puts the operator states kept from the last run on each server (before serving)."""
        config = self.config
        builder = PoolBuilder(config, await resolve(config), previous, restore)
        upstream_ssl = upstream_context(config)
        server_ssl = server_context(config) if config.mode == "l7" else None  # checked in every process
        cookie_secrets = affinity_secrets(config)  # likewise
        if parts.checking:
            for warning in affinity_warnings(config):
                log.warning("%s", warning)
        self._bind(listeners)
        self._build_pools(builder, upstream_ssl)
        if parts.serving:
            await self._build_frontends(listeners, upstream_ssl, server_ssl, cookie_secrets, access)
        if parts.checking:
            self._build_pool_logs()
            await self._start_checks(builder, on_transition)
        self.refresh()
        if parts.checking:  # a worker has no health of its own yet: it waits for its supervisor's
            await self.serve()

    def _bind(self, listeners: Listeners) -> None:
        """Every listening socket this config names (kept by the balancer across generations: a
        supervisor binds them for its workers)."""
        listen = self.config.listen
        ports = [listen.https_port]
        if self.config.mode == "l7" and listen.http_port is not None:
            ports.append(listen.http_port)
        ports += [port for _, settings in _mail_protocols(self.config) for port in settings.ports]
        for port in ports:
            listeners.get(listen.address, port)
            self.listen_keys.add((listen.address, port))

    def _build_pools(self, builder: PoolBuilder, upstream_ssl: ssl.SSLContext) -> None:
        """The HTTPS pool (a member per service), then one pool per mail port."""
        config = self.config
        self.servers = builder.pool(lambda s: s.port, config.services, https_probe(config, upstream_ssl))
        self.pools.append(self.servers)
        for protocol, settings in _mail_protocols(config):
            for port in settings.ports:
                mail = MailPool(protocol, port, settings, [])

                def mail_port(server: Server, port: int = port) -> int:
                    return server.mail_ports.get(port, port)

                mail.states = builder.pool(mail_port, (mail.service,), mail_probe(config, upstream_ssl, mail))
                self.mail.append(mail)
                self.pools.append(mail.states)

    async def _build_frontends(
        self,
        listeners: Listeners,
        upstream_ssl: ssl.SSLContext,
        server_ssl: ssl.SSLContext | None,
        cookie_secrets: tuple[bytes, ...],
        access: AccessLog | None,
    ) -> None:
        """A frontend per pool and the (not yet serving) servers on dups of the kept sockets."""
        config = self.config
        listen = config.listen
        sock = listeners.get(listen.address, listen.https_port)
        if config.mode == "l7":
            assert server_ssl is not None
            l7 = L7Frontend(config, self.servers, upstream_ssl, cookie_secrets)
            self.frontends.append(l7)
            # TLS on the socket itself (engine/tlsfd.py), not the loop's memory-BIO transport.
            self.asyncio_servers.append(
                TlsServer(
                    l7.protocol_factory,
                    sock.dup(),
                    server_ssl,
                    config.timeouts.request_header,
                    l7.handshake_failed,
                )
            )
            if listen.http_port is not None:
                namespace, https_port = config.namespace.encode(), sock.getsockname()[1]
                redirect_sock = listeners.get(listen.address, listen.http_port)
                self.asyncio_servers.append(
                    await self._serve(lambda: HttpRedirector(namespace, https_port), redirect_sock)
                )
        else:
            l4 = L4Frontend(config, self.servers, Picker.of(config.balance, config.affinity.mode))
            self.frontends.append(l4)
            # Plain TCP on the socket itself (engine/sockets.py), not the loop's transports.
            self.asyncio_servers.append(TcpServer(l4.protocol_factory, sock.dup(), l4_log))
        for mail in self.mail:
            # IMAP and POP3 sessions are long and uneven: least connections spreads them better.
            balance = mail.settings.balance or ("roundrobin" if mail.protocol == "smtp" else "leastconn")
            frontend = L4Frontend(
                config, mail.states, Picker(balance), required=(mail.service,), name=mail.service
            )
            self.frontends.append(frontend)
            mail_sock = listeners.get(listen.address, mail.port)
            self.asyncio_servers.append(TcpServer(frontend.protocol_factory, mail_sock.dup(), l4_log))
        for fe in self.frontends:
            fe.access = access
            fe.start()

    def _build_pool_logs(self) -> None:
        """One log of pool changes per listener (engine/pools.py)."""
        config = self.config
        if config.mode == "l7":
            self.pool_logs.append(ServicePoolLog(config.services, self.servers))
        else:
            self.pool_logs.append(ServerPoolLog("l4", self.servers, config.required_services))
        for mail in self.mail:
            self.pool_logs.append(ServerPoolLog(mail.service, mail.states, (mail.service,)))

    async def _start_checks(
        self, builder: PoolBuilder, on_transition: Callable[[Member, Transition], None]
    ) -> None:
        """Check what was never checked before serving (what a reload carried over is known), then
        keep checking every member."""
        health = self.config.health
        if not health.enabled:
            log.warning("health checks are disabled (health.enabled: false): every server counts as up")
            return
        self.checker = HealthChecker(builder.probes, health.interval, health.jitter, on_transition)
        await self.checker.first_round(builder.fresh)
        self.checker.start()

    def refresh(self) -> None:
        """Health or operator states changed: every listener recomputes its pool."""
        for fe in self.frontends:
            fe.refresh()
        for pool_log in self.pool_logs:
            pool_log.refresh()

    async def serve(self) -> None:
        for server in self.asyncio_servers:
            await server.start_serving()

    async def _serve(self, factory: Callable[[], asyncio.Protocol], sock: socket.socket) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        # A dup of the kept socket: closing this generation's server leaves the listening socket open.
        return await loop.create_server(factory, sock=sock.dup(), backlog=4096, start_serving=False)

    def stop_accepting(self) -> None:
        for server in self.asyncio_servers:
            server.close()

    def open_connections(self) -> int:
        return sum(len(fe.clients) for fe in self.frontends)

    def hurry(self, deadline: float, why: str) -> None:
        """Bring the end of the drain forward to `deadline` (loop time); a later one changes nothing."""
        if deadline < self.deadline:
            self.deadline, self.why = deadline, why
            self._hurried.set()

    async def drain(self, bound: float, why: str, close_idle: bool, level: int) -> Drained:
        """Stop accepting, serve what is held until it has ended or `bound` seconds have passed (or the
        deadline hurry() sets), then close the rest. `close_idle`: a stop, not a reload (see the
        frontends' drain)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stop_accepting()
        if self.checker is not None:  # the next generation checks the members it carried over
            await self.checker.stop()
        self.hurry(started + bound, why)
        await asyncio.sleep(0)  # a connection the listener accepted just now gets its protocol first
        held = self.open_connections()
        log.log(
            level if held else logging.DEBUG,
            "generation %d: stopped accepting; waiting up to %s for %d connection(s) to end",
            self.number,
            format_duration(max(0.0, round(self.deadline - started, 3))),
            held,
        )
        for fe in self.frontends:
            fe.drain(close_idle)
        settled = loop.create_task(self._settled())
        try:
            while not settled.done():
                remaining = self.deadline - loop.time()
                if remaining <= 0:
                    break
                self._hurried.clear()
                hurried = loop.create_task(self._hurried.wait())
                await asyncio.wait((settled, hurried), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                hurried.cancel()
        finally:
            settled.cancel()
        closed = sum(fe.close_all() for fe in self.frontends)
        for fe in self.frontends:
            fe.stop()
        for server in self.asyncio_servers:
            await server.wait_closed()
        return Drained(self.number, loop.time() - started, held, closed, self.why)

    async def _settled(self) -> None:
        """Returns once no connection is open and none accepted is still in its TLS handshake (those
        were accepted before the listener closed: they are this generation's to serve)."""
        tls = [s for s in self.asyncio_servers if isinstance(s, TlsServer)]
        while True:
            for server in tls:
                await server.handshakes_done.wait()
            for fe in self.frontends:
                await fe.empty.wait()
            if all(s.handshakes_done.is_set() for s in tls) and all(f.empty.is_set() for f in self.frontends):
                return


def _mail_protocols(config: Config) -> list[tuple[MailProtocolName, MailProtocol]]:
    mail = config.mail
    if mail is None:
        return []
    found = (("imap", mail.imap), ("pop3", mail.pop3), ("smtp", mail.smtp))
    return [(name, settings) for name, settings in found if settings is not None]  # type: ignore[misc]


class Balancer:
    """The running balancer; implements `casarray.engine.control.Control` for the admin side."""

    def __init__(
        self, config: Config, config_path: str | Path | None = None, parts: Parts = ONE_PROCESS
    ) -> None:
        self.config = config
        self.parts = parts  # what this process builds (SUPERVISOR and WORKER: engine/supervisor.py)
        self.on_change: Callable[[Member, Transition], None] | None = None  # the supervisor's hook
        self.config_path = Path(config_path) if config_path is not None else None
        self.listeners = Listeners()
        self.current: Generation | None = None
        self.reloads = 0
        self.started = time.time()
        self._events: collections.deque[Event] = collections.deque(maxlen=500)
        self._draining: dict[Generation, asyncio.Task[Drained]] = {}  # oldest first
        self._reloads = SerialReloads(self._reload_once)
        self.access: AccessLog | None = None
        self._flusher: asyncio.TimerHandle | None = None
        # Operator states that last (engine/opstate.py): kept by the process that takes the decisions.
        self.opstates = opstate.Book(self.config_path if parts.checking else None)

    # --- life cycle ---------------------------------------------------------------------------------
    @property
    def _life_level(self) -> int:
        """Listening, stopped: a worker's are said once for all by its supervisor."""
        return logging.INFO if self.parts.checking else logging.DEBUG

    @property
    def _outcome_level(self) -> int:
        """A reload's outcome, a drain's end: under a supervisor, it logs them once its workers are
        done (its own half serves nothing)."""
        return logging.INFO if self.parts.whole else logging.DEBUG

    @property
    def servers(self) -> list[ServerState]:
        return self.current.servers if self.current else []

    @property
    def port(self) -> int:
        """The bound listener port (useful when https_port was 0 in tests)."""
        listen = self.config.listen
        return int(self.listeners.get(listen.address, listen.https_port).getsockname()[1])

    def _access_for(self, config: Config) -> AccessLog | None:
        """The access log a config asks for (the running one when its settings did not change)."""
        log_cfg = config.log
        current = self.access
        if (
            current is not None
            and log_cfg.access
            and current.path == log_cfg.file
            and current.json == (log_cfg.format == "json")
        ):
            return current
        new = AccessLog(log_cfg.file, log_cfg.format) if log_cfg.access else None
        if current is not None:
            current.close()
        self.access = new
        return new

    def _flush(self) -> None:
        if self.access is not None:
            self.access.flush()
        self._flusher = asyncio.get_running_loop().call_later(1.0, self._flush)

    def reopen_logs(self) -> None:
        """SIGUSR1: logrotate moved the access-log file."""
        if self.access is not None:
            self.access.reopen()
            log.info("access log reopened")

    async def start(self) -> None:
        self._access_for(self.config)
        self._flush()
        generation = Generation(self.config, 1)
        restore = self.opstates.load()  # operator states kept from the last run
        try:
            await generation.start(
                self.listeners, None, self._on_transition, self.access, self.parts, restore
            )
        except BaseException:
            generation.stop_accepting()
            if generation.checker is not None:
                await generation.checker.stop()
            self.listeners.close()
            raise
        self.current = generation
        self.opstates.restored(generation.states())
        listen = self.config.listen
        log.log(
            self._life_level,
            "listening on %s:%d (mode %s, %d servers, %d services, balance %s)",
            listen.address,
            self.port,
            self.config.mode,
            len(generation.servers),
            len(self.config.services),
            self.config.balance,
        )

    async def reload(self) -> str:
        """Read the config file again and run it; refuse it (keeping the running one) if anything is
        wrong. Serialised: a request during a reload is coalesced into one more reload after it."""
        return await self._reloads()

    async def _reload_once(self) -> str:
        _, config = await self.read_config()
        return await self.apply(config)

    async def read_config(self) -> tuple[bytes, Config]:
        """The config file's bytes and what they say, read and checked in a thread: parsing a big file
        on the loop would stall every connection. An invalid file is refused here (logged, raised)."""
        if self.config_path is None:
            raise CasarrayError("this balancer was not started from a file", "reload")
        try:
            return await asyncio.to_thread(read_config_file, self.config_path)
        except CasarrayError as exc:
            log.error("reload refused, the running config keeps serving: %s", str(exc).replace("\n", "; "))
            raise

    async def apply(self, config: Config) -> str:
        """Start a generation on `config` (checked); the one it replaces drains. Call under reload()."""
        old = self.current
        generation = Generation(config, (old.number + 1) if old else 1)
        try:
            await generation.start(
                self.listeners, old, self._on_transition, self._access_for(config), self.parts
            )
        except CasarrayError as exc:
            generation.stop_accepting()
            if generation.checker is not None:
                await generation.checker.stop()
            log.error("reload refused, the running config keeps serving: %s", exc)
            raise
        self.config = config
        self.current = generation
        self.reloads += 1
        self.listeners.keep_only(generation.listen_keys)
        if old is not None:
            self._retire(old)
        self._event("", "", "-", f"generation {generation.number}", "reload", str(self.config_path))
        outcome = f"reloaded {self.config_path}: generation {generation.number} serving"
        # Under a supervisor, it logs the outcome once its workers serve.
        log.log(self._outcome_level, "%s", outcome)
        return outcome

    def _retire(self, old: Generation) -> None:
        """The replaced generation serves what it holds, up to its own hard stop; beyond MAX_DRAINING
        generations draining, the oldest closes what it still holds."""
        bound = old.config.timeouts.hard_stop_after
        why = f"hard stop after {format_duration(bound)} (timeouts.hard_stop_after)"
        self._drain(old, bound, why, close_idle=False)
        draining = [g for g in self._draining if not g.capped]
        if len(draining) > MAX_DRAINING:
            oldest = draining[0]
            oldest.capped = True
            oldest.hurry(asyncio.get_running_loop().time(), f"more than {MAX_DRAINING} generations draining")

    def _drain(
        self, generation: Generation, bound: float, why: str, close_idle: bool
    ) -> asyncio.Task[Drained]:
        async def drain() -> Drained:
            level = self._outcome_level
            drained = await generation.drain(bound, why, close_idle, level)
            log.log(max(level, logging.WARNING) if drained.closed else level, "%s", drained.describe())
            return drained

        task = asyncio.get_running_loop().create_task(drain())
        self._draining[generation] = task
        task.add_done_callback(lambda _: self._draining.pop(generation, None))
        return task

    def hurry(self, grace: float, why: str | None = None) -> None:
        """Bound every drain under way by `grace` seconds from now (a stop after a reload)."""
        deadline = asyncio.get_running_loop().time() + grace
        why = why or f"grace over after {format_duration(grace)} (timeouts.grace)"
        for generation in list(self._draining):
            generation.hurry(deadline, why)

    async def stop(self, grace: float | None = None, reload: bool = False) -> Drained | None:
        """Stop accepting, let open connections finish for `grace` seconds, then close the rest; old
        generations still draining get the same bound. `reload`: this process was replaced by a
        reload (a supervised worker): it serves what it holds like an old generation, up to `grace`
        (its hard_stop_after). Returns how the current generation's drain ended."""
        current = self.current
        bound = self.config.timeouts.grace if grace is None else grace
        if current is not None:
            current.stop_accepting()
        self.listeners.close()  # refuse new connections at once: clients try another address
        self.hurry(bound)
        drained: Drained | None = None
        if current is not None:
            if reload:
                why = f"hard stop after {format_duration(bound)} (timeouts.hard_stop_after)"
            else:
                why = f"grace over after {format_duration(bound)} (timeouts.grace)"
            drained = await self._drain(current, bound, why, close_idle=not reload)
        await asyncio.gather(*self._draining.values(), return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
        if self.access is not None:
            self.access.close()
        log.log(self._life_level, "stopped")
        return drained

    def close_all(self) -> None:
        """A second signal: close every connection now, the old generations' too."""
        generations = {*self._draining, *([self.current] if self.current else [])}
        for generation in generations:
            for fe in generation.frontends:
                fe.close_all()

    def apply_health(self, server: str, service: str, up: bool, code: str, reason: str) -> None:
        """A worker learns a member's health from the supervisor's checker."""
        current = self.current
        if current is None:
            return
        went_down: list[Member] = []
        for state in current.states():
            member = state.members.get(service)
            if state.name == server and member is not None:
                if member.health.up and not up:
                    went_down.append(member)
                member.health.checked = True
                member.health.up = up
                member.health.last = CheckResult(up, code, reason, 0.0)
        current.refresh()
        self._members_down(went_down)

    def _on_transition(self, member: Member, transition: Transition) -> None:
        res = transition.result
        self._event(member.server.name, member.service, transition.old, transition.new, res.code, res.reason)
        if self.on_change is not None:
            self.on_change(member, transition)
        if self.current is not None:
            self.current.refresh()
        if transition.new == "down":
            self._members_down([member])

    def _members_down(self, members: Sequence[Member]) -> None:
        """HAProxy's `on-marked-down shutdown-sessions`, for what has no answer yet: in the current
        generation and in those still draining after a reload (each has server states of its own,
        matched by name, address and port; health is shared between them)."""
        if not members:
            return
        keys = {(m.server.name, m.server.address, m.server.port, m.service) for m in members}
        for generation in {*self._draining, *([self.current] if self.current else [])}:
            for fe in generation.frontends:
                for state in fe.servers:
                    for service in state.members:
                        if (state.name, state.address, state.port, service) in keys:
                            fe.member_down(state, service)

    def _event(self, server: str, service: str, old: str, new: str, code: str, reason: str) -> None:
        self._events.append(Event(time.time(), server, service, old, new, code, reason))

    # --- Control ------------------------------------------------------------------------------------
    def events(self, since: float = 0.0) -> Sequence[Event]:
        return [e for e in self._events if e.time > since]

    def set_operator(
        self,
        server: str,
        service: str | None,
        state: Operator,
        quiet: bool = False,
        *,
        reason: str = "",
        by: str = "",
    ) -> None:
        name, label, old = self._apply_operator(server, service, state)
        if not quiet:  # workers apply what the supervisor already logged
            change = self.opstates.record(name, label or None, old, state, reason, by)
            log.info("operator: %s%s %s", name, f"/{label}" if label else "", change)
            self._event(name, label, old.value, state.value, "operator", change)

    def _apply_operator(self, server: str, service: str | None, state: Operator) -> tuple[str, str, Operator]:
        """Put `state` on a server (service None) or one member in every pool of the current generation;
        (the server's name as configured, the service or "", the state it had). KeyError names what is
        unknown."""
        current = self.current
        if current is None:
            raise KeyError("the balancer is not running")
        # One server has a state in each pool (HTTPS, each mail port); the operator's word applies to all.
        targets = [s for s in current.states() if s.name.lower() == server.lower()]
        if not targets:
            raise KeyError(f"no server {server!r} (servers: {', '.join(s.name for s in current.servers)})")
        name = targets[0].name
        if service is None:
            old = targets[0].operator
            for target in targets:
                target.operator = state
            label = ""
        else:
            members = [t.members[service.lower()] for t in targets if service.lower() in t.members]
            if not members:
                services = sorted({m for t in targets for m in t.members})
                raise KeyError(f"no service {service!r} (services: {', '.join(services)})")
            old = members[0].operator
            for member in members:
                member.operator = state
            label = members[0].service
        current.refresh()
        for fe in current.frontends if state is Operator.MAINT else ():
            for target in targets:
                if target in fe.servers:
                    fe.close_server(target, label or None)
        return name, label, old

    def operator_settings(self) -> Sequence[opstate.Setting]:
        self.opstates.load()
        return list(self.opstates.held.values())

    def adopt_operators(self, settings: Sequence[opstate.Setting], source: str) -> list[Adoption]:
        """Settings from a peer, newest wins. Before the start (the peers are asked before the first
        connection is accepted) they only go into the book, which the first generation restores."""
        self.opstates.load()
        out: list[Adoption] = []
        for setting in settings:
            held = self.opstates.held.get(setting.key)
            if not opstate.newer(setting, held):
                if held == setting:
                    out.append(
                        Adoption(setting, "same", f"already {setting.state.value} ({setting.describe()})")
                    )
                else:
                    assert held is not None
                    out.append(
                        Adoption(setting, "kept", f"kept: {held.state.value} {held.describe()} is newer here")
                    )
                continue
            old = self._operator_of(setting)
            if old is None:
                out.append(Adoption(setting, "unknown", f"no {setting.label} in this node's config"))
                continue
            if self.current is not None:
                self._apply_operator(setting.server, setting.service, setting.state)
            change = self.opstates.adopt(setting, old)
            assert change is not None  # newer, checked above
            log.info("operator: %s %s (from %s)", setting.label, change, source)
            self._event(
                setting.server, setting.service or "", old.value, setting.state.value, "operator", change
            )
            out.append(Adoption(setting, "taken", change))
        return out

    def _operator_of(self, setting: opstate.Setting) -> Operator | None:
        """The operator state now on the setting's server or member; None when the running config has
        no such thing. Before the start: what the book holds (ready when nothing); one for a server the
        config lacks is reported when the first generation restores the book."""
        current = self.current
        if current is None:
            held = self.opstates.held.get(setting.key)
            return held.state if held is not None else Operator.READY
        for state in current.states():
            if state.name.lower() == setting.key[0]:
                if setting.service is None:
                    return state.operator
                member = state.members.get(setting.service)
                if member is not None:
                    return member.operator
        return None

    def counters(self) -> Counters:
        """What the current generation has counted: its listeners' counters and its servers' (a
        server has a state in each pool; summed under its name)."""
        current = self.current
        if current is None:
            return Counters()
        return sum((fe.counters() for fe in current.frontends), Counters.of_servers(current.states()))

    def snapshot(self) -> Snapshot:
        return self.view(self.counters())

    def view(self, counters: Counters, workers: int = 1) -> Snapshot:
        """The admin side's picture: servers, members and their health from this process, traffic
        from `counters` (this process's own, or what a supervisor's workers counted)."""
        states = self.current.states() if self.current is not None else []
        return snapshot_of(
            self.config, states, counters, self.reloads, workers, self.started, self.opstates.why
        )


def snapshot_of(
    config: Config,
    states: Sequence[ServerState],
    counters: Counters,
    reloads: int,
    workers: int,
    started: float,
    why: Callable[[str, str | None, Operator], tuple[str, str, float]] | None = None,
) -> Snapshot:
    """What the admin side sees (engine/control.py): one line per server whatever its pools, each
    member's health and operator state, and the traffic `counters` say."""
    first: dict[str, ServerState] = {}
    members: dict[str, dict[str, MemberView]] = {}
    services: list[str] = list(config.services)
    for s in states:
        first.setdefault(s.name, s)  # a server appears once per pool
        requests = counters.servers.get(s.name, ServerCounters()).requests
        views = members.setdefault(s.name, {})
        for name, m in s.members.items():
            last = m.health.last
            views[name] = MemberView(
                s.name,
                name,
                m.health.name,
                last.code if last else "",
                last.reason if last else "",
                round(last.duration * 1000, 1) if last else 0.0,
                _epoch(m.health.last_change) if m.health.checked else 0.0,
                m.operator.value,
                m.available,
                requests.get(name, 0),
                tuple(m.health.durations),
                round(m.health.duration_sum, 6),
                *(why(s.name, name, m.operator) if why else ()),
            )
            if name not in services:
                services.append(name)
    servers: list[ServerViewData] = []
    for name, s in first.items():
        c = counters.servers.get(name, ServerCounters())
        servers.append(
            ServerViewData(
                name,
                s.address,
                s.port,
                s.operator.value,
                c.active,
                c.peak,
                c.total,
                c.bytes_in,
                c.bytes_out,
                c.connect_errors,
                members[name],
                *(why(name, None, s.operator) if why else ()),
            )
        )
    return Snapshot(
        config.mode,
        config.namespace,
        tuple(services),
        tuple(servers),
        counters.clients,
        counters.clients_total,
        counters.refused,
        {service: dict(classes) for service, classes in counters.requests.items()},
        counters.queue,
        counters.tls_handshake_failures,
        reloads,
        workers,
        started,
        join_host_port(config.listen.address, config.listen.https_port),
        pools_of(config),
        counters.upstream_releases,
    )


def pools_of(config: Config) -> dict[str, tuple[str, ...]]:
    """Each pool a listener picks servers from, with the services a server must have available to be
    in it: l7 routes each service on its own; l4 sees no paths (ServerState.serves_all); a mail port
    has its one service."""
    pools: dict[str, tuple[str, ...]]
    if config.mode == "l7":
        pools = {name: (name,) for name in config.services}
    else:
        pools = {"l4": config.required_services}
    for protocol, settings in _mail_protocols(config):
        for port in settings.ports:
            name = mail_service(protocol, port)
            pools[name] = (name,)
    return pools


def _epoch(loop_time: float) -> float:
    """Epoch seconds of a time read on the running loop's clock."""
    return time.time() - (asyncio.get_running_loop().time() - loop_time)
