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
