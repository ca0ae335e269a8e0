"""Fixtures of the high-availability tests: a Topology that is always torn down, and the lab PKI.

Every test module here sets `pytestmark = pytest.mark.netns`: it builds network namespaces, so it needs root (CI runs as root).
Where `ip netns add` is not permitted the test is skipped, with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from casarray.lab.pki import CertFiles, make_lab_pki
from tests.ha.netns import Topology, unavailable_reason


@contextlib.contextmanager
def _topology(directory: Path) -> Iterator[Topology]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces are not available: {reason}")
    topo = Topology(directory)
    try:
        yield topo
    finally:
        topo.close()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with _topology(tmp_path) as topo:
        yield topo


@pytest.fixture(scope="module")
def module_topology(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Topology]:
    """One Topology for every test of a module (tests that share an expensive setup, in file order)."""
    with _topology(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])) as topo:
        yield topo


@pytest.fixture(scope="session")
def ha_pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """The lab certificate (namespace, autodiscover, MB1-MB3) from the lab CA."""
    return make_lab_pki(tmp_path_factory.mktemp("ha-pki"))
