"""Operator states that last: what an operator set (ready, drain, maint), why, by whom and since when,
kept in a small JSON file next to the config so that a restart does not put a drained server back into
service behind the operator's back.

The file is `<config>.state.json` (`casarray.yaml` -> `casarray.yaml.state.json`), one JSON object:

    {"version": 1, "states": [{"server": "MB2", "service": null, "state": "drain", "reason": "CU14",
                               "by": "alice (ctl)", "since": 1700000000.0, "changed": 1700000000.0}]}

`service` null is the whole server. `since` is when the state began; `changed` when the setting was last
written (a new reason changes it, not `since`): it is the setting's version, and between nodes
(admin/peers.py) the newest wins, per server and per member. The same document is what nodes exchange. `parse` and `render` are pure (bytes in, bytes out); `load` and
`save` are the only I/O. A save is atomic (temporary file in the same directory, fsync, rename, fsync of
the directory, as SQLite and PostgreSQL do for their small control files): after a crash the file holds
either the old states or the new ones, never half of each.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from casarray.balance.state import Operator, ServerState

__all__ = [
    "BY_LIMIT",
    "REASON_LIMIT",
    "Book",
    "Setting",
    "clean_text",
    "describe_change",
    "document",
    "load",
    "newer",
    "parse",
    "read_json",
    "render",
    "restore",
    "save",
    "settings_of",
    "state_path",
    "unmatched",
    "version_after",
]

log = logging.getLogger("casarray")

VERSION = 1
MAX_BYTES = 1 << 20  # a state file is a few hundred bytes; anything bigger is not one
REASON_LIMIT = 200
BY_LIMIT = 100

Key = tuple[str, str | None]  # (server name lower-cased, service or None for the whole server)


@dataclass(frozen=True, slots=True)
class Setting:
    """One operator decision: on a whole server (service None) or one member."""

    server: str
    service: str | None
    state: Operator
    reason: str
    by: str
    since: float  # epoch seconds: when this state began
    changed: float  # epoch seconds: when this setting was last written (its version)

    @property
    def key(self) -> Key:
        return (self.server.lower(), self.service)

    @property
    def label(self) -> str:
        return f"{self.server}/{self.service}" if self.service else self.server

    def describe(self) -> str:
        """'by alice (ctl): CU14' — who and why, for log lines and events."""
        return f"by {self.by}" + (f": {self.reason}" if self.reason else "")

    @property
    def order(self) -> tuple[float, str, str, str, float]:
        """What "newer" compares: the version, then the rest, so that two settings written in the same
        instant on two nodes are still ordered the same way on every node (each converges to one)."""
        return (self.changed, self.state.value, self.reason, self.by, self.since)


def newer(candidate: Setting, held: Setting | None) -> bool:
    """Does `candidate` replace `held` (newest wins)? Equal settings do not."""
    return held is None or candidate.order > held.order


def version_after(previous: Setting | None, now: float) -> float:
    """The version of a setting written at `now` over `previous`: a change is always newer than what it
    replaces, even when this node's clock is behind the one that wrote `previous` (a Lamport clock's
    rule), so a peer with a fast clock cannot undo it at the next sync."""
    return now if previous is None else max(now, previous.changed + 0.001)


def state_path(config_path: Path) -> Path:
    """Where the states of the balancer run from `config_path` are kept."""
    return config_path.with_name(config_path.name + ".state.json")


def clean_text(text: str, limit: int) -> str:
    """A reason or a name as one printable line of bounded length: it ends up in log lines, where a
    newline or an escape sequence from an API caller could forge or hide other lines."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def document(settings: Iterable[Setting]) -> dict[str, object]:
    """The states as the JSON object of the file (and of the peers' API)."""
    states = [
        {
            "server": s.server,
            "service": s.service,
            "state": s.state.value,
            "reason": s.reason,
            "by": s.by,
            "since": s.since,
            "changed": s.changed,
        }
        for s in sorted(settings, key=lambda s: (s.key[0], s.service or ""))
    ]
    return {"version": VERSION, "states": states}


