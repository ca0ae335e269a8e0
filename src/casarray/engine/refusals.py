"""What a listener does with a client it will not serve: log it without flooding the log, and (l7) answer
it before closing.

Every refusal leaves a trace, but a flood of them (a client hammering a full listener, a scanner
opening thousands of connections) must not turn the log into the bottleneck or bury the lines around
it. So each kind of refusal logs its first occurrence in full, then at most one summary line per
interval with the count of those it did not print (the spirit of the kernel's printk_ratelimit).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from casarray.engine.tlsfd import TlsTransport

__all__ = ["LINGER_MAX", "LINGER_S", "Answered", "RefusalLog", "Throttle"]

# After the balancer's own final answer on a connection it closes: how long it goes on reading (and
# discarding) what the client still sends, and how many connections may linger so at once
# (TlsTransport.linger: RFC 9112 §9.6, "lingering close").
LINGER_S = 2.0
LINGER_MAX = 256


class Throttle:
    """Sans-I/O: decides which refusals are printed. The first after a quiet interval is printed at once;
    the ones after it, within `interval`, are only counted, and `summary` hands the count over when the
    interval ends (then a new interval starts, so a steady flood gives one summary line per interval)."""

    __slots__ = ("interval", "suppressed", "window_end")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.window_end = float("-inf")
        self.suppressed = 0

    def admit(self, now: float) -> bool:
        """True: print this refusal in full. False: it is counted for the next summary."""
        if now >= self.window_end and not self.suppressed:
            self.window_end = now + self.interval
            return True
        self.suppressed += 1
        return False

    def summary(self, now: float) -> int:
        """Call at `window_end`: how many refusals were not printed (0: none, nothing to log)."""
        count, self.suppressed = self.suppressed, 0
        if count:
            self.window_end = now + self.interval
        return count


class RefusalLog:
    """One kind of refusal ("limits.maxconn reached", ...): the event loop's side of a Throttle."""

    __slots__ = ("_level", "_log", "_throttle", "_timer", "what")

    def __init__(self, log: logging.Logger, level: int, what: str, interval: float = 1.0) -> None:
        self._log = log
        self._level = level
        self.what = what  # the summary line's reason, e.g. "limits.maxconn (20000) reached"
        self._throttle = Throttle(interval)
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, message: str, *args: Any) -> None:
        """Log `message % args` now, or count it for the summary line at the end of the interval."""
        loop = asyncio.get_running_loop()
        throttle = self._throttle
        if throttle.admit(loop.time()):
            self._log.log(self._level, message, *args)
        elif self._timer is None:
            self._timer = loop.call_at(throttle.window_end, self._summarise)

    def _summarise(self) -> None:
        self._timer = None
        throttle = self._throttle
        count = throttle.summary(asyncio.get_running_loop().time())
        if count:
            self._log.log(
                self._level,
                "refused %d more connection(s) in the last %gs: %s",
                count,
                throttle.interval,
                self.what,
            )

    def flush(self) -> None:
        """Log what is counted now (the listener stops): no refusal goes unreported."""
        if self._timer is not None:
            self._timer.cancel()
            self._summarise()


class Answered(asyncio.Protocol):
    """Takes over a connection the balancer answers and closes at once (l7 over `limits.maxconn`): writes
    the answer, then lingers (TlsTransport.linger) so that the client reads it whole instead of a reset.
    `lingering` counts one listener's connections still open this way, bounded by LINGER_MAX."""

    __slots__ = ("_counted", "_lingering")

    def __init__(self, transport: asyncio.Transport, answer: bytes, lingering: list[int]) -> None:
        self._lingering = lingering
        self._counted = isinstance(transport, TlsTransport) and lingering[0] < LINGER_MAX
        transport.set_protocol(self)
        transport.write(answer)
        if self._counted:
            assert isinstance(transport, TlsTransport)
            lingering[0] += 1
            transport.linger(LINGER_S)
        else:  # too many lingering already: close now, the client may see a reset instead
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._lingering[0] -= 1
