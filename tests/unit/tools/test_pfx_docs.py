"""docs/operations.md "Certificate from a PFX": its openssl commands, run as written on a PFX shaped
like an Exchange export (leaf + key + intermediate + root), give the PEM chain and key casarray loads."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

DOC = Path(__file__).resolve().parents[3] / "docs" / "operations.md"
PASSWORD = "pfx-secret"


def _conversion_commands() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Certificate from a PFX", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    # What needs root or a casarray user (chown, the cd into /etc) is the admin's; the rest runs as written.
    return [line for line in lines if line and not line.startswith(("#", "cd ", "chown", "shred"))]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_documented_commands_turn_a_pfx_into_what_casarray_loads(tmp_path: Path) -> None:
    ca = trustme.CA()
    issuing = ca.create_child_ca()
    leaf = issuing.issue_cert("outlook.alwayshotcafe.com", "autodiscover.alwayshotcafe.com")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    chain = [x509.load_pem_x509_certificate(blob.bytes()) for blob in leaf.cert_chain_pems]
    pfx = pkcs12.serialize_key_and_certificates(
        b"outlook",
        key,  # type: ignore[arg-type]
        chain[0],
        [*chain[1:], x509.load_pem_x509_certificate(ca.cert_pem.bytes())],
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    (tmp_path / "outlook.pfx").write_bytes(pfx)
    for command in _conversion_commands():
        command = command.replace("openssl pkcs12 ", f"openssl pkcs12 -passin pass:{PASSWORD} ")
        done = subprocess.run(
            ["/bin/sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, (command, done.stderr)
    pem = (tmp_path / "outlook.pem").read_text()
    assert pem.count("BEGIN CERTIFICATE") == 3
    assert "Bag Attributes" not in pem  # PEM blocks only
    assert x509.load_pem_x509_certificate(pem.encode()) == chain[0]  # leaf first
    assert (tmp_path / "outlook.key").stat().st_mode & 0o077 == 0
    assert "ENCRYPTED" not in (tmp_path / "outlook.key").read_text()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "outlook.pem", tmp_path / "outlook.key")