def render(settings: Iterable[Setting]) -> bytes:
    return (json.dumps(document(settings), indent=2, ensure_ascii=False) + "\n").encode()


def parse(data: bytes) -> list[Setting]:
    """The settings of a state file's bytes. ValueError says what is wrong, in the admin's words."""
    return settings_of(read_json(data))


def read_json(data: bytes) -> object:
    """The JSON value of a state document's bytes (a file, or a peer's request)."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"{len(data)} bytes, more than a state file ever holds ({MAX_BYTES})")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def settings_of(content: object) -> list[Setting]:
    """The settings of a state document already read as JSON (a peer's request body)."""
    if not isinstance(content, dict) or not isinstance(content.get("states"), list):
        raise ValueError('expected an object with a "states" list')
    if content.get("version") != VERSION:
        raise ValueError(f"version {content.get('version')!r}, expected {VERSION}")
    out: list[Setting] = []
    for i, item in enumerate(content["states"]):
        where = f"states[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        server, service = item.get("server"), item.get("service")
        if not isinstance(server, str) or not server:
            raise ValueError(f"{where}.server: expected a server name")
        if service is not None and (not isinstance(service, str) or not service):
            raise ValueError(f"{where}.service: expected a service name or null")
        try:
            state = Operator(item.get("state"))
        except ValueError:
            expected = ", ".join(o.value for o in Operator)
            raise ValueError(f"{where}.state: {item.get('state')!r}, expected one of {expected}") from None
        since = _seconds(item.get("since", 0.0), f"{where}.since")
        # A file written before versions: the setting is as old as its state.
        changed = _seconds(item.get("changed", since), f"{where}.changed")
        reason, by = item.get("reason", ""), item.get("by", "")
        if not isinstance(reason, str) or not isinstance(by, str):
            raise ValueError(f"{where}: reason and by must be text")
        out.append(
            Setting(
                server,
                service.lower() if service else None,
                state,
                clean_text(reason, REASON_LIMIT),
                clean_text(by, BY_LIMIT),
                since,
                changed,
            )
        )
    return out


def _seconds(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{where}: expected epoch seconds")
    return float(value)


def load(path: Path) -> dict[Key, Setting]:
    """The states kept in `path`; none when it does not exist. A file that cannot be read or parsed
    leaves one error line and no states: every server starts ready (the file is rewritten at the next
    operator action, so the problem does not linger)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.error(
            "operator states: cannot read %s (%s): every server starts ready", path, exc.strerror or exc
        )
        return {}
    try:
        settings = parse(data)
    except ValueError as exc:
        log.error("operator states: %s is not a state file (%s): every server starts ready", path, exc)
        return {}
    return {s.key: s for s in settings}


def save(path: Path, settings: Iterable[Setting]) -> None:
    """Write the states atomically. Raises OSError (the caller logs it: the states still apply in
    memory, they just would not survive a restart)."""
    data = render(settings)
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # POSIX rename(2): atomic on the same file system
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory is (fsync(2), "Notes").
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def restore(state: ServerState, saved: Mapping[Key, Setting]) -> None:
    """Put the kept states on one server state (and its members) of a new generation."""
    setting = saved.get((state.name.lower(), None))
    if setting is not None:
        state.operator = setting.state
    for name, member in state.members.items():
        setting = saved.get((state.name.lower(), name))
        if setting is not None:
            member.operator = setting.state


def unmatched(saved: Mapping[Key, Setting], states: Sequence[ServerState]) -> list[Setting]:
    """Kept settings for a server or service the running config does not have."""
    known: dict[str, set[str]] = {}
    for state in states:
        known.setdefault(state.name.lower(), set()).update(state.members)
    return [
        s
        for s in saved.values()
        if s.key[0] not in known or (s.service is not None and s.service not in known[s.key[0]])
    ]


class Book:
    """The operator states of one running balancer with who set them and why, and their file.

    `config_path` None (a worker, or a balancer not run from a file): kept in memory only."""

    def __init__(self, config_path: Path | None) -> None:
        self.path = state_path(config_path) if config_path is not None else None
        self.held: dict[Key, Setting] = {}
        self._loaded = False

    def load(self) -> Callable[[ServerState], None] | None:
        """Read the file (once: states taken from the peers before the start are not read over); what
        puts its states on each server of the first generation (None: none)."""
        if not self._loaded:
            self.held = load(self.path) if self.path is not None else {}
            self._loaded = True
        return partial(restore, saved=self.held) if self.held else None

    def restored(self, states: Sequence[ServerState]) -> None:
        """One line per kept state put back, and per kept state the config no longer has."""
        missing = unmatched(self.held, states)
        for setting in missing:
            log.warning(
                "operator states: %s in %s is not in the config (%s %s): ignored",
                setting.label,
                self.path,
                setting.state.value,
                setting.describe(),
            )
        for setting in self.held.values():
            if setting not in missing and setting.state is not Operator.READY:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(setting.since))
                log.info(
                    "operator: %s %s since %s %s (kept in %s)",
                    setting.label,
                    setting.state.value,
                    when,
                    setting.describe(),
                    self.path,
                )

    def record(
        self, server: str, service: str | None, old: Operator, new: Operator, reason: str, by: str
    ) -> str:
        """Note an operator action and save the file; returns what changed, in words, for the one log
        line and event of the action ("ready -> drain by alice (ctl): CU14", "still drain, reason now
        …", "already drain, nothing changed …") — never "drain -> drain"."""
        reason = clean_text(reason, REASON_LIMIT)
        by = clean_text(by, BY_LIMIT) or "api"
        before = self.held.get((server.lower(), service))
        same = old is new and before is not None and before.state is new
        # `since` is when the state began: a repeated drain with a new reason does not restart it.
        now = time.time()
        since = before.since if same and before else now
        setting = Setting(server, service, new, reason, by, since, version_after(before, now))
        change = describe_change(old, setting, before)
        self._keep(setting)
        return change

    def adopt(self, setting: Setting, old: Operator) -> str | None:
        """Take a setting written on another node if it is newer than the one held (newest wins) and
        save the file; returns what changed, in words, or None when the one held stays."""
        before = self.held.get(setting.key)
        if not newer(setting, before):
            return None
        self._keep(setting)
        return describe_change(old, setting, before)

    def _keep(self, setting: Setting) -> None:
        self.held[setting.key] = setting
        if self.path is not None:
            try:
                save(self.path, self.held.values())
            except OSError as exc:
                log.error(
                    "operator states: cannot write %s (%s): %s is %s now but would not be after a restart",
                    self.path,
                    exc.strerror or exc,
                    setting.label,
                    setting.state.value,
                )

    def why(self, server: str, service: str | None, state: Operator) -> tuple[str, str, float]:
        """(reason, by, since) of the operator state in force when it was set through the API; empty
        for a state nobody set (or one the file knew under another state)."""
        setting = self.held.get((server.lower(), service))
        if setting is None or setting.state is not state:
            return ("", "", 0.0)
        return (setting.reason, setting.by, setting.since)


def describe_change(old: Operator, setting: Setting, before: Setting | None) -> str:
    """A setting written over `before` (the member or server was in `old`), in words."""
    new = setting.state
    if old is not new:
        return f"{old.value} -> {new.value} {setting.describe()}"
    if before is not None and before.state is new and before.reason != setting.reason:
        return f"still {new.value}, reason now {setting.reason!r} (was {before.reason!r}) by {setting.by}"
    return f"already {new.value}, nothing changed ({setting.describe()})"
