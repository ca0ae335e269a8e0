"""The CPU cost of casarray's own code for one proxied Layer-7 request, measured in-process: no sockets, no TLS, no load
generator, so the number moves only when casarray's own per-request code does.

    .venv/bin/python bench/hotpath.py [--requests N]                    # the build installed (compiled)
    CASARRAY_PURE=1 .venv/bin/python bench/hotpath.py [--requests N]    # the same modules as Python

A real L7Client and L7Upstream (the classes the balancer runs) are driven with fake transports: each
round feeds a keep-alive `GET /owa/small.txt` to the client side and nginx's answer (a 100-byte body)
to the upstream side, and checks that the client got the response. Prints the best of nine rounds in
microseconds of CPU per request, which build ran (compiled by mypyc, or pure Python) and on which event
loop: uvloop when it is installed, as `casarray run` chooses (the shells read the loop's clock for each
event). On a machine shared with other work, the wrk-driven `bench/run.py` numbers move by ±30 %
between runs; this one moves by a few percent, so it is the figure to watch while working on the
request path (parsing, routing, forwarding heads).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from casarray import compiled
from casarray.balance.state import Member, ServerState
from casarray.cli.core import use_uvloop
from casarray.config.load import parse_config
from casarray.engine.l7 import L7Client, L7Frontend, L7Upstream
from casarray.health.state import HealthState
from casarray.lab.pki import make_lab_pki

REQUEST = b"GET /owa/small.txt HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nLast-Modified: Sat, 28 Nov 2026 07:00:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6763-64"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 100
)
ROUNDS = 9


class FakeTransport(asyncio.Transport):
    """Counts what is written; the rest of the transport interface does nothing."""

    def __init__(self) -> None:
        super().__init__({"peername": ("127.0.0.1", 40000)})
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def measure(requests: int) -> float:
    files = make_lab_pki(Path(tempfile.mkdtemp(prefix="casarray-hotpath-")))
    config = parse_config(
        textwrap.dedent(
            f"""\
            namespace: outlook.alwayshotcafe.com
            mode: l7
            tls: {{certificate: {files.certificate}, key: {files.key}}}
            servers: [{{name: N1, address: 127.0.0.1, port: 8443}}]
            health: {{enabled: false}}
            """
        )
    )
    server = ServerState(config.servers[0], "127.0.0.1", 8443)
    for name in config.services:
        member = Member(server, name, HealthState(1, 1))
        member.health.force_up(0.0)
        server.members[name] = member
    frontend = L7Frontend(config, [server], None)  # type: ignore[arg-type]  # no upstream TLS here
    client = L7Client(frontend)
    to_client = FakeTransport()
    client.connection_made(to_client)
    upstream = L7Upstream(client, server)
    upstream.connection_made(FakeTransport())
    client.upstream = upstream.side
    for _ in range(1000):  # warm up; and prove that each round is a whole exchange
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    if client.head is not None or to_client.written < 1000 * len(RESPONSE) // 2:
        raise SystemExit("the exchange did not complete: the hot path changed, update bench/hotpath.py")
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(requests):
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
        best = min(best, time.process_time() - started)
    return best / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/hotpath.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000, help="requests per round (9 rounds)")
    args = parser.parse_args()
    loop_name = use_uvloop()  # the loop `casarray run` runs on
    micros = asyncio.run(measure(args.requests))
    print(
        f"{micros:.2f} µs of CPU per request in casarray's request path "
        f"({compiled.current().describe()}; {loop_name}; best of {ROUNDS} × {args.requests:,})"
    )


if __name__ == "__main__":
    main()
