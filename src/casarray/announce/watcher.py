"""The loop of `casarray announce`: every interval, check this node's casarray; while it is healthy keep
BIRD's static protocol (the VIP's route) enabled, otherwise disabled.

- Rise and fall as for servers (health/state.py): the first check decides at once, then `fall` failed
  checks in a row withdraw and `rise` passed checks announce again. A withdrawal moves this node's
  flows to the other nodes (ECMP rehashes them) and breaks their connections, so one slow check must
  not do it; a dead casarray is withdrawn after `fall` intervals.
- The state is told to BIRD on every check, not only on a transition: a BIRD that restarted or was
  reconfigured (`birdc configure` restarts the protocol as the file says: disabled) is put right within
  one interval, with a log line saying so.
- One log line per transition; BIRD trouble is logged when it starts and when it ends, not every second.
- On stop the route is withdrawn: nothing would watch casarray any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from casarray.announce.bird import DEFAULT_BIRDC, DEFAULT_SOCKET, BirdError, Reply, command, parse_reply
from casarray.config.units import format_duration
from casarray.health.state import CheckResult, HealthState

log = logging.getLogger("casarray.announce")

# Is this node's casarray healthy? `ok` and `reason` say so; `code` is "ok" or "fail", as `casarray ctl
# health` prints them (cli/announce.py runs that check in-process).
Check = Callable[[], Awaitable[CheckResult]]


@dataclass(frozen=True, slots=True)
class Birdc:
    """BIRD's command-line client, run once per command against BIRD's control socket."""

    socket: str = DEFAULT_SOCKET
    program: str = DEFAULT_BIRDC
    timeout: float = 5.0

    async def set(self, protocol: str, enable: bool, reason: str) -> Reply:
        args = [self.program, "-s", self.socket, *command(protocol, enable, reason)]
        where = f"birdc {'enable' if enable else 'disable'} {protocol}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise BirdError(f"cannot run {self.program}: {exc.strerror or exc}", where=where) from None
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BirdError(f"no answer within {format_duration(self.timeout)}", where=where) from None
        return parse_reply(protocol, enable, output.decode("utf-8", "replace"))


class Announcer:
    """Keeps `protocols` (BIRD static protocols holding `routes`) enabled while `check` passes."""

    def __init__(
        self,
        protocols: Sequence[str],
        routes: Sequence[str],
        check: Check,
        birdc: Birdc,
        *,
        interval: float = 1.0,
        rise: int = 2,
        fall: int = 2,
    ) -> None:
        self.protocols = tuple(protocols)
        self.routes = ", ".join(routes)
        self.check = check
        self.birdc = birdc
        self.interval = interval
        self.health = HealthState(rise=rise, fall=fall)
        self._told: dict[str, bool | None] = dict.fromkeys(self.protocols)  # what BIRD last confirmed
        self._trouble: str | None = None  # the BIRD error being reported, until BIRD answers again

    async def run(self, stop: asyncio.Event) -> None:
        """Check and tell BIRD every interval until `stop` is set; then withdraw."""
        loop = asyncio.get_running_loop()
        log.info(
            "announcing %s through BIRD (%s, socket %s) while casarray is healthy: a check every %s, "
            "rise %d, fall %d",
            self.routes,
            ", ".join(self.protocols),
            self.birdc.socket,
            format_duration(self.interval),
            self.health.rise,
            self.health.fall,
        )
        due = loop.time()
        try:
            while not stop.is_set():
                await self.step(loop.time())
                due = max(due + self.interval, loop.time())  # a slow check delays, never piles up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), due - loop.time())
        finally:
            log.info("stopping: withdrawing %s", self.routes)
            await self._tell(False, "casarray announce stopped")

    async def step(self, now: float) -> None:
        """One check, its verdict, and BIRD told."""
        result = await self.check()
        transition = self.health.record(result, now)
        if transition is not None:
            self._log_transition(transition.old, result)
        await self._tell(self.health.up, _reason(result))

    def _log_transition(self, old: str, result: CheckResult) -> None:
        why = f"{result.code}: {result.reason}"
        if self.health.up:
            log.info("announcing %s: casarray is healthy (%s)", self.routes, why)
        elif old == "init":
            log.warning("not announcing %s: casarray is not healthy (%s)", self.routes, why)
        else:
            log.warning(
                "withdrawing %s: casarray is not healthy (%s), %d failed checks in a row",
                self.routes,
                why,
                self.health.fall,
            )

    async def _tell(self, enable: bool, reason: str) -> None:
        for protocol in self.protocols:
            try:
                reply = await self.birdc.set(protocol, enable, reason)
            except BirdError as exc:
                self._told[protocol] = None
                if self._trouble != str(exc):
                    self._trouble = str(exc)
                    log.error("%s; trying again every %s", exc, format_duration(self.interval))
                continue
            if self._trouble is not None:
                self._trouble = None
                log.info("BIRD answers again: %s %s", protocol, "enabled" if reply.enabled else "disabled")
            elif reply.changed and self._told[protocol] == enable:
                # BIRD had lost the state it had confirmed: it restarted, or `birdc configure` restarted
                # the protocol as bird.conf has it (disabled).
                log.warning(
                    "BIRD had %s %s (restarted or reconfigured?): %s it again",
                    protocol,
                    "disabled" if enable else "enabled",
                    "enabled" if enable else "disabled",
                )
            self._told[protocol] = enable


def _reason(result: CheckResult) -> str:
    """The message BIRD shows next to the protocol."""
    return f"casarray announce: {result.code}: {result.reason}"
