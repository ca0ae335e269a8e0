"""The lab PKI: one private CA and one server certificate shared by every simulated server.

Exchange servers behind one VIP present the same certificate (same key pair): Extended Protection binds
NTLM to the certificate the client saw, so a Layer-7 balancer can re-encrypt only when it presents the
very certificate and key of the servers (Microsoft, "Configure Windows Extended Protection in Exchange
Server"; HAProxy issue 1828). The lab therefore issues a single certificate whose SANs carry every name
a client or a health check may use: the namespace, the Autodiscover name, each server FQDN and the lab's
loopback addresses.

Certificates come from trustme; nothing here builds X.509 by hand.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from casarray.lab import LabError

DEFAULT_DOMAIN = "alwayshotcafe.com"
DEFAULT_SERVERS: tuple[str, ...] = ("MB1", "MB2", "MB3")
DEFAULT_IPS: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"


def namespace_for(domain: str) -> str:
    """The lab's unified client-access name for `domain` (outlook.<domain>)."""
    return f"outlook.{domain}"


def autodiscover_for(domain: str) -> str:
    """The Autodiscover name Outlook derives from the mail domain (autodiscover.<domain>)."""
    return f"autodiscover.{domain}"


def server_fqdn(name: str, domain: str) -> str:
    """A server's FQDN as DNS holds it (lower case): MB1 → mb1.<domain>."""
    return f"{name.lower()}.{domain.lower()}"


def lab_names(
    domain: str = DEFAULT_DOMAIN,
    servers: Iterable[str] = DEFAULT_SERVERS,
    *,
    namespace: str | None = None,
    autodiscover: str | None = None,
    ips: Iterable[str] = DEFAULT_IPS,
) -> tuple[str, ...]:
    """Every SAN of the shared certificate, namespace first (it also becomes the subject CN)."""
    names = [namespace or namespace_for(domain), autodiscover or autodiscover_for(domain)]
    names += [server_fqdn(s, domain) for s in servers]
    names += [str(ipaddress.ip_address(ip)) for ip in ips]
    return tuple(dict.fromkeys(names))  # drop duplicates, keep order


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where one issued certificate was written."""

    ca: Path  # the issuing CA certificate (PEM): what clients trust
    certificate: Path  # leaf first, then any intermediates (PEM)
    key: Path  # the leaf's private key (PEM, mode 0600)
    names: tuple[str, ...]  # the SANs


class LabCa:
    """A private CA for the lab (trustme). Keep one to issue more certificates from the same root."""

    def __init__(self, ca: trustme.CA | None = None, *, organization: str = "casarray lab") -> None:
        self._ca = ca if ca is not None else trustme.CA(organization_name=organization)

    @classmethod
    def load(cls, certificate: Path, key: Path) -> LabCa:
        """A CA written before by `write` (so a lab directory keeps the root a browser already trusts)."""
        try:
            return cls(trustme.CA.from_pem(certificate.read_bytes(), key.read_bytes()))
        except (OSError, ValueError) as exc:
            raise LabError(
                f"cannot load the lab CA: {exc}",
                str(certificate),
                "delete ca.pem and ca.key to make a new one",
            ) from exc

    def write(self, certificate: Path, key: Path | None = None) -> Path:
        """Write the CA certificate (and, when `key` is given, its private key) as PEM."""
        self._ca.cert_pem.write_to_path(str(certificate))
        if key is not None:
            _write_private(key, self._ca.private_key_pem.bytes())
        return certificate

    def issue(
        self, directory: Path, names: Sequence[str], *, stem: str = "server", ca_file: str = CA_FILE
    ) -> CertFiles:
        """Issue a certificate for `names` (DNS names or IP literals; the first is the CN) and write
        <stem>.pem (chain), <stem>.key and the CA as `ca_file` into `directory`."""
        if not names:
            raise LabError("a certificate needs at least one name", str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        leaf = self._ca.issue_cert(*names, common_name=names[0])
        certificate = directory / f"{stem}.pem"
        key = directory / f"{stem}.key"
        certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        _write_private(key, leaf.private_key_pem.bytes())
        return CertFiles(
            ca=self.write(directory / ca_file), certificate=certificate, key=key, names=tuple(names)
        )


def make_lab_pki(
    directory: Path,
    *,
    domain: str = DEFAULT_DOMAIN,
    servers: Iterable[str] = DEFAULT_SERVERS,
    namespace: str | None = None,
    autodiscover: str | None = None,
    ips: Iterable[str] = DEFAULT_IPS,
    reuse_ca: bool = True,
) -> CertFiles:
    """Write ca.pem (+ ca.key), server.pem and server.key into `directory`.

    With `reuse_ca` an existing ca.pem/ca.key pair in `directory` is kept, so a client that already
    trusts the lab root keeps working; the server certificate is always issued anew.
    """
    names = lab_names(domain, servers, namespace=namespace, autodiscover=autodiscover, ips=ips)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / CA_FILE, directory / CA_KEY_FILE
    if reuse_ca and ca_cert.is_file() and ca_key.is_file():
        ca = LabCa.load(ca_cert, ca_key)
    else:
        ca = LabCa()
        ca.write(ca_cert, ca_key)
    return ca.issue(directory, names, stem=Path(CERT_FILE).stem)


def make_other_pki(
    directory: Path, names: Sequence[str] = ("wrong.example.net",), *, stem: str = "other"
) -> CertFiles:
    """A certificate from a *different* CA (by default also for names no lab client expects):
    the negative case for verification tests. Written as <stem>-ca.pem, <stem>.pem, <stem>.key."""
    return LabCa(organization="casarray other CA").issue(
        directory, names, stem=stem, ca_file=f"{stem}-ca.pem"
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file
