"""Operator states across nodes (`peers:`): a state set on one node is pushed to the others at once, a
node that starts takes the newer states of the others before it accepts a connection, and every
`peers.sync_interval` each node reads the others' states again, so one that missed a push (unreachable
at the time) catches up. Newest wins, per server and per member (engine/opstate.py, `newer`).

The wire is each node's own admin API (plain HTTP, the bearer token of `peers.token_file`, else
`admin.token_file`): `GET /api/peers/states` gives a node's settings, `POST /api/peers/states` hands it
settings to adopt. Both carry the state file's document. A node adopts what it is handed and never
pushes it on: a change travels one hop, from the node where it was made, so it cannot loop.

Every node's list may name every node: a node finds itself by its admin.listen (`is_this_node`) and
leaves itself out, so one config file serves all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from casarray.admin.api import STATES_PATH
from casarray.admin.auth import split_listen
from casarray.admin.server import read_token
from casarray.config.model import Config
from casarray.config.units import format_duration
from casarray.engine.control import Adoption, Control
from casarray.engine.opstate import Setting, document, newer, settings_of
from casarray.errors import reason_of
from casarray.netaddr import split_host_port

__all__ = ["Answer", "PeerError", "Peers", "is_this_node"]

log = logging.getLogger("casarray.peers")

_WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Answer:
    """One node's answer to a pushed change."""

    node: str  # its admin URL, as listed in peers.nodes
    ok: bool  # the change is in force there
    outcome: str  # what it did, or why it did not answer or refused

    def json(self) -> dict[str, Any]:
        return {"node": self.node, "ok": self.ok, "outcome": self.outcome}


class PeerError(Exception):
    """A node that did not answer, refused, or did not answer what a casarray answers."""


