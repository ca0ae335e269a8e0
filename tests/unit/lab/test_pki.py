"""The lab PKI: one CA, one shared server certificate with every lab name, and a foreign one."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from casarray.lab import LabError
from casarray.lab.pki import LabCa, lab_names, make_lab_pki, make_other_pki


def _load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _verify(ca: Path, chain: Path, key: Path, name: str) -> None:
    """A TLS handshake in memory, as a client trusting `ca` that asks for `name` (SNI + check)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(chain, key)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=name)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_lab_names() -> None:
    assert lab_names() == (
        "outlook.alwayshotcafe.com",
        "autodiscover.alwayshotcafe.com",
        "mb1.alwayshotcafe.com",
        "mb2.alwayshotcafe.com",
        "mb3.alwayshotcafe.com",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
    )
    assert lab_names("contoso.com", ["EX1"], namespace="mail.contoso.com", ips=[])[0] == "mail.contoso.com"


def test_lab_pki_certificate_holds_every_name_and_verifies(tmp_path: Path) -> None:
    files = make_lab_pki(tmp_path / "lab")
    assert (files.ca.name, files.certificate.name, files.key.name) == ("ca.pem", "server.pem", "server.key")
    leaf = _load(files.certificate)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "outlook.alwayshotcafe.com",
        "autodiscover.alwayshotcafe.com",
        "mb1.alwayshotcafe.com",
        "mb2.alwayshotcafe.com",
        "mb3.alwayshotcafe.com",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(f"127.0.0.{i}") for i in range(1, 5)
    ]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "outlook.alwayshotcafe.com"
    for name in ("outlook.alwayshotcafe.com", "mb3.alwayshotcafe.com", "127.0.0.3"):
        _verify(files.ca, files.certificate, files.key, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _verify(files.ca, files.certificate, files.key, "mb4.alwayshotcafe.com")
    for key in (files.key, tmp_path / "lab" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_lab_pki_keeps_its_ca_between_runs(tmp_path: Path) -> None:
    first = make_lab_pki(tmp_path)
    ca_pem = first.ca.read_bytes()
    second = make_lab_pki(tmp_path)
    assert second.ca.read_bytes() == ca_pem
    _verify(second.ca, second.certificate, second.key, "outlook.alwayshotcafe.com")
    third = make_lab_pki(tmp_path, reuse_ca=False)
    assert third.ca.read_bytes() != ca_pem


def test_other_pki_is_not_trusted_by_the_lab_ca(tmp_path: Path) -> None:
    lab = make_lab_pki(tmp_path / "lab")
    other = make_other_pki(tmp_path / "other")
    assert other.names == ("wrong.example.net",)
    _verify(other.ca, other.certificate, other.key, "wrong.example.net")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _verify(lab.ca, other.certificate, other.key, "wrong.example.net")
    # Same CA, wrong names: trusted chain, but not for the namespace.
    wrong = LabCa.load(lab.ca, tmp_path / "lab" / "ca.key").issue(
        tmp_path / "w", ["elsewhere.example"], stem="w"
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _verify(lab.ca, wrong.certificate, wrong.key, "outlook.alwayshotcafe.com")
    _verify(lab.ca, wrong.certificate, wrong.key, "elsewhere.example")


def test_broken_ca_files_are_a_lab_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(LabError, match="cannot load the lab CA"):
        make_lab_pki(tmp_path)


def test_a_certificate_needs_a_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="at least one name"):
        LabCa().issue(tmp_path, [])
