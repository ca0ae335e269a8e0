"""Shared helpers for the namespace toolkit tests: the inventory fixtures and their loader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from casarray.exchange.namespace.inventory import Inventory, load_inventory

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inventory"


@pytest.fixture
def fixture_path() -> Callable[[str], Path]:
    def path(name: str) -> Path:
        return FIXTURES / name

    return path


@pytest.fixture
def inventory() -> Callable[[str], Inventory]:
    def load(name: str) -> Inventory:
        return load_inventory(FIXTURES / name)

    return load