async def _addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()  # a name that does not resolve names no local address
    return {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Is `address` one of this machine's? The kernel routes a local address to itself, choosing that
    address as the source: connecting a UDP socket asks the route and sends nothing (unlike binding,
    which net.ipv4.ip_nonlocal_bind, set for a keepalived VIP, lets succeed for any address)."""
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((str(address), 9))
        except OSError:
            return False
        return ipaddress.ip_address(str(probe.getsockname()[0]).partition("%")[0]) == address


async def is_this_node(url: str, listen: str) -> bool:
    """Does the admin URL `url` (as peers.nodes holds it) name this node, whose admin API listens on
    `listen`? Yes when the ports are equal and the addresses are the same — or, with a wildcard
    listen address (0.0.0.0, ::), when the URL's address is one of this machine's."""
    host, port = split_host_port(url.removeprefix("http://"))
    listen_host, listen_port = split_listen(listen)
    if port != listen_port:
        return False
    targets = await _addresses(host)
    if listen_host in _WILDCARDS:
        return any(_is_local(address) for address in targets)
    return bool(targets & await _addresses(listen_host))


def _label(settings: Sequence[Setting]) -> str:
    return ", ".join(f"{s.label} {s.state.value}" for s in settings)


class Peers:
    """The other nodes, as seen from this one: push a change to them, sync with them."""

    def __init__(
        self,
        control: Control,
        others: Sequence[str],
        me: str,
        token: str | None,
        timeout: float,
        interval: float,
    ) -> None:
        self.control = control
        self.others = list(others)
        self.me = me  # this node's URL, as the others know it (for their log lines)
        self.timeout = timeout
        self.interval = interval
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: an http_proxy meant for the internet must not capture calls between nodes.
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, headers=headers)
        self._silent: set[str] = set()  # nodes whose last sync failed (said once, and when they are back)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def from_config(cls, config: Config, control: Control) -> Peers:
        """Read the token (StartupError when it cannot be) and find this node in peers.nodes."""
        peers, admin = config.peers, config.admin
        assert peers is not None
        assert admin is not None  # the config's rules: peers needs admin
        if peers.token_file is not None:
            token: str | None = read_token(peers.token_file, "peers.token_file")
        else:
            token = read_token(admin.token_file) if admin.token_file is not None else None
        selves = [url for url in peers.nodes if await is_this_node(url, admin.listen)]
        others = [url for url in peers.nodes if url not in selves]
        me = selves[0] if selves else f"http://{admin.listen}"
        every = format_duration(peers.sync_interval)
        if not others:
            log.warning("peers: every node in peers.nodes is this one (%s): nothing to share", me)
        else:
            found = f"this node is {', '.join(selves)}" if selves else f"this node ({me}) is not listed"
            log.info("peers: %s; the others: %s (synced every %s)", found, ", ".join(others), every)
        return cls(control, others, me, token, peers.timeout, peers.sync_interval)

    # --- the wire -------------------------------------------------------------------------------------
    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._client.request(method, url + STATES_PATH, json=body)
        except httpx.ConnectError as exc:
            raise PeerError(f"does not answer ({reason_of(exc)})") from None
        except httpx.TimeoutException:
            raise PeerError(
                f"did not answer within {format_duration(self.timeout)} (peers.timeout)"
            ) from None
        except httpx.HTTPError as exc:
            raise PeerError(f"failed: {reason_of(exc)}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            said = " ".join(str(error or response.text.strip()[:200]).split())
            if response.status_code in (401, 403):
                raise PeerError(
                    f"refused: {response.status_code} {said} (peers.token_file, else admin.token_file, "
                    "must hold that node's admin token)"
                )
            raise PeerError(f"answered {response.status_code}: {said}")
        if not isinstance(data, dict):
            raise PeerError("did not answer JSON (is that a casarray admin API?)")
        return data

    async def _states(self, url: str) -> list[Setting]:
        data = await self._call("GET", url)
        try:
            return settings_of(data)
        except ValueError as exc:
            raise PeerError(f"answered states this node cannot read: {exc}") from None

    async def _push_to(self, url: str, settings: Sequence[Setting]) -> Answer:
        try:
            data = await self._call("POST", url, {**document(settings), "node": self.me})
        except PeerError as exc:
            return Answer(url, False, f"not taken: {exc}")
        results = data.get("results")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            return Answer(
                url, False, "not taken: the answer holds no results (is that a casarray admin API?)"
            )
        held = all(r.get("holds") is True for r in results)
        outcome = "; ".join(str(r.get("outcome", "")) for r in results)
        return Answer(url, held and bool(results), outcome if held else f"not taken: {outcome}")

    # --- what the node does ---------------------------------------------------------------------------
    async def push(self, settings: Sequence[Setting]) -> list[Answer]:
        """Hand settings just made on this node to every other node, at once; one line says how each
        answered. A node that did not take them catches up at its next sync."""
        if not self.others:
            return []
        answers = list(await asyncio.gather(*(self._push_to(url, settings) for url in self.others)))
        failed = [a for a in answers if not a.ok]
        said = "; ".join(f"{a.node} {'took it' if a.ok else a.outcome}" for a in answers)
        if failed:
            log.warning(
                "peers: %s pushed to %d node(s), %d did not take it (it reaches them at their next sync "
                "with this node): %s",
                _label(settings),
                len(answers),
                len(failed),
                said,
            )
        else:
            log.info("peers: %s pushed: %s", _label(settings), said)
        return answers

    async def sync(self, at_start: bool = False) -> None:
        """Read every other node's states and take the newer ones. At start, also hand each node the
        states this one holds newer than its own (so a node that was changed alone shares it at once)."""
        await asyncio.gather(*(self._sync_with(url, at_start) for url in self.others))

    async def _sync_with(self, url: str, at_start: bool) -> None:
        try:
            theirs = await self._states(url)
        except PeerError as exc:
            if at_start:
                log.warning("peers: %s %s: starting with this node's own states", url, exc)
            elif url not in self._silent:
                log.warning("peers: %s %s; trying again every %s", url, exc, format_duration(self.interval))
            self._silent.add(url)
            return
        back = url in self._silent and not at_start
        self._silent.discard(url)
        adopted = self.control.adopt_operators(theirs, f"peer {url}")
        taken = [a.setting for a in adopted if a.result == "taken"]
        if at_start or taken or back:
            log.info("peers: %s%s", url, _sync_words(adopted, taken, back))
        if at_start:
            known = {s.key: s for s in theirs}
            mine = [s for s in self.control.operator_settings() if newer(s, known.get(s.key))]
            if mine:
                answer = await self._push_to(url, mine)
                level = logging.INFO if answer.ok else logging.WARNING
                log.log(level, "peers: gave %s this node's newer %s: %s", url, _label(mine), answer.outcome)

    def start(self) -> None:
        """Sync with every node each sync_interval, until close()."""
        self._task = asyncio.get_running_loop().create_task(self._every())

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception:  # a fault of this code: said, and the next round still runs
                log.exception("peers: the sync failed")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()


def _sync_words(adopted: Sequence[Adoption], taken: Sequence[Setting], back: bool) -> str:
    """' answers again; took 1 of its 3 states (MB2 drain)', ' holds nothing newer (3 states)'."""
    head = " answers again;" if back else ""
    if taken:
        return f"{head} took {len(taken)} of its {len(adopted)} state(s): {_label(taken)}"
    unknown = [a.setting for a in adopted if a.result == "unknown"]
    extra = f"; {len(unknown)} for what this config does not have: {_label(unknown)}" if unknown else ""
    return f"{head} holds nothing newer than this node ({len(adopted)} state(s)){extra}"
