"""Config files no admin means to write but some editor, script or attacker will: each must give ONE
clear error naming the file (and line), what was found and what is expected — never a traceback.

Shared by the loader's unit tests and the reliability tests that feed them to `casarray check`,
`casarray run` and a reload (SIGHUP and the admin API)."""

from __future__ import annotations

from dataclasses import dataclass

# A valid config of three lines; each bad input changes it so the problem lands on a known line.
VALID = "namespace: outlook.alwayshotcafe.com\nservers:\n  - {name: MB1, address: 127.0.0.1}\n"
END = VALID.count("\n") + 1  # the line of anything appended to VALID


@dataclass(frozen=True)
class BadInput:
    name: str
    data: bytes
    line: int | None  # the line the problem names; None: the file as a whole
    says: tuple[str, ...]  # what the one problem must mention (what was found, what is expected)


def _laughs() -> str:
    """'Billion laughs': 9 levels of 10 aliases each, 10^9 leaves if anything expanded them."""
    lines = ["lol:", "  a: &a [" + ", ".join(["lol"] * 10) + "]"]
    for level in range(1, 9):
        this, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"  {this}: &{this} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _merge_chain(links: int) -> str:
    """Each mapping merges the previous one: quadratic copying if nothing bounds it."""
    return "chain:\n  m0: &m0 {k0: 1}\n" + "".join(
        f"  m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}\n" for i in range(1, links)
    )


def _nested_block(levels: int) -> str:
    return "health:\n" + "".join(" " * i + "k:\n" for i in range(1, levels)) + " " * levels + "v\n"


_TOO_BIG = (VALID + ("#" * 1023 + "\n") * 1100).encode()

BAD_INPUTS: list[BadInput] = [
    BadInput(
        "nested-flow",
        (VALID + "health: " + "[" * 1200 + "]" * 1200 + "\n").encode(),
        END,
        ("nested", "64 levels"),
    ),
    BadInput(
        "nested-mapping",
        (VALID + "health: " + "{a: " * 1200 + "1" + "}" * 1200 + "\n").encode(),
        END,
        ("nested", "64 levels"),
    ),
    BadInput("nested-block", (VALID + _nested_block(1200)).encode(), END + 63, ("nested", "64 levels")),
    BadInput(
        "huge-integer",
        (VALID + "workers: " + "9" * 5000 + "\n").encode(),
        END,
        ("found an integer of 5000 digits", "expected a number below 2^63"),
    ),
    BadInput(
        "huge-hex-integer",
        (VALID + "workers: 0x" + "f" * 5000 + "\n").encode(),
        END,
        ("found an integer of 5000 digits", "expected a number below 2^63"),
    ),
    BadInput(
        "integer-that-is-not",
        (VALID + "workers: !!int 12z\n").encode(),
        END,
        ("found '12z', which is not an integer",),
    ),
    BadInput(
        "timestamp-for-duration",
        (VALID + "health: {interval: 2024-01-01}\n").encode(),
        END,
        ("health.interval", "found '2024-01-01'", "expected a duration"),
    ),
    BadInput(
        "timestamp-for-string",
        VALID.replace("outlook.alwayshotcafe.com", "2001-01-01").encode(),
        1,
        ("namespace", "'2001-01-01'", "expected a DNS name"),
    ),
    BadInput(
        "timestamp-impossible-date",
        (VALID + "health: {interval: 2001-13-45}\n").encode(),
        END,
        ("health.interval", "found '2001-13-45'", "expected a duration"),
    ),
    BadInput(
        "timestamp-with-time",
        (VALID + "health: {interval: 2001-12-14t21:59:43.10-05:00}\n").encode(),
        END,
        ("health.interval", "found '2001-12-14t21:59:43.10-05:00'"),
    ),
    BadInput(
        "latin-1-not-utf-8",
        (VALID + "# serveur de la caf\xe9t\xe9ria\n").encode("latin-1"),
        END,
        ("not valid UTF-8", "found byte 0xe9 at column 20", "save the file as UTF-8"),
    ),
    BadInput(
        "utf-16-without-bom",
        VALID.encode("utf-16-le"),
        1,
        ("NUL", "UTF-16", "UTF-8"),
    ),
    BadInput(
        "utf-16-bom-then-garbage",
        b"\xff\xfe" + VALID.encode("utf-16-le") + b"\x00\xd8",  # a lone surrogate
        END,
        ("UTF-16",),
    ),
    BadInput("nul-byte", (VALID + "mode: l\x004\n").encode(), END, ("NUL", "column 8")),
    BadInput("control-character", (VALID + "mode: l4\x07\n").encode(), END, ("U+0007", "column 9")),
    BadInput(
        "merge-chain",
        (VALID + _merge_chain(20_000)).encode(),
        END + 1002,
        ("found more than 1000 aliases",),
    ),
    BadInput(
        "too-many-values",
        (VALID + "services: [" + "owa, " * 60_000 + "owa]\n").encode(),
        END,
        ("found more than 50000 values",),
    ),
    BadInput("billion-laughs", (VALID + _laughs()).encode(), END, ("unknown key 'lol'",)),
    BadInput(
        "python-tag",
        (VALID + "log: !!python/object/apply:os.system [echo pwned]\n").encode(),
        END,
        ("found the tag !!python/object/apply:os.system", "expected a plain value"),
    ),
    BadInput(
        "unknown-local-tag",
        (VALID + "mode: !vault l4\n").encode(),
        END,
        ("found the tag !vault", "expected a plain value"),
    ),
    BadInput(
        "duplicate-key",
        (VALID + "namespace: other.alwayshotcafe.com\n").encode(),
        END,
        ("duplicate key", "namespace"),
    ),
    BadInput("top-level-list", b"- namespace: outlook.alwayshotcafe.com\n", 1, ("a list", "mapping")),
    BadInput("top-level-text", b"outlook.alwayshotcafe.com\n", 1, ("'outlook.alwayshotcafe.com'", "mapping")),
    BadInput("empty-file", b"", None, ("empty", "mapping")),
    BadInput("only-comments", b"# to do\n\n", None, ("empty", "mapping")),
    BadInput(
        "two-documents",
        (VALID + "---\n" + VALID).encode(),
        END,
        ("single document",),
    ),
    BadInput(
        "very-long-line",
        (VALID + "mode: " + "x" * 900_000 + "\n").encode(),
        END,
        ("mode", "'l4' or 'l7'", "found 'xxxx"),
    ),
    BadInput(
        "infinite-duration",
        (VALID + "timeouts: {grace: .inf}\n").encode(),
        END,
        ("timeouts.grace", "finite"),
    ),
    BadInput("too-big", _TOO_BIG, None, (f"{len(_TOO_BIG)} bytes", "at most 1 MiB")),
]
