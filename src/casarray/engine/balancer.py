"""The running balancer: resolves servers, runs health checks, opens the listener, stops gracefully.

Start-up is all-or-nothing: every step that can fail (address resolution, CA file, binding the port)
runs before traffic is accepted, and anything already started is stopped again on failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable

from casarray.balance.algorithm import make_algorithm
from casarray.balance.state import Member, ServerState
from casarray.config.model import Config
from casarray.engine.l4 import L4Frontend
from casarray.engine.l7 import HttpRedirector, L7Frontend
from casarray.engine.tls import server_context, upstream_context
from casarray.errors import StartupError
from casarray.exchange import catalog
from casarray.health.checker import HealthChecker, HttpsProbe
from casarray.health.state import HealthState, Transition

log = logging.getLogger("casarray")


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


class Balancer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.servers: list[ServerState] = []
        self.frontend: L4Frontend | L7Frontend | None = None
        self.checker: HealthChecker | None = None
        self._server: asyncio.Server | None = None
        self._redirect: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound listener port (useful when https_port was 0 in tests)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        config = self.config
        if config.mail is not None:
            raise StartupError(
                "mail listeners are not available in this version", "mail", "remove the mail: section"
            )
        if config.admin is not None:
            log.warning("admin: the admin API is not available in this version; the section is ignored")
        addresses = await resolve(config)
        ssl_context = upstream_context(config)
        loop = asyncio.get_running_loop()
        now = loop.time()
        probes: list[tuple[Member, HttpsProbe]] = []
        for server_config, address in zip(config.servers, addresses, strict=True):
            state = ServerState(server_config, address)
            for name in config.services:
                member = Member(state, name, HealthState(config.health.rise, config.health.fall))
                state.members[name] = member
                if not config.health.enabled:
                    member.health.force_up(now)
                probes.append(
                    (
                        member,
                        HttpsProbe(
                            address,
                            server_config.port,
                            catalog.get(name).health_path,
                            config.check_server_name,
                            ssl_context,
                            config.health.timeout,
                        ),
                    )
                )
            self.servers.append(state)
        frontend: L4Frontend | L7Frontend
        listen = config.listen
        server_ssl: ssl.SSLContext | None = None
        if config.mode == "l7":
            server_ssl = server_context(config)
            frontend = L7Frontend(config, self.servers, ssl_context)
        else:
            frontend = L4Frontend(config, self.servers, make_algorithm(config.balance, config.affinity))
        self._server = await self._listen(
            frontend.protocol_factory, listen.address, listen.https_port, server_ssl
        )
        if config.mode == "l7" and listen.http_port is not None:
            namespace = config.namespace.encode()
            try:
                self._redirect = await self._listen(
                    lambda: HttpRedirector(namespace, listen.https_port),
                    listen.address,
                    listen.http_port,
                    None,
                )
            except StartupError:
                self._server.close()
                raise
        self.frontend = frontend
        frontend.start()
        if config.health.enabled:
            self.checker = HealthChecker(
                probes, config.health.interval, config.health.jitter, self._on_transition
            )
            await self.checker.first_round()
            frontend.refresh()
            self.checker.start()
        else:
            log.warning("health checks are disabled (health.enabled: false): every server counts as up")
            frontend.refresh()
        await self._server.start_serving()
        if self._redirect is not None:
            await self._redirect.start_serving()
        log.info(
            "listening on %s:%d (mode %s, %d servers, %d services, balance %s)",
            listen.address,
            self.port,
            config.mode,
            len(self.servers),
            len(config.services),
            config.balance,
        )

    async def _listen(
        self,
        factory: Callable[[], asyncio.Protocol],
        address: str,
        port: int,
        server_ssl: ssl.SSLContext | None,
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        try:
            return await loop.create_server(
                factory,
                address,
                port,
                reuse_address=True,
                backlog=4096,
                ssl=server_ssl,
                start_serving=False,
                ssl_handshake_timeout=self.config.timeouts.request_header if server_ssl else None,
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {address}:{port}: {os.strerror(exc.errno) if exc.errno else exc}",
                "listen",
                "is another process using the port, or is the address not local?",
            ) from None

    def _on_transition(self, member: Member, transition: Transition) -> None:
        if self.frontend is not None and self.checker is not None and self.checker.running:
            self.frontend.refresh()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let open connections finish for `grace` seconds, then close the rest."""
        if self._server is not None:
            self._server.close()
        if self._redirect is not None:
            self._redirect.close()
        if self.frontend is not None:
            open_now = len(self.frontend.clients)
            if open_now:
                log.info(
                    "stopped accepting; waiting up to %.0fs for %d connection(s)",
                    self.config.timeouts.grace if grace is None else grace,
                    open_now,
                )
            await self.frontend.drain(self.config.timeouts.grace if grace is None else grace)
        if self.checker is not None:
            await self.checker.stop()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("stopped")
