"""The log of pool changes: a server joining or leaving a listener's pool, a service losing or
regaining its last member.

A part of its own, built by the process that runs the health checks — the single process, or the
supervisor, never its workers — so each change is logged once however many processes serve, and a
supervisor needs no frontend to say it. Each line goes to the logger of the layer it speaks for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from casarray.balance.state import ServerState

__all__ = ["ServerPoolLog", "ServicePoolLog"]

l4_log = logging.getLogger("casarray.l4")
l7_log = logging.getLogger("casarray.l7")


class ServerPoolLog:
    """An l4 listener (the HTTPS one in mode l4, or a mail port): Layer 4 sees no paths, so a server
    is in the pool only while every required service is up (ServerState.serves_all)."""

    def __init__(self, name: str, servers: Sequence[ServerState], required: tuple[str, ...]) -> None:
        self.name = name  # "l4", or "imap:993" for a mail listener
        self.servers = servers
        self.required = required
        self._in: set[ServerState] = set()

    def refresh(self) -> None:
        before = self._in
        after = self._in = {s for s in self.servers if s.serves_all(self.required)}
        for server in self.servers:
            if server in after and server not in before:
                l4_log.info(
                    "server %s joins the %s pool (%d of %d up)",
                    server.name,
                    self.name,
                    len(after),
                    len(self.servers),
                )
            elif server in before and server not in after:
                l4_log.warning(
                    "server %s leaves the %s pool: %s (%d of %d up)",
                    server.name,
                    self.name,
                    server.why_out(self.required),
                    len(after),
                    len(self.servers),
                )
        if not after and before:
            l4_log.error("no server is up: new connections will be closed at once")


class ServicePoolLog:
    """The l7 listener: each service is routed on its own, so what is logged is a service losing its
    last available member (its requests get 503) or regaining one."""

    def __init__(self, services: Sequence[str], servers: Sequence[ServerState]) -> None:
        self.services = services
        self.servers = servers
        self._available: dict[str, bool] = {}

    def refresh(self) -> None:
        for name in self.services:
            available = any(s.members[name].available for s in self.servers)
            if available != self._available.get(name, True):
                if available:
                    l7_log.info("%s is available again", name)
                else:
                    l7_log.error("no server is available for %s: its requests get 503", name)
            self._available[name] = available
