"""Layer 4 admission: which client connection gets a server now, waits for a slot, or is refused, and
which server a connecting client tries next. Sans-I/O: the shell (engine/l4.py) passes `now` and acts on
the answers (opens connections, arms the queue timer, closes and logs what is refused).

Rules (HAProxy's `maxconn` with a FIFO queue and `timeout queue`; `retries` on connect failures):
- a client is served only while fewer than `maxconn` clients are connecting or relaying and some
  eligible server is below its own `maxconn`; otherwise it waits in the queue, up to its capacity;
- no eligible server at all: refused at once (waiting would not help);
- waiting clients are served oldest first as slots free up, and refused once their deadline passes;
- a connect failure moves on to another eligible server not tried yet, `retries` times at most.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Generic, TypeVar

from casarray.balance.algorithm import Picker
from casarray.balance.queue import WaitQueue
from casarray.balance.state import ServerState

C = TypeVar("C")


class Verdict(enum.Enum):
    SERVE = "serve"  # a slot is taken: connect to a server
    QUEUE = "queue"  # waits in the queue for a slot
    NO_SERVER = "no-server"  # refused: no server is eligible (HAProxy termination SC)
    QUEUE_FULL = "queue-full"  # refused: maxconn reached and the queue is full (PQ)


class Admission(Generic[C]):
    """One listener's connection slots, its wait queue and its eligible servers."""

    __slots__ = ("eligible", "maxconn", "queue", "queue_timeout", "retries", "serving")

    def __init__(self, maxconn: int, queue_capacity: int, queue_timeout: float, retries: int) -> None:
        self.maxconn = maxconn
        self.queue_timeout = queue_timeout
        self.retries = retries
        self.queue: WaitQueue[C] = WaitQueue(queue_capacity)
        self.serving = 0  # clients holding a slot: connecting or relaying
        self.eligible: list[ServerState] = []

    def has_room(self) -> bool:
        return (
            self.serving < self.maxconn
            and bool(self.eligible)
            and not all(server.full for server in self.eligible)
        )

    def admit(self, client: C, now: float) -> Verdict:
        """A client was accepted: serve it (its slot is taken), queue it, or refuse it."""
        if not self.eligible:
            return Verdict.NO_SERVER
        if self.has_room():
            self.serving += 1
            return Verdict.SERVE
        return Verdict.QUEUE if self.queue.push(client, now + self.queue_timeout) else Verdict.QUEUE_FULL

    def next_server(self, picker: Picker, address: str, tried: Sequence[ServerState]) -> ServerState | None:
        """The server a connecting client tries next, or None: its retries are spent, or every eligible
        server is full, down or tried already."""
        if len(tried) > self.retries:
            return None
        candidates = [s for s in self.eligible if not s.full and s not in tried]
        return picker.pick(candidates, address) if candidates else None

    def release(self) -> None:
        """A client that held a slot is done (relayed and closed, or never connected)."""
        self.serving -= 1

    def expired(self, now: float) -> list[C]:
        """Waiting clients whose deadline has passed, removed from the queue: the shell refuses them."""
        return self.queue.expired(now)

    def next_waiting(self) -> C | None:
        """The oldest waiting client when a slot is free, its slot taken; None otherwise. Call
        `expired(now)` first so that no client past its deadline is served."""
        if not self.queue or not self.has_room():
            return None
        client = self.queue.pop()
        if client is not None:
            self.serving += 1
        return client

    def forget(self, client: C) -> None:
        """A waiting client went away."""
        self.queue.remove(client)

    def next_deadline(self) -> float | None:
        return self.queue.next_deadline()
