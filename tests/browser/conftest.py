from __future__ import annotations

import pytest

from casarray.lab.pki import CertFiles, make_lab_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_lab_pki(tmp_path_factory.mktemp("pki"))
