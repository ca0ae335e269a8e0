import pytest

from casarray.config.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1h", 3600.0),
        ("2m", 120.0),
        ("1.5s", 1.5),
        (30, 30.0),
        (0.5, 0.5),
        ("7", 7.0),
        (" 1H ", 3600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "", "s", "-1s", True, None, [1], "1 hour"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 * 1024**2), ("35MB", 35_000_000), ("1GiB", 1024**3), (1024, 1024), ("10k", 10_000)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size("12 parsecs")


@pytest.mark.parametrize(("seconds", "text"), [(3600, "1h"), (0.25, "250ms"), (90, "90s"), (120, "2m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
