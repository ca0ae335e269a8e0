"""TLS contexts. Upstream: verify the Exchange servers against upstream_tls.ca (or the system store)."""

from __future__ import annotations

import ctypes
import logging
import ssl
import tempfile
from pathlib import Path

from casarray.config.model import Config
from casarray.errors import StartupError

log = logging.getLogger("casarray.tls")

# Key-exchange groups, on both sides: X25519 and the NIST curves P-256 and P-384. Every client and
# Exchange server has at least one of them (SChannel: P-256 and P-384 since Windows 7, X25519 since
# Windows 10 1607). What OpenSSL 3 would also accept goes: X448 and P-521, which no Exchange client
# needs (less code exposed), and above all the finite-field groups of TLS 1.3 (RFC 7919): a client
# that offers only ffdhe8192 makes the balancer do ~200 times the work of an X25519 exchange
# (`openssl speed` here: X25519 33 000 exchanges/s, P-256 20 000, ffdhe2048 3 700, ffdhe8192 150),
# a cheap way to exhaust its CPU.
GROUPS = "X25519:P-256:P-384"
# Python 3.11's ssl can set one curve only (set_ecdh_curve), and offers no SSL_CTX_set1_groups_list.
# OpenSSL's own configuration can: its "system_default" section is applied by SSL_CTX_new to every
# context created afterwards, and CONF_modules_load_file (public libcrypto API, OpenSSL 1.1.0 to
# 3.x) loads it at run time. It is called in the libcrypto that Python's _ssl module is linked with
# (its symbols are found through that module's handle), so nothing of CPython's internals is touched.
# The section replaces the process's system_default (a distribution's own one too); every context
# casarray makes sets its protocol versions and suites itself.
_OPENSSL_CONF = f"""\
openssl_conf = casarray_openssl
[casarray_openssl]
ssl_conf = casarray_ssl
[casarray_ssl]
system_default = casarray_tls
[casarray_tls]
Groups = {GROUPS}
"""
_groups: bool | None = None  # None: not tried yet in this process; then whether it worked


def restrict_groups() -> bool:
    """Limit the key-exchange groups of every TLS context made from now on in this process to GROUPS
    (once per process). False when this OpenSSL cannot (logged once): its defaults then apply."""
    global _groups
    if _groups is not None:
        return _groups
    _groups = False
    try:
        import _ssl

        load = ctypes.CDLL(getattr(_ssl, "__file__", None)).CONF_modules_load_file
        load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
        load.restype = ctypes.c_int
        with tempfile.TemporaryDirectory(prefix="casarray-") as directory:
            path = Path(directory) / "groups.cnf"
            path.write_text(_OPENSSL_CONF)
            _groups = load(str(path).encode(), None, 0) > 0
    except (OSError, AttributeError) as exc:
        log.warning("cannot limit the TLS key-exchange groups (%s): OpenSSL's defaults apply", exc)
        return False
    if not _groups:
        log.warning("OpenSSL refused the key-exchange groups %s: its defaults apply", GROUPS)
    return _groups


def upstream_context(config: Config) -> ssl.SSLContext:
    """The client-side context used towards the servers (health checks, l7 re-encryption)."""
    tls = config.upstream_tls
    restrict_groups()
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
    restrict_groups()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all modern).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    # No client-initiated renegotiation (TLS 1.2): a CPU-exhaustion vector and no Exchange client
    # needs it; TLS 1.3 has none.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    # No stateless session tickets. Their key (STEK) is made by OpenSSL per context and Python offers no
    # way to rotate it: it would live, unrotated, as long as the context (until the next reload), and
    # whoever reads it decrypts every recorded session resumed with it, which defeats forward secrecy
    # (RFC 8446 §8, RFC 5077 §5.5). Each worker process has its own key besides, so a ticket is of no
    # use on the next connection when another worker accepts it. Resumption stays, stateful: TLS 1.2
    # by session ID and TLS 1.3 by tickets that only name a session in this process's cache
    # (OpenSSL's behaviour with SSL_OP_NO_TICKET), so nothing that outlives a session decrypts one.
    context.options |= ssl.OP_NO_TICKET
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
