"""X.509 facts without I/O: which names a certificate covers, its fingerprint, validity and key.

Name matching follows RFC 6125 §6.4 as TLS clients apply it today:
- only subjectAltName dNSName entries count; the subject CN is not consulted (RFC 6125 §6.4.4: a client
  must not look at the CN when the certificate has DNS SANs, and current browsers and OpenSSL's
  hostname check used by Python ignore it altogether);
- comparison is case-insensitive and ignores a trailing dot (RFC 6125 §6.4.1; RFC 4343);
- a wildcard is only a whole left-most label, `*.example.com`, and matches exactly one label
  (RFC 6125 §6.4.3; CA/Browser Forum Baseline Requirements §7.1.4.2.1 forbid partial-label wildcards
  like `w*.example.com`, and Python's check sets X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS) — so
  `*.example.com` covers `outlook.example.com` but neither `example.com` nor `a.b.example.com`;
- a wildcard over a public suffix (`*.com`) covers nothing (browsers refuse it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from casarray.doctor.rows import Status

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the doctor reports about one (leaf) certificate."""

    subject: str  # RFC 4514 form, e.g. CN=outlook.alwayshotcafe.com
    issuer: str
    dns_names: tuple[str, ...]  # subjectAltName dNSName entries, lower case, in certificate order
    ip_addresses: tuple[str, ...]  # subjectAltName iPAddress entries
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    sha256: str  # SHA-256 of the DER encoding, colon-separated upper-case hex (as browsers show it)

    def covering(self, name: str) -> str | None:
        """The SAN that covers `name`, or None."""
        return covering_name(self.dns_names, name)


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order (leaf first by convention); ValueError if none."""
    certificates = x509.load_pem_x509_certificates(data)
    if not certificates:
        raise ValueError("no PEM certificate in the file")
    return certificates


def facts(certificate: x509.Certificate) -> CertificateFacts:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertificateFacts(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256=fingerprint(certificate.public_bytes(serialization.Encoding.DER)),
    )


def facts_from_der(der: bytes) -> CertificateFacts:
    return facts(x509.load_der_x509_certificate(der))


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as AB:CD:…: two certificates are the same iff these are equal."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return ":".join(f"{byte:02X}" for byte in digest.finalize())


def tls_server_end_point(der: bytes) -> bytes:
    """Channel-binding data for Extended Protection (NTLM/Negotiate bound to the TLS channel): RFC 5929
    §4.1 hashes the server certificate with its signature's hash, SHA-256 when that is MD5 or SHA-1."""
    certificate = x509.load_der_x509_certificate(der)
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return b"tls-server-end-point:" + digest.finalize()


def short_fingerprint(value: str) -> str:
    """The first 8 bytes of a fingerprint, enough to tell certificates apart in a table."""
    return ":".join(value.split(":")[:8]) + "…"


def name_matches(pattern: str, name: str) -> bool:
    """Does the SAN dNSName `pattern` cover the host `name`? (rules in the module docstring)"""
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if not pattern or not name:
        return False
    if "*" not in pattern:
        return pattern == name
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False  # partial-label or non-left-most wildcard: no match
    suffix = pattern[2:]
    if suffix.count(".") < 1:
        return False  # *.com: a wildcard over a public suffix
    if _is_ip(name):
        return False
    label, dot, rest = name.partition(".")
    return bool(label) and bool(dot) and rest == suffix


def covering_name(patterns: Sequence[str], name: str) -> str | None:
    """The first of `patterns` that covers `name`, or None."""
    return next((p for p in patterns if name_matches(p, name)), None)


def validity(cert: CertificateFacts, now: datetime, warn: timedelta = EXPIRY_WARNING) -> tuple[Status, str]:
    """ok while valid for more than `warn` (30 days), warn within it, fail when expired or not yet valid."""
    if now < cert.not_before:
        return "fail", f"not valid before {_day(cert.not_before)}"
    if now >= cert.not_after:
        return "fail", f"expired on {_day(cert.not_after)}"
    left = cert.not_after - now
    days = left.days
    if left < warn:
        return "warn", f"expires in {days} day{'s' if days != 1 else ''} ({_day(cert.not_after)}): renew it"
    return "ok", f"valid until {_day(cert.not_after)} ({days} days)"


def load_private_key(data: bytes) -> PrivateKeyTypes:
    """A PEM private key; ValueError if it is not one or is encrypted (a balancer starts unattended)."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; the balancer needs it unencrypted") from None


def key_matches(certificate: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Does `key` belong to `certificate` (same public key)?"""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki))


def describe(cert: CertificateFacts) -> str:
    """'CN=…, issued by …; DNS names: a, b' for a table cell."""
    names = ", ".join(cert.dns_names) or "none"
    return f"{cert.subject}, issued by {cert.issuer}; DNS names: {names}"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
