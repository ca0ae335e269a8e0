"""The operator-state file (engine/opstate.py): atomic saves, a corrupt file, servers the config lost."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from casarray.balance.state import Member, Operator, ServerState
from casarray.config.model import Server
from casarray.engine import opstate
from casarray.health.state import HealthState


def server_state(name: str, services: tuple[str, ...] = ("owa", "ews")) -> ServerState:
    state = ServerState(Server(name=name, address="127.0.0.2"), "127.0.0.2", 443)
    for service in services:
        state.members[service] = Member(state, service, HealthState(2, 2))
    return state


def test_state_file_sits_next_to_the_config(tmp_path: Path) -> None:
    assert opstate.state_path(tmp_path / "casarray.yaml") == tmp_path / "casarray.yaml.state.json"


def test_a_recorded_state_is_saved_and_read_back(tmp_path: Path) -> None:
    book = opstate.Book(tmp_path / "casarray.yaml")
    change = book.record("MB2", None, Operator.READY, Operator.DRAIN, "CU14", "alice (ctl)")
    assert change == "ready -> drain by alice (ctl): CU14"
    book.record("MB1", "ews", Operator.READY, Operator.MAINT, "", "api")
    data = json.loads((tmp_path / "casarray.yaml.state.json").read_text())
    assert data["version"] == 1
    assert [(s["server"], s["service"], s["state"], s["reason"]) for s in data["states"]] == [
        ("MB1", "ews", "maint", ""),
        ("MB2", None, "drain", "CU14"),
    ]
    again = opstate.Book(tmp_path / "casarray.yaml")
    restore = again.load()
    assert restore is not None
    mb2, mb1 = server_state("MB2"), server_state("mb1")  # names match whatever their case
    restore(mb2)
    restore(mb1)
    assert mb2.operator is Operator.DRAIN
    assert mb1.operator is Operator.READY
    assert mb1.members["ews"].operator is Operator.MAINT
    assert again.why("MB2", None, Operator.DRAIN)[:2] == ("CU14", "alice (ctl)")
    assert again.why("MB2", None, Operator.READY) == ("", "", 0.0)  # not the state in force


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "casarray.yaml.state.json"
    first = [opstate.Setting("MB2", None, Operator.DRAIN, "CU14", "ctl", 1.0, 1.0)]
    opstate.save(path, first)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        opstate.save(path, [opstate.Setting("MB2", None, Operator.READY, "", "ctl", 2.0, 2.0)])
    assert synced  # the data reached the disk before the rename was tried
    assert opstate.parse(path.read_bytes()) == first  # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the temporary file is gone


def test_a_corrupt_file_is_one_line_and_every_server_starts_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "casarray.yaml.state.json"
    path.write_bytes(b'{"version": 1, "states": [{"server": "MB2", "sta')  # cut by a crash of another tool
    book = opstate.Book(tmp_path / "casarray.yaml")
    with caplog.at_level(logging.INFO, "casarray"):
        assert book.load() is None
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    line = caplog.records[0].getMessage()
    assert str(path) in line
    assert "not JSON" in line
    assert "every server starts ready" in line


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xfe{", "not UTF-8"),
        (b"[]", '"states" list'),
        (b'{"version": 2, "states": []}', "version 2"),
        (b'{"version": 1, "states": [{"server": "MB1", "state": "off"}]}', "states[0].state: 'off'"),
        (b'{"version": 1, "states": [{"server": "", "state": "drain"}]}', "states[0].server"),
    ],
)
def test_parse_says_what_is_wrong(data: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        opstate.parse(data)


def test_unknown_servers_and_services_are_ignored_with_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "casarray.yaml.state.json"
    opstate.save(
        path,
        [
            opstate.Setting("MB2", None, Operator.DRAIN, "CU14", "ctl", 1.0, 1.0),
            opstate.Setting("MB9", None, Operator.MAINT, "gone", "ctl", 1.0, 1.0),
            opstate.Setting("MB2", "imap:993", Operator.DRAIN, "", "ctl", 1.0, 1.0),
        ],
    )
    book = opstate.Book(tmp_path / "casarray.yaml")
    restore = book.load()
    assert restore is not None
    mb2 = server_state("MB2")
    restore(mb2)
    with caplog.at_level(logging.INFO, "casarray"):
        book.restored([mb2])
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 3
    warnings = sorted(m for level, m in lines if level == "WARNING")
    assert warnings[0].startswith("operator states: MB2/imap:993 in ")
    assert warnings[1].startswith("operator states: MB9 in ")
    assert all("is not in the config" in w and w.endswith("ignored") for w in warnings)
    assert (
        "INFO",
        f"operator: MB2 drain since 1970-01-01 {_hhmm(1.0)} by ctl: CU14 (kept in {path})",
    ) in lines


def _hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def test_repeated_actions_say_what_changed(tmp_path: Path) -> None:
    book = opstate.Book(None)  # in memory only
    book.record("MB2", None, Operator.READY, Operator.DRAIN, "CU13", "ctl")
    since = book.why("MB2", None, Operator.DRAIN)[2]
    change = book.record("MB2", None, Operator.DRAIN, Operator.DRAIN, "CU14", "bob (ctl)")
    assert change == "still drain, reason now 'CU14' (was 'CU13') by bob (ctl)"
    assert book.why("MB2", None, Operator.DRAIN) == ("CU14", "bob (ctl)", since)  # since: the drain's
    change = book.record("MB2", None, Operator.DRAIN, Operator.DRAIN, "CU14", "bob (ctl)")
    assert change == "already drain, nothing changed (by bob (ctl): CU14)"
    assert not list(tmp_path.iterdir())


def test_reasons_are_one_bounded_printable_line() -> None:
    assert opstate.clean_text("CU14\nforged line\x1b[31m", 200) == "CU14 forged line [31m"
    assert len(opstate.clean_text("x" * 500, opstate.REASON_LIMIT)) == opstate.REASON_LIMIT


def test_an_unwritable_directory_is_one_line_and_the_state_still_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = opstate.Book(tmp_path / "missing-dir" / "casarray.yaml")
    with caplog.at_level(logging.INFO, "casarray"):
        change = book.record("MB2", None, Operator.READY, Operator.DRAIN, "", "ctl")
    assert change.startswith("ready -> drain")
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "would not be after a restart" in caplog.records[0].getMessage()
    assert book.why("MB2", None, Operator.DRAIN)[1] == "ctl"


# --- versions: newest wins between nodes (admin/peers.py) --------------------------------------------


def setting(state: Operator, changed: float, reason: str = "", service: str | None = None) -> opstate.Setting:
    return opstate.Setting("MB2", service, state, reason, "alice (ctl)", changed - 1.0, changed)


def test_each_setting_carries_its_version_and_a_file_without_one_reads_as_old_as_its_state() -> None:
    book = opstate.Book(None)
    book.record("MB2", None, Operator.READY, Operator.DRAIN, "CU13", "ctl")
    first = book.held[("mb2", None)]
    book.record("MB2", None, Operator.DRAIN, Operator.DRAIN, "CU14", "ctl")
    second = book.held[("mb2", None)]
    assert second.since == first.since  # the drain began then ...
    assert second.changed > first.changed  # ... the setting was written again
    data = b'{"version": 1, "states": [{"server": "MB2", "service": null, "state": "drain", "since": 5.0}]}'
    assert opstate.parse(data)[0].changed == 5.0
    assert opstate.parse(opstate.render([second])) == [second]


@pytest.mark.parametrize("value", ["1", True, None, float("inf")])
def test_a_version_that_is_not_epoch_seconds_is_named(value: object) -> None:
    document = {"version": 1, "states": [{"server": "MB2", "state": "drain", "since": 1.0, "changed": value}]}
    with pytest.raises(ValueError, match=r"^states\[0\]\.changed: expected epoch seconds$"):
        opstate.settings_of(document)


def test_newest_wins_and_a_tie_is_ordered_the_same_way_on_every_node() -> None:
    old, new = setting(Operator.DRAIN, 10.0), setting(Operator.READY, 20.0)
    assert opstate.newer(new, old)
    assert not opstate.newer(old, new)
    assert opstate.newer(old, None)
    assert not opstate.newer(old, old)  # the same setting changes nothing
    # Written in the same instant on two nodes: each node picks the same one, so they converge.
    a, b = setting(Operator.DRAIN, 10.0), setting(Operator.MAINT, 10.0)
    assert opstate.newer(b, a) != opstate.newer(a, b)


def test_a_change_is_newer_than_what_it_replaces_even_behind_a_fast_clock() -> None:
    book = opstate.Book(None)
    ahead = setting(Operator.DRAIN, time.time() + 3600.0)  # written on a node whose clock is an hour fast
    assert book.adopt(ahead, Operator.READY) == "ready -> drain by alice (ctl)"
    book.record("MB2", None, Operator.DRAIN, Operator.READY, "", "bob (ctl)")
    mine = book.held[("mb2", None)]
    assert mine.state is Operator.READY
    assert opstate.newer(mine, ahead)  # a sync with that node cannot bring the drain back
    assert opstate.version_after(None, 7.0) == 7.0


def test_adopt_takes_only_newer_settings_and_keeps_them_in_the_file(tmp_path: Path) -> None:
    book = opstate.Book(tmp_path / "casarray.yaml")
    book.load()
    assert (
        book.adopt(setting(Operator.DRAIN, 10.0, "CU14"), Operator.READY)
        == "ready -> drain by alice (ctl): CU14"
    )
    assert book.adopt(setting(Operator.MAINT, 5.0), Operator.DRAIN) is None  # older: the drain stays
    assert book.adopt(setting(Operator.DRAIN, 10.0, "CU14"), Operator.DRAIN) is None  # the same one
    change = book.adopt(setting(Operator.DRAIN, 11.0, "CU15"), Operator.DRAIN)
    assert change == "still drain, reason now 'CU15' (was 'CU14') by alice (ctl)"
    kept = opstate.load(tmp_path / "casarray.yaml.state.json")
    assert kept == {("mb2", None): setting(Operator.DRAIN, 11.0, "CU15")}
    # Taken before the start, they are not read over by the start's load.
    assert book.load() is not None
    assert book.held == kept
