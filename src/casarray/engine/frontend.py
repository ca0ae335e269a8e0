"""What a generation (engine/balancer.py) asks of a listener's frontend, whatever it serves.

Three kinds satisfy it: the HTTPS listener in mode l4 (engine/l4.py L4Frontend), in mode l7
(engine/l7.py L7Frontend), and each mail port (an L4Frontend on its own pool). The generation knows
nothing else of them, so a new kind of listener is one class with these members, checked by mypy where
the generation builds it.

The life of one: built with its pool, `start` once the loop runs; `refresh` after every health or
operator change; on a reload or a stop `drain`, then `close_all` at the drain's bound, then `stop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Protocol

from casarray.balance.state import ServerState
from casarray.engine.accesslog import AccessLog
from casarray.engine.counters import Counters

__all__ = ["Frontend"]


class Frontend(Protocol):
    access: AccessLog | None  # where each connection or request is logged (None: no access log)

    @property
    def servers(self) -> Sequence[ServerState]:
        """The pool this listener sends connections to (its own server states)."""
        ...

    @property
    def clients(self) -> Collection[object]:
        """The client connections open now (a refused one that lingers is not among them)."""
        ...

    @property
    def empty(self) -> asyncio.Event:
        """Set while no client connection is open: what a drain waits for."""
        ...

    def protocol_factory(self) -> asyncio.Protocol:
        """A protocol for one accepted connection (the listener's factory)."""
        ...

    def start(self) -> None:
        """Start the timers (idle sweep); the loop runs."""
        ...

    def refresh(self) -> None:
        """Health or operator state changed: recompute who takes traffic (engine/pools.py logs it)."""
        ...

    def counters(self) -> Counters:
        """What this listener counted (its pool's servers are counted by the generation)."""
        ...

    def member_down(self, server: ServerState, service: str) -> None:
        """The checks marked `server` down for `service`: what waits on it with no answer yet is
        retried or closed now (HAProxy's on-marked-down shutdown-sessions)."""
        ...

    def close_server(self, server: ServerState, service: str | None) -> None:
        """Maintenance (operator state maint): close the connections to `server` now."""
        ...

    def drain(self, close_idle: bool) -> None:
        """The listener stopped accepting: serve what is held. `close_idle` (a stop, not a reload):
        connections with no request under way may go at once."""
        ...

    def close_all(self) -> int:
        """Close every connection now (a drain's bound, or a second signal); how many there were."""
        ...

    def stop(self) -> None:
        """The generation is gone: stop the timers and tasks, log the refusals still counted."""
        ...
