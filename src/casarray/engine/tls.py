"""TLS contexts. Upstream: verify the Exchange servers against upstream_tls.ca (or the system store)."""

from __future__ import annotations

import logging
import ssl

from casarray.config.model import Config
from casarray.errors import StartupError

log = logging.getLogger("casarray.tls")


def upstream_context(config: Config) -> ssl.SSLContext:
    """The client-side context used towards the servers (health checks, l7 re-encryption)."""
    tls = config.upstream_tls
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if tls.ca is not None:
        try:
            context.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                f"cannot read the CA bundle {tls.ca!r}: {getattr(exc, 'strerror', None) or exc}",
                "upstream_tls.ca",
                "give a readable PEM file",
            ) from None
    if not tls.verify:
        log.warning("upstream_tls.verify is false: the Exchange servers' certificates are NOT verified")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_chain(context: ssl.SSLContext, certificate: str, key: str, where: str) -> None:
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the certificate {certificate!r} with key {key!r}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            where,
            "give readable PEM files: the chain (leaf first) and its private key",
        ) from None


def _server_base(min_version: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all modern).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    # No client-initiated renegotiation (TLS 1.2): a CPU-exhaustion vector and no Exchange client
    # needs it; TLS 1.3 has none.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


def _names_of(certificate: str) -> list[str]:
    from cryptography import x509

    with open(certificate, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def server_context(config: Config) -> ssl.SSLContext:
    """The context clients see (l7). Extra certificates are chosen by SNI among the names they cover."""
    tls = config.tls
    if tls is None:
        raise StartupError("mode: l7 needs a tls: section", "tls")
    context = _server_base(tls.min_version)
    _load_chain(context, tls.certificate, tls.key, "tls")
    if tls.extra:
        by_name: dict[str, ssl.SSLContext] = {}
        for i, pair in enumerate(tls.extra):
            extra = _server_base(tls.min_version)
            _load_chain(extra, pair.certificate, pair.key, f"tls.extra[{i}]")
            for name in _names_of(pair.certificate):
                by_name.setdefault(name, extra)

        def pick(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            if name is None:
                return
            name = name.lower()
            chosen = by_name.get(name) or by_name.get("*." + name.partition(".")[2])
            if chosen is not None:
                sock.context = chosen

        context.sni_callback = pick
    return context
