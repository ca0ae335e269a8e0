"""One periodic sweep per listener instead of a timer per connection.

Timeouts (idle, request head, response start) are checked by walking the open connections every
`tick` seconds; a connection only stores numbers (deadlines, byte counters), so the hot path arms and
cancels no timer. The resolution of every timeout is one tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol


class Swept(Protocol):
    def sweep(self, now: float) -> None: ...


class Sweeper:
    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.now = 0.0  # loop time of the last sweep
        self._handle: asyncio.TimerHandle | None = None

    def start(self, connections: Iterable[Swept]) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        self._handle = loop.call_later(self.tick, self._run, connections)

    def _run(self, connections: Iterable[Swept]) -> None:
        loop = asyncio.get_running_loop()
        self.now = now = loop.time()
        for connection in list(connections):
            connection.sweep(now)
        self._handle = loop.call_later(self.tick, self._run, connections)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
