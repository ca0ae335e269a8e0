"""A deadline for the connect under way in the current task, cheaper than `asyncio.timeout`.

`asyncio.timeout` is interpreted Python costing a dozen frames per use, and both engines bound every
upstream connect (Layer 4 one per client connection, Layer 7 one per upstream connection). This is
the same rule made by hand: when the delay passes the task is cancelled, and `passed()` tells that
cancellation from any other (ours only if nobody else cancelled the task meanwhile, as
`asyncio.timeout` decides)."""

from __future__ import annotations

import asyncio


class Deadline:
    """Armed on creation for the current task; `cancel()` it when the guarded work ends."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def passed(self) -> bool:
        """The task's cancellation came from this deadline alone (it is then withdrawn)."""
        return self._expired and self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        self._handle.cancel()
