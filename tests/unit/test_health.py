import pytest

from casarray.health.state import CheckResult, HealthState
from casarray.health.verdict import judge
from casarray.http.decode import ResponseStart
from casarray.http.errors import ProtocolError

OK = CheckResult(True, "L7OK", "HTTP 200", 0.01)
BAD = CheckResult(False, "L7STS", "HTTP 503", 0.01)


def test_first_result_decides_at_once() -> None:
    state = HealthState(rise=3, fall=3)
    assert state.name == "init"
    transition = state.record(OK, 1.0)
    assert transition is not None
    assert (transition.old, transition.new) == ("init", "up")


def test_fall_then_rise() -> None:
    state = HealthState(rise=2, fall=3)
    state.record(OK, 0.0)
    assert state.record(BAD, 1.0) is None
    assert state.record(BAD, 2.0) is None
    transition = state.record(BAD, 3.0)
    assert transition is not None
    assert (transition.old, transition.new, transition.result.code) == ("up", "down", "L7STS")
    assert state.record(OK, 4.0) is None
    transition = state.record(OK, 5.0)
    assert transition is not None
    assert transition.new == "up"
    assert state.last_change == 5.0


def test_a_success_between_failures_resets_the_count() -> None:
    state = HealthState(rise=2, fall=2)
    state.record(OK, 0.0)
    state.record(BAD, 1.0)
    state.record(OK, 2.0)
    assert state.record(BAD, 3.0) is None
    assert state.up


@pytest.mark.parametrize(
    ("status", "body", "ok", "code"),
    [
        (200, b"200 OK<br/>MB1.ALWAYSHOTCAFE.COM", True, "L7OK"),
        (503, b"503 Service Unavailable", False, "L7STS"),
        (302, b"", False, "L7STS"),
        (401, b"", False, "L7STS"),
        (200, b"<html>IIS welcome</html>", False, "L7RSP"),
    ],
)
def test_verdict(status: int, body: bytes, ok: bool, code: str) -> None:
    assert judge(status, body)[:2] == (ok, code)


def test_verdict_reasons() -> None:
    assert judge(503, b"")[2] == "HTTP 503"
    assert "MB1.ALWAYSHOTCAFE.COM" in judge(200, b"200 OK<br/>MB1.ALWAYSHOTCAFE.COM")[2]


def test_response_start_in_pieces() -> None:
    start = ResponseStart()
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 34\r\nX-FEServer: MB1\r\n\r\n"
        b"200 OK<br/>MB1.ALWAYSHOTCAFE.COM\r\n"
    )
    for i in range(len(raw)):
        start.feed(raw[i : i + 1])
    assert start.done
    assert start.status == 200
    assert start.body.startswith(b"200 OK<br/>MB1")


def test_response_start_delimited_by_close() -> None:
    start = ResponseStart()
    start.feed(b"HTTP/1.0 200 OK\r\n\r\n200 OK")
    assert not start.done
    start.eof()
    assert start.done
    assert start.body == b"200 OK"
    assert not start.cut_short


def test_response_start_garbage_and_early_close() -> None:
    start = ResponseStart()
    with pytest.raises(ProtocolError) as info:
        start.feed(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert info.value.status == 502
    with pytest.raises(ProtocolError, match="closed before a response"):
        ResponseStart().eof()


def test_response_start_keeps_only_the_start_of_a_big_body() -> None:
    start = ResponseStart(keep=16)
    start.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50_000)
    assert start.done
    assert start.body == b"x" * 16


def test_check_durations_are_counted_in_buckets() -> None:
    from casarray.health.state import CHECK_BUCKETS

    state = HealthState(rise=1, fall=1)
    for duration in (0.001, 0.02, 0.02, 7.0):
        state.record(CheckResult(True, "L7OK", "", duration), 0.0)
    assert state.durations[0] == 1
    assert state.durations[CHECK_BUCKETS.index(0.025)] == 2
    assert state.durations[-1] == 1  # +Inf
    assert abs(state.duration_sum - 7.041) < 1e-9
