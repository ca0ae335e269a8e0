"""The affinity secret file: parsed from bytes, read from disk, checked by `casarray check`."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

from casarray.config import ConfigErrors, load_config, parse_config
from casarray.config.secretfile import (
    MAX_SECRET_FILE_BYTES,
    MAX_SECRETS,
    SecretFileError,
    affinity_warnings,
    parse_secrets,
    read_secrets,
)

A = "a" * 32
B = "b" * 64


def test_one_secret_a_line_the_first_first() -> None:
    text = f"# rotated 2025-06-01\n\n  {B}  \n{A}\r\n"
    assert parse_secrets(text.encode(), "s") == (B.encode(), A.encode())


@pytest.mark.parametrize(
    "raw",
    [
        codecs.BOM_UTF8 + f"{A}\n".encode(),
        codecs.BOM_UTF16_LE + f"{A}\r\n".encode("utf-16-le"),  # Notepad's "Unicode"
    ],
)
def test_a_file_written_on_windows_reads_the_same(raw: bytes) -> None:
    assert parse_secrets(raw, "s") == (A.encode(),)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "s: found no secret; expected at least one line"),
        (b"# only a comment\n\n", "s: found no secret"),
        (f"{A}\nshort\n".encode(), "s:2: found a secret of 5 characters; expected at least 32"),
        (
            f"{A[:10]}\x07{A}\n".encode(),
            "s:1: found a control character at column 11; expected printable text",
        ),
        (b"\xe9" + A.encode(), "s:1: not valid UTF-8: found byte 0xe9 at column 1; expected UTF-8 text"),
        (
            "".join(f"{i:032d}\n" for i in range(MAX_SECRETS + 1)).encode(),
            f"s: found {MAX_SECRETS + 1} secrets; expected at most {MAX_SECRETS}",
        ),
    ],
)
def test_an_unusable_file_is_refused_with_its_line(raw: bytes, says: str) -> None:
    with pytest.raises(SecretFileError) as info:
        parse_secrets(raw, "s")
    assert info.value.what.startswith(says), info.value.what
    assert info.value.hint  # how to make a good one


def test_reading_tells_whether_every_user_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "affinity.secret"
    path.write_text(f"{A}\n")
    path.chmod(0o640)
    assert read_secrets(str(path)).keys == (A.encode(),)
    assert not read_secrets(str(path)).readable_by_all
    path.chmod(0o644)
    assert read_secrets(str(path)).readable_by_all


def test_a_missing_file_a_directory_and_a_huge_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r"cannot read .*/missing: No such file or directory"):
        read_secrets(str(tmp_path / "missing"))
    with pytest.raises(SecretFileError, match=r"cannot read .*: Is a directory"):
        read_secrets(str(tmp_path))
    huge = tmp_path / "huge"
    huge.write_bytes((A + "\n").encode() * (MAX_SECRET_FILE_BYTES // 32))
    with pytest.raises(SecretFileError, match=f"more than {MAX_SECRET_FILE_BYTES} bytes"):
        read_secrets(str(huge))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "affinity.secret"
    path.write_text(f"{A}\n")
    path.chmod(0)
    with pytest.raises(SecretFileError, match="Permission denied"):
        read_secrets(str(path))


L7 = (
    "namespace: outlook.alwayshotcafe.com\nmode: l7\ntls: {certificate: c.pem, key: k.pem}\n"
    "servers: [{name: MB1, address: 10.0.1.11}]\n"
)


def test_check_reports_the_secret_file_at_the_line_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    secret = tmp_path / "affinity.secret"
    secret.write_text("too short\n")
    config = tmp_path / "casarray.yaml"
    text = L7.replace("c.pem", str(tmp_path / "c.pem")).replace("k.pem", str(tmp_path / "k.pem"))
    config.write_text(text + f"affinity:\n  mode: cookie\n  secret_file: {secret}\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(config, check_files=True)
    assert info.value.problems == [
        f"{config}:7: affinity.secret_file: {secret}:1: found a secret of 9 characters; expected at least 32 "
        "(one secret a line, e.g. `openssl rand -hex 32 > FILE; chmod 640 FILE`)"
    ]
    secret.unlink()
    with pytest.raises(ConfigErrors) as info:
        load_config(config, check_files=True)
    assert info.value.problems == [
        f"{config}:7: affinity.secret_file: found {str(secret)!r}, which does not exist; expected an existing file"
    ]
    secret.write_text(f"{A}\n")
    assert load_config(config, check_files=True).affinity.secret_file == str(secret)
    assert load_config(config).affinity.secret_file == str(secret)  # `run` reads it at start, not here


def test_cookie_affinity_without_a_secret_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    (warning,) = affinity_warnings(parse_config(L7 + "affinity: cookie\n"))
    assert "affinity.secret_file is not set" in warning
    assert "several nodes" in warning
    assert affinity_warnings(parse_config(L7 + "affinity: source\n")) == []
    assert affinity_warnings(parse_config(L7 + "affinity: {mode: source, secret_file: /x}\n")) == [
        "affinity.secret_file is set but affinity.mode is source: the file is not used"
    ]
    assert affinity_warnings(parse_config(L7)) == []
    secret = tmp_path / "affinity.secret"
    secret.write_text(f"{A}\n")
    secret.chmod(0o600)
    with_file = parse_config(L7 + f"affinity: {{mode: cookie, secret_file: {secret}}}\n")
    assert affinity_warnings(with_file) == []
    secret.chmod(0o604)
    (warning,) = affinity_warnings(with_file)
    assert warning == f"affinity.secret_file: {secret} can be read by every user (chmod o-rwx it)"
