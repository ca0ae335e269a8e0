"""The one way casarray reads a text file an admin wrote (the config, an inventory): UTF-8, or UTF-16 /
UTF-32 when a byte-order mark says so — what Windows tools write (Notepad's "Unicode", PowerShell's
`Out-File`, `ConvertTo-Json | Set-Content`). YAML 1.2 §5.2 and RFC 8259 §8.1 accept these. Sans-I/O."""

from __future__ import annotations

import codecs
from typing import Final

_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),  # before UTF-16 LE: its BOM starts the same way
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


class NotText(ValueError):
    """Bytes that are not text in the encoding the file announces (UTF-8 without a byte-order mark)."""

    def __init__(self, encoding: str, line: int, column: int, found: str, by_bom: bool) -> None:
        self.encoding = encoding  # "UTF-8", "UTF-16" or "UTF-32"
        self.line = line
        self.column = column
        self.found = found  # "byte 0xe9", or the codec's reason
        self.by_bom = by_bom  # the encoding came from a byte-order mark
        super().__init__(f"not valid {encoding}: found {found} at line {line}, column {column}")


def decode_text(raw: bytes) -> str:
    """The text of a file's bytes, its byte-order mark removed. Raises NotText."""
    codec, name, body, by_bom = "utf-8", "UTF-8", raw, False
    for bom, bom_codec, bom_name in _BOMS:
        if raw.startswith(bom):
            codec, name, body, by_bom = bom_codec, bom_name, raw[len(bom) :], True
            break
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        before = body[: exc.start].decode(codec, errors="replace")
        line, column = line_column(before, len(before))
        found = f"byte 0x{body[exc.start]:02x}" if name == "UTF-8" else str(exc.reason)
        raise NotText(name, line, column, found, by_bom) from None


def line_column(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of text[index]."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1
