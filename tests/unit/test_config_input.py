"""The loader's boundary: whatever bytes a config file holds, the answer is a Config or ConfigErrors
with one clear line per problem (file, line, what was found, what is expected) — never a traceback,
and never more than a bounded amount of time and memory."""

from __future__ import annotations

import codecs
import pickle
import time
import tracemalloc
from pathlib import Path

import pytest

from casarray.config import ConfigErrors, load_config, parse_config
from casarray.config.load import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_PROBLEMS
from casarray.config.units import parse_duration, parse_size
from tests.config_inputs import BAD_INPUTS, END, VALID, BadInput

# Bounds below are CPU seconds of this process (not wall time, which a loaded machine stretches),
# set several times above what each input takes here: they catch a runaway (a 20 MiB file took 16 s,
# a merge chain 162 s), they are not speed targets.


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    return info.value.problems


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
def test_each_odd_input_is_one_clear_error(bad: BadInput, tmp_path: Path) -> None:
    path = tmp_path / "casarray.yaml"
    path.write_bytes(bad.data)
    started = time.process_time()
    problems = problems_of(path)
    elapsed = time.process_time() - started
    assert len(problems) == 1, problems
    problem = problems[0]
    where = f"{path}:{bad.line}: " if bad.line is not None else f"{path}: "
    assert problem.startswith(where), problem
    for words in bad.says:
        assert words in problem, problem
    assert "Traceback" not in problem
    assert len(problem) < 400, problem
    assert elapsed < 15.0, f"{bad.name}: {elapsed:.2f}s"  # the worst (50 000 values) takes ~2 s


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
def test_parse_config_takes_the_same_bytes(bad: BadInput) -> None:
    """Callers that hold the bytes already (a reload handing workers the checked file) get the same."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(bad.data, "casarray.yaml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("casarray.yaml:")


def test_the_valid_base_is_valid() -> None:
    assert parse_config(VALID, "casarray.yaml").servers[0].name == "MB1"


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_a_byte_order_mark_says_how_to_decode(encoding: str, bom: bytes, tmp_path: Path) -> None:
    """YAML 1.2 §5.2: UTF-8, UTF-16 and UTF-32 are all YAML; Windows editors save 'Unicode' as UTF-16 LE
    with a BOM. Such a file is read, and its problems still name the right line."""
    path = tmp_path / "casarray.yaml"
    path.write_bytes(bom + VALID.encode(encoding))
    assert load_config(path) == parse_config(VALID)
    path.write_bytes(bom + (VALID + "mode: l9\n").encode(encoding))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{END}: mode: ")


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.write(VALID.encode())
        f.truncate(20 * 1024 * 1024)  # 20 MiB, sparse: what blocked a reload for 16 s
    started = time.process_time()
    (problem,) = problems_of(path)
    assert time.process_time() - started < 2.0
    assert problem == (
        f"{path}: the file is {20 * 1024 * 1024} bytes; expected a config file of at most 1 MiB "
        f"({MAX_CONFIG_BYTES} bytes; a real one is a few KiB)"
    )


def test_a_device_or_pipe_is_read_no_further_than_the_cap() -> None:
    """stat() says 0 bytes for /dev/zero: the read itself is bounded."""
    started = time.process_time()
    (problem,) = problems_of(Path("/dev/zero"))
    assert time.process_time() - started < 10.0
    assert problem.startswith("/dev/zero: the file is more than 1048576 bytes; expected a config file")


def test_a_file_at_the_cap_is_parsed(tmp_path: Path) -> None:
    text = VALID + "#" * (MAX_CONFIG_BYTES - len(VALID) - 1) + "\n"
    path = tmp_path / "full.yaml"
    path.write_text(text)
    assert len(text) == MAX_CONFIG_BYTES
    started = time.process_time()
    assert load_config(path).namespace == "outlook.alwayshotcafe.com"
    assert time.process_time() - started < 10.0


def test_aliases_are_never_expanded_even_where_the_model_walks_them() -> None:
    """'Billion laughs' under a key the model validates: 10^9 leaves if anything copied them."""
    anchors = ["x:", "  a: &a [" + ", ".join(["owa"] * 10) + "]"]
    for level in range(1, 9):
        this, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        anchors.append(f"  {this}: &{this} [" + ", ".join([f"*{prev}"] * 10) + "]")
    text = VALID + "\n".join(anchors) + "\nservices: *i\nl4_require: *i\n"
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ConfigErrors) as info:
            parse_config(text, "casarray.yaml")
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 6.0
    assert peak < 50 * 1024 * 1024
    assert len(info.value.problems) <= MAX_PROBLEMS + 1


def test_the_longest_merge_chain_allowed_is_cheap() -> None:
    links = MAX_ALIASES  # one alias per link after the first
    text = VALID + "chain:\n  m0: &m0 {k0: 1}\n"
    text += "".join(f"  m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}\n" for i in range(1, links + 1))
    started = time.process_time()
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "casarray.yaml")
    assert time.process_time() - started < 10.0
    assert info.value.problems == [
        f"casarray.yaml:{END}: chain: unknown key 'chain'; expected one of: namespace, autodiscover, mode, "
        "listen, tls, upstream_tls, servers, services, l4_require, balance, affinity, retries, "
        "affinity_cookie, trusted_proxies, host_check, health, timeouts, limits, admin, peers, log, workers, mail"
    ]


def test_a_config_of_a_thousand_servers_is_well_within_the_caps() -> None:
    servers = "".join(
        f"  - {{name: MB{i}, address: 10.0.{i // 250}.{i % 250 + 1}, port: 443, weight: 1}}\n"
        for i in range(1000)
    )
    text = "namespace: outlook.alwayshotcafe.com\nservers:\n" + servers
    assert len(text) < MAX_CONFIG_BYTES // 10
    started = time.process_time()
    assert len(parse_config(text).servers) == 1000
    assert time.process_time() - started < 10.0


def test_a_flood_of_problems_is_cut_short() -> None:
    text = VALID + "".join(f"unknown{i}: 1\n" for i in range(5000))
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "casarray.yaml")
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].startswith(f"casarray.yaml:{END}: unknown0: unknown key 'unknown0'")
    assert problems[-1] == f"casarray.yaml: … and {5000 - MAX_PROBLEMS} more problems"


def test_config_errors_survive_pickling() -> None:
    """A reload may parse in another process: the problems must arrive as the same list."""
    errors = ConfigErrors(["a.yaml:1: one", "a.yaml:2: two"])
    copy = pickle.loads(pickle.dumps(errors))
    assert isinstance(copy, ConfigErrors)
    assert copy.problems == errors.problems
    assert str(copy) == "a.yaml:1: one\na.yaml:2: two"


def test_yaml_quirks_that_warn_are_read_quietly() -> None:
    """A reused anchor and a YAML 1.1 float without a dot make ruamel warn; pytest turns warnings into
    errors, and an admin would see a library's warning text instead of a result."""
    text = "%YAML 1.1\n---\n" + VALID + "health: {interval: &t 1e1, timeout: &t 3}\n"
    config = parse_config(text, "casarray.yaml")
    assert config.health.interval == 10.0
    assert config.health.timeout == 3.0


def test_a_key_that_is_not_a_name_says_so() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(VALID + "? [a, b]\n: 1\n", "casarray.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(f"casarray.yaml:{END}: ")
    assert "expected a key name" in problem


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), "9" * 400 + "s"])
def test_durations_are_finite(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["9" * 400 + "KiB", "9" * 400, float("inf")])
def test_sizes_are_finite(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("services: !!int [owa]", "found a list tagged !!int; expected a plain value"),
        ("health: !!float {interval: 5s}", "found a mapping tagged !!float; expected a plain value"),
        ("services: !!timestamp [owa]", "found a list tagged !!timestamp; expected a plain value"),
        ("services: !!bool [owa]", "invalid YAML: expected a scalar node, but found sequence"),
        ("mode: !!map l4", "invalid YAML: expected a mapping node, but found scalar"),
        ("workers: !!int", "found '', which is not an integer"),
    ],
)
def test_a_tag_on_the_wrong_kind_of_node_is_named(line: str, says: str) -> None:
    """Found by the long fuzz run: a scalar's tag on a list reached code that expects text."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(VALID + line + "\n", "casarray.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(f"casarray.yaml:{END}: {says}"), problem
