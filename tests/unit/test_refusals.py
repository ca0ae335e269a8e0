"""The refusal throttle (engine/refusals.py Throttle), driven with plain numbers for the clock."""

from casarray.engine.refusals import Throttle


def test_first_refusal_is_printed_the_rest_of_the_second_counted() -> None:
    throttle = Throttle(1.0)
    assert throttle.admit(10.0)
    assert [throttle.admit(10.0 + i / 100) for i in range(1, 50)] == [False] * 49
    assert throttle.window_end == 11.0
    assert throttle.summary(11.0) == 49
    # A steady flood: one summary per interval, no full line while it lasts.
    assert not throttle.admit(11.5)
    assert throttle.summary(12.0) == 1
    # After a quiet interval the next refusal is printed in full again.
    assert throttle.summary(13.0) == 0
    assert throttle.admit(13.2)
    assert throttle.summary(14.2) == 0


def test_refusals_spaced_wider_than_the_interval_are_each_printed() -> None:
    throttle = Throttle(1.0)
    assert all(throttle.admit(t * 1.5) for t in range(10))
