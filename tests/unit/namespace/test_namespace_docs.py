"""docs/namespace.md stays true: its inventory example loads, its GetVirtDirs one-liner is there, and it
cites nothing that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from casarray.exchange.namespace.inventory import parse_inventory
from casarray.exchange.namespace.plan import Targets, make_plan

DOC = Path(__file__).resolve().parents[3] / "docs" / "namespace.md"


def test_inventory_example_loads() -> None:
    text = DOC.read_text(encoding="utf-8")
    (example,) = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    inv = parse_inventory(example)
    assert [v.kind for v in inv.virtual_directories] == ["Owa"]
    assert make_plan(inv, Targets.build("outlook.contoso.com")).changes


def test_getvirtdirs_one_liner_is_shown() -> None:
    text = DOC.read_text(encoding="utf-8")
    (line,) = [line for line in text.splitlines() if "ConvertTo-Json >" in line]
    assert "Select Server, Name, InternalUrl, ExternalUrl" in line
    for cmdlet in ("Owa", "Ecp", "WebServices", "Mapi", "Oab", "ActiveSync", "PowerShell", "Autodiscover"):
        assert f"Get-{cmdlet}VirtualDirectory -Server $s" in line


def test_no_reference_outside_the_repository() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text
    assert "research" not in text.lower()
    # A section sign is fine after an RFC; anywhere else it points at a document that is not here.
    assert text.count("§") == len(re.findall(r"RFC \d+ §", text))
