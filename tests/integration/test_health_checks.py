"""The health probe against a simulated Exchange server and hostile peers, result codes and reasons."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from casarray.health.checker import HttpsProbe, probe_https
from casarray.health.state import CheckResult
from casarray.lab.pki import CertFiles, make_other_pki
from casarray.lab.sim import SimCas
from tests.support import NAMESPACE, free_port


def context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


def probe(
    port: int,
    ca: Path,
    path: str = "/owa/healthcheck.htm",
    timeout: float = 1.0,
    address: str = "127.0.0.2",
    name: str = NAMESPACE,
) -> HttpsProbe:
    return HttpsProbe(address, port, path, name, context(ca), timeout)


def with_sim(pki: CertFiles, body: Callable[[SimCas], Awaitable[None]]) -> None:
    async def main() -> None:
        sim = SimCas("MB1", certificate=pki.certificate, key=pki.key, host="127.0.0.2")
        await sim.start()
        try:
            await body(sim)
        finally:
            await sim.stop()

    asyncio.run(main())


def test_healthy_service_is_l7ok(pki: CertFiles) -> None:
    async def body(sim: SimCas) -> None:
        result = await probe_https(probe(sim.port, pki.ca))
        assert result.ok
        assert result.code == "L7OK"
        assert result.reason.upper() == "200 OK MB1.ALWAYSHOTCAFE.COM"
        requests = sim.state.select()
        assert requests[-1].method == "GET"
        assert ("Host", NAMESPACE) in [(k, v) for k, v in requests[-1].headers]

    with_sim(pki, body)


def test_service_down_is_l7sts_http_503(pki: CertFiles) -> None:
    async def body(sim: SimCas) -> None:
        sim.state.set_service("ews", False)
        bad = await probe_https(probe(sim.port, pki.ca, "/EWS/healthcheck.htm"))
        good = await probe_https(probe(sim.port, pki.ca, "/owa/healthcheck.htm"))
        assert (bad.ok, bad.code, bad.reason) == (False, "L7STS", "HTTP 503")
        assert good.ok

    with_sim(pki, body)


def test_slow_server_is_l7tout(pki: CertFiles) -> None:
    async def body(sim: SimCas) -> None:
        sim.state.latency = 0.5
        result = await probe_https(probe(sim.port, pki.ca, timeout=0.2))
        assert (result.ok, result.code) == (False, "L7TOUT")
        assert result.duration < 0.5

    with_sim(pki, body)


def test_wrong_certificate_is_l6rsp(pki: CertFiles, tmp_path: Path) -> None:
    other = make_other_pki(tmp_path)

    async def body(sim: SimCas) -> None:
        result = await probe_https(probe(sim.port, other.ca))
        assert (result.ok, result.code) == (False, "L6RSP")
        assert "certificate" in result.reason
        wrong_name = await probe_https(probe(sim.port, pki.ca, name="wrong.example.net"))
        assert (wrong_name.ok, wrong_name.code) == (False, "L6RSP")

    with_sim(pki, body)


def test_refused_is_l4con(pki: CertFiles) -> None:
    result: CheckResult = asyncio.run(probe_https(probe(free_port("127.0.0.2"), pki.ca)))
    assert (result.ok, result.code, result.reason) == (False, "L4CON", "connect refused")


def test_silent_tls_peer_is_l6tout(pki: CertFiles) -> None:
    """A peer that accepts TCP but never answers the TLS handshake."""
    with socket.create_server(("127.0.0.2", 0)) as silent:
        result = asyncio.run(probe_https(probe(silent.getsockname()[1], pki.ca, timeout=0.3)))
    assert (result.ok, result.code) == (False, "L6TOUT")


def test_wrong_body_is_l7rsp_and_garbage_is_l7rsp(pki: CertFiles) -> None:
    async def main(reply: bytes) -> CheckResult:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.certificate, pki.key)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.2", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe_https(probe(port, pki.ca))
        finally:
            server.close()
            await server.wait_closed()

    iis = asyncio.run(main(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nIIS Windows  "))
    assert (iis.ok, iis.code) == (False, "L7RSP")
    garbage = asyncio.run(main(b"\x00\x01garbage\r\n\r\n"))
    assert (garbage.ok, garbage.code) == (False, "L7RSP")


@asynccontextmanager
async def serve_parts(pki: CertFiles, parts: Sequence[bytes], pause: float = 0.05) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.2 that answers a request with `parts`, each in its own write after a short
    pause (so a client reads them separately), then closes. Yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.certificate, pki.key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


INTERIM_THEN_CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-FEServer: MB1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n200 OK\r\n",
    b"5\r\n<br/>\r\n3\r\nMB1\r\n0\r\n\r\n",
)


def test_interim_response_is_skipped_and_a_chunked_body_decoded(pki: CertFiles) -> None:
    """The check reads with the proxy's framer: a 1xx read on its own is not the answer (RFC 9110
    §15.2), and the chunked body's data is judged, not its framing."""

    async def main() -> CheckResult:
        async with serve_parts(pki, INTERIM_THEN_CHUNKED) as port:
            return await probe_https(probe(port, pki.ca))

    result = asyncio.run(main())
    assert (result.ok, result.code, result.reason) == (True, "L7OK", "200 OK MB1")


def test_body_cut_short_is_judged_on_what_arrived(pki: CertFiles) -> None:
    async def main() -> CheckResult:
        parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n200 OK<br/>MB1"]
        async with serve_parts(pki, parts) as port:
            return await probe_https(probe(port, pki.ca))

    result = asyncio.run(main())
    assert (result.ok, result.code, result.reason) == (True, "L7OK", "200 OK MB1")
