"""What the l7 listener's TLS offers, proven with `openssl s_client` against a real `casarray run`:
only the X25519, P-256 and P-384 key exchanges; no stateless session tickets (resumption stays, from
the process's own session cache); the optional HSTS header on the balancer's own https redirects."""

from __future__ import annotations

import http.client
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import L7Lab, get
from tests.support import NAMESPACE, free_port

REQUEST = f"GET / HTTP/1.1\r\nHost: {NAMESPACE}\r\nConnection: close\r\n\r\n".encode()


def s_client(port: int, ca: Path, *args: str) -> str:
    """One `openssl s_client` session that sends a request and reads until the balancer closes."""
    done = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            NAMESPACE,
            "-CAfile",
            str(ca),
            "-ign_eof",
            *args,
        ],
        input=REQUEST,
        capture_output=True,
        timeout=20,
        check=False,
    )
    return (done.stdout + done.stderr).decode(errors="replace")


def test_only_x25519_p256_and_p384_are_accepted(l7: L7Lab) -> None:
    l7.start_sims(1)
    _, port = l7.balancer()
    expected = {"X25519": "X25519", "P-256": "prime256v1", "P-384": "secp384r1"}
    for group, shown in expected.items():
        out = s_client(port, l7.pki.ca, "-tls1_3", "-groups", group)
        assert "HTTP/1.1 302 Found" in out, (group, out)
        assert re.search(rf"Server Temp Key: .*{shown}", out), (group, out)
    # What OpenSSL would accept by default: the finite-field groups (ffdhe8192 costs the server ~200
    # X25519 exchanges), X448 and P-521.
    for group in ("ffdhe2048", "ffdhe8192", "X448", "P-521"):
        out = s_client(port, l7.pki.ca, "-tls1_3", "-groups", group)
        assert "HTTP/1.1" not in out, (group, out)
        assert "handshake failure" in out, (group, out)


def ticket_bytes(session: Path) -> int:
    """Length of the session ticket a saved session holds (0: none)."""
    text = subprocess.run(
        ["openssl", "sess_id", "-in", str(session), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    _, found, rest = text.partition("TLS session ticket:\n")
    if not found:
        return 0
    dump = re.findall(r"^\s+[0-9a-f]{4} - (.{47})", rest, re.MULTILINE)
    return sum(len(line.replace("-", " ").split()) for line in dump)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_no_stateless_session_tickets_yet_sessions_resume(l7: L7Lab, tmp_path: Path, version: str) -> None:
    # A stateless ticket is the session encrypted under a key nobody rotates (Python offers no API
    # for it): whoever reads that key decrypts every session resumed with it. TLS 1.2 gets no ticket
    # (resumption by session ID); TLS 1.3 gets a ticket that only names a session in the cache (32
    # bytes) instead of carrying it (~200 bytes, encrypted).
    l7.start_sims(1)
    _, port = l7.balancer()
    session = tmp_path / "session.pem"
    first = s_client(port, l7.pki.ca, version, "-sess_out", str(session))
    assert "HTTP/1.1 302 Found" in first, first
    assert "New, TLSv1." in first, first
    size = ticket_bytes(session)
    assert size == (32 if version == "-tls1_3" else 0), size
    again = s_client(port, l7.pki.ca, version, "-sess_in", str(session))
    assert "Reused, TLSv1." in again, again
    assert "HTTP/1.1 302 Found" in again


def test_hsts_on_the_https_redirects_only_when_configured(l7: L7Lab) -> None:
    l7.start_sims(1)
    tls = f"{{certificate: {l7.pki.certificate}, key: {l7.pki.key}, hsts: 365d}}"
    http_port = free_port()
    _, port = l7.balancer(tls=tls, http_port=http_port)
    for path in ("/", "/owa", "/OWA?x=1"):
        redirect = get(l7, port, path)
        assert redirect.status == 302
        assert redirect.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in get(l7, port, "/owa/").headers  # proxied: the server's own
    # Never over plain http (RFC 6797 §7.2).
    plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    plain.request("GET", "/", headers={"Host": NAMESPACE})
    answer = plain.getresponse()
    assert answer.status == 301
    assert answer.getheader("Strict-Transport-Security") is None
    plain.close()
    # Off by default.
    _, default_port = l7.balancer()
    assert "Strict-Transport-Security" not in get(l7, default_port, "/").headers
