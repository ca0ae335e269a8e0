"""The TLS contexts the l7 listener and its upstream connections use."""

import ssl
import textwrap
from pathlib import Path

from casarray.config.load import parse_config
from casarray.engine.tls import restrict_groups, server_context, upstream_context
from casarray.lab.pki import make_lab_pki


def test_listener_context_is_modern_and_refuses_renegotiation(tmp_path: Path) -> None:
    files = make_lab_pki(tmp_path)
    config = parse_config(
        textwrap.dedent(
            f"""\
            namespace: outlook.alwayshotcafe.com
            mode: l7
            tls: {{certificate: {files.certificate}, key: {files.key}}}
            upstream_tls: {{ca: {files.ca}}}
            servers: [{{name: MB1, address: 127.0.0.2}}]
            """
        )
    )
    listener = server_context(config)
    assert listener.minimum_version is ssl.TLSVersion.TLSv1_2
    assert listener.options & ssl.OP_NO_RENEGOTIATION
    assert listener.options & ssl.OP_NO_COMPRESSION
    tls12 = [c["name"] for c in listener.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in tls12)
    # No stateless session tickets (their key would never rotate); the key-exchange groups are
    # limited through OpenSSL's configuration (tests/reliability/test_tls_edges.py proves both on the
    # wire with openssl s_client).
    assert listener.options & ssl.OP_NO_TICKET
    assert restrict_groups()
    upstream = upstream_context(config)
    assert upstream.verify_mode is ssl.CERT_REQUIRED
    assert upstream.check_hostname
