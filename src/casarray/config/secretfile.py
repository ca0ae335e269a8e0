"""The affinity secret file (`affinity.secret_file`): the keys affinity cookies are signed with, the same
file on every node so that a cookie set by one is honoured by all.

One secret a line, at least MIN_SECRET_CHARS characters (`openssl rand -hex 32` writes 64); the first
signs, every one is accepted. Rotation: put the new secret first, keep the old one below it, reload every
node; once browsers have been re-pinned (the next response to each carries the new value), drop the
old line. Blank lines and lines starting with `#` are ignored; white space around a secret is not part
of it. Read like every file an admin writes (casarray.textfile: UTF-8, or UTF-16/32 by byte-order mark).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from casarray.config.model import Config
from casarray.errors import ConfigError
from casarray.textfile import NotText, decode_text

MIN_SECRET_CHARS: Final = 32  # 128 bits as hex: more than anyone can guess
MAX_SECRETS: Final = 16  # the current secret and a few older ones during a rotation
MAX_SECRET_FILE_BYTES: Final = 64 * 1024
HINT: Final = "one secret a line, e.g. `openssl rand -hex 32 > FILE; chmod 640 FILE`"


class SecretFileError(ConfigError):
    """The secret file cannot be used; `what` names the file (and the line) and what is wrong."""


@dataclass(frozen=True, slots=True)
class Secrets:
    keys: tuple[bytes, ...]  # the first signs; every one verifies
    readable_by_all: bool  # every local account can read the file (and forge cookies)


def parse_secrets(raw: bytes, path: str) -> tuple[bytes, ...]:
    """The secrets in a secret file's bytes, first line first. Raises SecretFileError naming the line."""
    try:
        text = decode_text(raw)
    except NotText as exc:
        raise SecretFileError(
            f"{path}:{exc.line}: not valid {exc.encoding}: found {exc.found} at column {exc.column}; "
            f"expected {exc.encoding} text",
            hint=HINT,
        ) from None
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        secret = line.strip()
        if not secret or secret.startswith("#"):
            continue
        if not secret.isprintable():
            column = next(i for i, c in enumerate(line, 1) if not c.isprintable())
            raise SecretFileError(
                f"{path}:{number}: found a control character at column {column}; expected printable text",
                hint=HINT,
            )
        if len(secret) < MIN_SECRET_CHARS:
            raise SecretFileError(
                f"{path}:{number}: found a secret of {len(secret)} characters; expected at least "
                f"{MIN_SECRET_CHARS}",
                hint=HINT,
            )
        keys.append(secret.encode())
    if not keys:
        raise SecretFileError(f"{path}: found no secret; expected at least one line", hint=HINT)
    if len(keys) > MAX_SECRETS:
        raise SecretFileError(
            f"{path}: found {len(keys)} secrets; expected at most {MAX_SECRETS} (the current one and the "
            "few still accepted during a rotation)",
            hint="drop the oldest lines",
        )
    return tuple(keys)


def read_secrets(path: str) -> Secrets:
    """Read and check a secret file. Raises SecretFileError."""
    try:
        with Path(path).open("rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SecretFileError(f"{path}: not a regular file; expected a file of secrets", hint=HINT)
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror or exc}", hint=HINT) from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(
            f"{path}: more than {MAX_SECRET_FILE_BYTES} bytes; expected a few lines of secrets", hint=HINT
        )
    return Secrets(parse_secrets(raw, path), bool(info.st_mode & stat.S_IRWXO))


def affinity_warnings(config: Config) -> list[str]:
    """What is valid but weak about cookie affinity, for `casarray check` and the start-up log. A file
    that cannot be used is an error (the loader's, with `check_files`), not a warning."""
    affinity = config.affinity
    if affinity.mode != "cookie" and affinity.secret_file is not None:
        return [f"affinity.secret_file is set but affinity.mode is {affinity.mode}: the file is not used"]
    if affinity.mode != "cookie" or config.mode != "l7":
        return []
    if affinity.secret_file is None:
        return [
            "affinity.secret_file is not set: cookies are signed with a key derived from the namespace, "
            "which every node shares but anyone can compute (a client could choose its server); with "
            "several nodes, give each the same secret file"
        ]
    try:
        secrets = read_secrets(affinity.secret_file)
    except SecretFileError:
        return []
    if secrets.readable_by_all:
        return [f"affinity.secret_file: {affinity.secret_file} can be read by every user (chmod o-rwx it)"]
    return []
