"""Certificate facts without I/O: SAN matching with wildcard rules, fingerprints, validity, key match."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from casarray.doctor import certs

NAMESPACE = "outlook.alwayshotcafe.com"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("outlook.alwayshotcafe.com", "outlook.alwayshotcafe.com", True),
        (
            "OUTLOOK.AlwaysHotCafe.com",
            "outlook.alwayshotcafe.com",
            True,
        ),  # case-insensitive (RFC 6125 §6.4.1)
        ("outlook.alwayshotcafe.com.", "outlook.alwayshotcafe.com", True),  # trailing dot
        ("outlook.alwayshotcafe.com", "autodiscover.alwayshotcafe.com", False),
        ("*.alwayshotcafe.com", "outlook.alwayshotcafe.com", True),  # one whole left-most label
        ("*.alwayshotcafe.com", "alwayshotcafe.com", False),  # the wildcard needs a label
        ("*.alwayshotcafe.com", "a.b.alwayshotcafe.com", False),  # exactly one label
        ("*.com", "alwayshotcafe.com", False),  # over a public suffix
        ("o*.alwayshotcafe.com", "outlook.alwayshotcafe.com", False),  # partial label (CA/B BR)
        ("outlook.*.com", "outlook.alwayshotcafe.com", False),  # not left-most
        ("*.*.com", "a.b.com", False),
        ("*.0.0", "127.0.0.1", False),  # never an IP address
        ("", "outlook.alwayshotcafe.com", False),
    ],
)
def test_name_matching(pattern: str, name: str, expected: bool) -> None:
    assert certs.name_matches(pattern, name) is expected


def test_covering_name_returns_the_san_that_matches() -> None:
    sans = ("mb1.alwayshotcafe.com", "*.alwayshotcafe.com")
    assert certs.covering_name(sans, "outlook.alwayshotcafe.com") == "*.alwayshotcafe.com"
    assert certs.covering_name(sans, "mb1.alwayshotcafe.com") == "mb1.alwayshotcafe.com"
    assert certs.covering_name(sans, "outlook.contoso.com") is None


def _leaf(ca: trustme.CA, *names: str, **kw: datetime) -> x509.Certificate:
    issued = ca.issue_cert(*names, **kw)  # type: ignore[arg-type]
    return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())


def test_facts_take_dns_names_from_the_san_only() -> None:
    ca = trustme.CA()
    cert = certs.facts(_leaf(ca, NAMESPACE, "*.alwayshotcafe.com", "127.0.0.2"))
    assert cert.dns_names == (NAMESPACE, "*.alwayshotcafe.com")
    assert cert.ip_addresses == ("127.0.0.2",)
    assert cert.covering("autodiscover.alwayshotcafe.com") == "*.alwayshotcafe.com"
    assert len(cert.sha256.split(":")) == 32


def test_fingerprints_tell_certificates_apart() -> None:
    ca = trustme.CA()
    one = _leaf(ca, NAMESPACE)
    der = one.public_bytes(serialization.Encoding.DER)
    assert certs.fingerprint(der) == certs.facts(one).sha256
    # Same names, same CA, but another certificate (another key): Extended Protection tells them apart.
    other = _leaf(ca, NAMESPACE)
    assert certs.facts(other).sha256 != certs.facts(one).sha256
    assert certs.short_fingerprint(certs.facts(one).sha256).endswith("…")


def test_validity_ok_warn_within_30_days_fail_when_expired_or_early() -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    ca = trustme.CA()
    cert = certs.facts(
        _leaf(ca, NAMESPACE, not_before=now - timedelta(days=300), not_after=now + timedelta(days=90))
    )
    assert certs.validity(cert, now)[0] == "ok"
    status, detail = certs.validity(cert, now + timedelta(days=70))
    assert status == "warn"
    assert "expires in 20 days" in detail
    assert certs.validity(cert, now + timedelta(days=91))[0] == "fail"
    status, detail = certs.validity(cert, now - timedelta(days=301))
    assert (status, detail.startswith("not valid before")) == ("fail", True)


def test_key_matches_only_its_certificate() -> None:
    ca = trustme.CA()
    issued = ca.issue_cert(NAMESPACE)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    key = certs.load_private_key(issued.private_key_pem.bytes())
    assert certs.key_matches(leaf, key)
    other = certs.load_private_key(ca.issue_cert(NAMESPACE).private_key_pem.bytes())
    assert not certs.key_matches(leaf, other)


def test_unusable_keys_are_value_errors() -> None:
    key = certs.load_private_key(trustme.CA().issue_cert(NAMESPACE).private_key_pem.bytes())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        certs.load_private_key(encrypted)
    with pytest.raises(ValueError, match="PEM"):
        certs.load_private_key(b"not a key")
    with pytest.raises(ValueError, match="PEM"):
        certs.load_pem_chain(b"no certificate here")
