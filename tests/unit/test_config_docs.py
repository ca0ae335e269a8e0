from pathlib import Path

from casarray.config.docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_generated_from_the_models() -> None:
    assert DOC.read_text() == render(), "run: python -m casarray.config.docs > docs/config.md"


def test_every_key_is_documented() -> None:
    text = render()
    for key in ("`namespace`", "`servers[].weight`", "`timeouts.client_idle` | `1h`", "`l4_require`"):
        assert key in text
    assert "|  |" not in text  # no key without a description
