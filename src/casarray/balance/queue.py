"""A bounded FIFO of clients waiting for a connection slot, each with a deadline. Sans-I/O: takes `now`."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class WaitQueue(Generic[T]):
    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, deadline: float) -> bool:
        """Queue `item` until `deadline`; False when the queue is full (the caller refuses the client)."""
        if len(self._items) >= self.capacity:
            return False
        self._items.append((deadline, item))
        return True

    def pop(self) -> T | None:
        """The oldest item, or None. Call `expired(now)` first so no item past its deadline is served."""
        return self._items.popleft()[1] if self._items else None

    def expired(self, now: float) -> list[T]:
        """Remove and return every item whose deadline has passed (FIFO, so they sit at the front)."""
        out: list[T] = []
        while self._items and self._items[0][0] <= now:
            out.append(self._items.popleft()[1])
        return out

    def remove(self, item: T) -> bool:
        """Forget `item` (its client went away while waiting)."""
        for entry in self._items:
            if entry[1] is item:
                self._items.remove(entry)
                return True
        return False

    def next_deadline(self) -> float | None:
        return self._items[0][0] if self._items else None
